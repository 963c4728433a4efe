"""SMTP AUTH users from a file of bcrypt hashes (``--auth-file``).

One ``user:hash`` per line, as htpasswd writes them with ``-B`` (``$2b$`` /
``$2y$`` bcrypt hashes); blank lines and ``#`` comments are ignored.  A
plain-text password is refused: the file is meant to be readable by the
service without giving the passwords away.  Make a line with::

    egress ctl hash-password USER   (prompts, prints USER:HASH)

bcrypt is slow on purpose (about 0.2 s at cost 12), and the listener checks
on its event loop, so a successful check is remembered (as a keyed hash of
the password, never the password) for the process's life: a client that
authenticates on every connection pays it once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

__all__ = ["AuthFile", "hash_password"]


def hash_password(password: str, rounds: int = 12) -> str:
    """A bcrypt hash of `password` for an auth file line."""
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


class AuthFile:
    """``AuthFile(path)``: users and hashes; ``check(user, password) -> bool``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.users: dict[str, bytes] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--auth-file {str(self.path)!r}: {exc.strerror}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"--auth-file {str(self.path)!r} line {n}: expected "
                                 "USER:BCRYPT_HASH (a $2b$ hash, e.g. from `egress ctl "
                                 "hash-password USER`)")
            self.users[user] = hashed.replace("$2y$", "$2b$", 1).encode()
        if not self.users:
            raise ValueError(f"--auth-file {str(self.path)!r} names no user")
        self._key = os.urandom(16)
        self._good: set[bytes] = set()

    def check(self, user: str, password: bytes) -> bool:
        """Whether `password` is `user`'s (constant time for the remembered ones)."""
        import bcrypt

        hashed = self.users.get(user)
        if hashed is None:
            return False
        token = hmac.new(self._key, user.encode() + b"\0" + password, hashlib.sha256).digest()
        if token in self._good:
            return True
        try:
            ok = bcrypt.checkpw(password, hashed)
        except ValueError:
            return False
        if ok:
            self._good.add(token)
        return ok

    def __len__(self) -> int:
        return len(self.users)
