"""Keysources: where a secret (an SMTP AUTH password) comes from.

KumoMTA's keysource is "inline data, a file, or HashiCorp Vault"; we add
``{env = NAME}``.  Accepted spellings:

- ``{"key_data": "tiger"}``: the secret inline;
- ``"/etc/egress/password"``: a file path (one trailing newline is stripped,
  since editors add one and no SMTP password ends in one);
- ``{"env": "SMTP_PASSWORD"}``: an environment variable;
- ``{"vault_mount": "secret", "vault_path": "smtp-auth/example.com",
  "vault_key": "key", "vault_address": ..., "vault_token": ...}``: a KV v2
  secret read with hvac (optional dependency, imported only when resolved;
  address and token default to ``$VAULT_ADDR`` and ``$VAULT_TOKEN``).

The secret is resolved lazily by `KeySource.resolve`, at the moment a session
needs it, and never cached on the object.  repr/str show only the kind and
its non-secret locator (``KeySource(key_data=***)``, ``KeySource(env='NAME')``),
and no error message ever contains the secret or a Vault token.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from engine.errors import ConfigError

__all__ = ["KeySource"]

_MASK = "***"
_FORMS = (
    "expected a file path string, {'key_data': ...}, {'env': 'NAME'} or "
    "{'vault_mount': ..., 'vault_path': ...[, 'vault_key', 'vault_address', 'vault_token']}"
)
_VAULT_KEYS = ("vault_mount", "vault_path", "vault_key", "vault_address", "vault_token")


class KeySource:
    """A lazily resolved secret.  Build with `KeySource.coerce` (or the
    classmethods), read with `resolve`."""

    __slots__ = ("_kind", "_params")

    def __init__(self, kind: str, params: Mapping[str, str]) -> None:
        if kind not in ("key_data", "file", "env", "vault"):
            raise ConfigError(f"KeySource kind {kind!r} is not one of key_data, file, env, vault")
        self._kind = kind
        self._params = dict(params)

    # -- construction -----------------------------------------------------

    @classmethod
    def inline(cls, secret: str) -> KeySource:
        """The secret itself (KumoMTA's ``key_data``)."""
        return cls("key_data", {"key_data": secret})

    @classmethod
    def coerce(cls, value: object, *, key: str = "keysource") -> KeySource:
        """A `KeySource` from any accepted spelling; a `ConfigError` naming `key`
        otherwise.  The error never repeats a value that may be secret."""
        if isinstance(value, KeySource):
            return value
        if isinstance(value, str):
            if not value.strip():
                raise ConfigError(f"{key}: an empty string is not a file path; {_FORMS}")
            return cls("file", {"path": value})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: a {type(value).__name__} is not a keysource; {_FORMS}")
        names = set(value)
        if names == {"key_data"}:
            secret = value["key_data"]
            if isinstance(secret, bytes):
                secret = secret.decode("utf-8", "strict")
            if not isinstance(secret, str):
                raise ConfigError(
                    f"{key}: key_data must be a string, not a {type(secret).__name__}"
                )
            return cls("key_data", {"key_data": secret})
        if names == {"env"}:
            env = value["env"]
            if not isinstance(env, str) or not env:
                raise ConfigError(f"{key}: env must be a variable name, not {env!r}")
            return cls("env", {"env": env})
        if {"vault_mount", "vault_path"} <= names and names <= set(_VAULT_KEYS):
            params: dict[str, str] = {}
            for name in _VAULT_KEYS:
                if name not in value:
                    continue
                item = value[name]
                if not isinstance(item, str) or not item:
                    shown = _MASK if name == "vault_token" else repr(item)
                    raise ConfigError(f"{key}: {name} must be a non-empty string, not {shown}")
                params[name] = item
            return cls("vault", params)
        raise ConfigError(
            f"{key}: a mapping with keys {sorted(names)} is not a keysource; {_FORMS}"
        )

    # -- use --------------------------------------------------------------

    @property
    def kind(self) -> str:
        """One of ``"key_data"``, ``"file"``, ``"env"``, ``"vault"``."""
        return self._kind

    def resolve(self) -> str:
        """Fetch the secret now.  A `ConfigError` (naming the file, variable or
        Vault path, never the secret) when it cannot be had."""
        kind, p = self._kind, self._params
        if kind == "key_data":
            return p["key_data"]
        if kind == "file":
            try:
                with open(p["path"], encoding="utf-8") as fh:
                    data = fh.read()
            except OSError as exc:
                raise ConfigError(
                    f"keysource file {p['path']!r} cannot be read: {exc.strerror or exc}"
                ) from None
            if data.endswith("\r\n"):
                return data[:-2]
            return data[:-1] if data.endswith("\n") else data
        if kind == "env":
            secret = os.environ.get(p["env"])
            if secret is None:
                raise ConfigError(f"keysource env: environment variable {p['env']!r} is not set")
            return secret
        return self._resolve_vault()

    def _resolve_vault(self) -> str:
        p = self._params
        where = f"vault mount {p['vault_mount']!r} path {p['vault_path']!r}"
        try:
            hvac: Any = importlib.import_module("hvac")
        except ImportError:
            raise ConfigError(
                f"keysource {where} needs the hvac package, which is not installed; "
                "install it with: pip install 'egress[vault]'"
            ) from None
        address = p.get("vault_address") or os.environ.get("VAULT_ADDR")
        token = p.get("vault_token") or os.environ.get("VAULT_TOKEN")
        if not address:
            raise ConfigError(f"keysource {where}: no vault_address and $VAULT_ADDR is not set")
        if not token:
            raise ConfigError(f"keysource {where}: no vault_token and $VAULT_TOKEN is not set")
        field = p.get("vault_key", "key")
        try:
            client = hvac.Client(url=address, token=token)
            answer = client.secrets.kv.v2.read_secret_version(
                path=p["vault_path"], mount_point=p["vault_mount"], raise_on_deleted_version=True
            )
        except Exception as exc:  # hvac raises many types; report the kind, not the token
            raise ConfigError(
                f"keysource {where} at {address}: {type(exc).__name__}: {_scrub(exc, token)}"
            ) from None
        data = (answer or {}).get("data", {}).get("data", {})
        if field not in data:
            raise ConfigError(f"keysource {where}: the secret has no key {field!r}")
        secret = data[field]
        if not isinstance(secret, str):
            raise ConfigError(f"keysource {where}: key {field!r} is not a string")
        return secret

    # -- display and comparison (never the secret) ------------------------

    def describe(self) -> str:
        """A display form with secrets masked, e.g. ``key_data=***``."""
        parts = []
        for name, item in self._params.items():
            shown = _MASK if name in ("key_data", "vault_token") else repr(item)
            parts.append(f"{'file' if name == 'path' else name}={shown}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"KeySource({self.describe()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeySource):
            return NotImplemented
        return self._kind == other._kind and self._params == other._params

    def __hash__(self) -> int:
        return hash((self._kind, tuple(sorted(self._params.items()))))

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeySource, (self._kind, self._params))


def _scrub(exc: BaseException, token: str) -> str:
    text = str(exc)
    return text.replace(token, _MASK) if token else text
