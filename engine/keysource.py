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

A `KeySource` is a pure value: where the secret is, never the secret read
from a file, the environment or Vault.  Reading it is I/O, so the drivers do
it (`engine.live.keysource_resolve.resolve_keysource`, when a session's AUTH
goes on the wire), lazily and without caching, as KumoMTA does.  repr/str
show only the kind and its non-secret locator (``KeySource(key_data=***)``,
``KeySource(env='NAME')``), and no error message ever contains the secret or
a Vault token.

An inline secret (``key_data``, a ``vault_token``) is still a value in the
engine's state, so an engine snapshot keeps the KeySource `sealed`: its
description with the secret withheld.  `engine.snapshot.load` gives the
secret back from the policy (`unseal`), which holds it in the first place.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from engine.errors import ConfigError

__all__ = ["KeySource"]

_MASK = "***"
_FORMS = (
    "expected a file path string, {'key_data': ...}, {'env': 'NAME'} or "
    "{'vault_mount': ..., 'vault_path': ...[, 'vault_key', 'vault_address', 'vault_token']}"
)
_VAULT_KEYS = ("vault_mount", "vault_path", "vault_key", "vault_address", "vault_token")
_SECRETS = ("key_data", "vault_token")  # the params that are themselves secrets
_WITHHELD = "withheld"  # the param naming the secrets a sealed KeySource left out


class KeySource:
    """Where a secret is.  Build with `KeySource.coerce` (or the classmethods);
    a driver reads it with `engine.live.keysource_resolve.resolve_keysource`."""

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

    @property
    def has_secret(self) -> bool:
        """True when the secret itself is a param (``key_data``, ``vault_token``)."""
        return any(name in self._params for name in _SECRETS)

    @property
    def withheld(self) -> bool:
        """True for a `sealed` copy: its inline secret was left out."""
        return _WITHHELD in self._params

    def sealed(self) -> KeySource:
        """This KeySource with its inline secret left out (what a snapshot keeps)."""
        if not self.has_secret:
            return self
        params = {k: v for k, v in self._params.items() if k not in _SECRETS}
        params[_WITHHELD] = ",".join(k for k in _SECRETS if k in self._params)
        return KeySource(self._kind, params)

    def unseal(self, source: KeySource) -> bool:
        """Take the secret back from `source` when it is the one this sealed copy
        was made from (same kind and locator); True if it was."""
        if not self.withheld or source.withheld or source.sealed() != self:
            return False
        self._params = dict(source._params)
        return True

    def resolve(self) -> str:
        """The inline secret of a ``key_data`` keysource (no I/O).  The other
        kinds are read by a driver (`engine.live.keysource_resolve`); asking the
        core for them is a `ConfigError` saying so."""
        if self.withheld:
            raise ConfigError(f"KeySource({self.describe()}): its inline secret was not kept "
                              "in the snapshot and the policy did not give it back")
        if self._kind == "key_data":
            return self._params["key_data"]
        raise ConfigError(
            f"KeySource({self.describe()}) is read by the driver "
            "(engine.live.keysource_resolve.resolve_keysource), not by the core"
        )

    @property
    def params(self) -> Mapping[str, str]:
        """The locator (and for ``key_data`` the secret itself), read-only: what
        a driver's resolver needs."""
        return MappingProxyType(self._params)

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

