"""`--auth-file`: bcrypt hashes per user, checked by the listener (engine.live.authfile)."""

from __future__ import annotations

import pathlib

import pytest

from engine.live.authfile import AuthFile, hash_password


def test_hashes_check_and_a_wrong_password_fails(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "users"
    f.write_text(f"# users\n\nalice:{hash_password('wonder', rounds=4)}\n"
                 f"bob:{hash_password('builder', rounds=4).replace('$2b$', '$2y$', 1)}\n")
    users = AuthFile(f)
    assert len(users) == 2
    assert users.check("alice", b"wonder") and users.check("alice", b"wonder")  # remembered
    assert users.check("bob", b"builder")
    assert not users.check("alice", b"builder") and not users.check("carol", b"x")


@pytest.mark.parametrize(("text", "match"), [
    ("alice:tiger\n", "line 1: expected USER:BCRYPT_HASH"),
    ("# nobody\n", "names no user"),
])
def test_bad_files_are_refused_naming_the_line(tmp_path: pathlib.Path, text: str,
                                               match: str) -> None:
    f = tmp_path / "users"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        AuthFile(f)


def test_a_missing_file_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"auth-file .*nope"):
        AuthFile(tmp_path / "nope")
