"""Reading a keysource's secret: a file, the environment or Vault (driver side).

The core only carries `KeySource` values (where the secret is); reading one is
I/O, so it happens here, in the live driver, at the moment a session's AUTH
goes on the wire, and is never cached: a rotated password or Vault secret is
picked up on the next connection, as KumoMTA's keysources are.

- ``key_data``: the secret inline;
- a file path: its text, one trailing newline stripped (editors add one and
  no SMTP password ends in one);
- ``env``: an environment variable;
- Vault: a KV v2 secret read with hvac (optional dependency, imported only
  here; address and token default to ``$VAULT_ADDR`` and ``$VAULT_TOKEN``).

Every failure is a `ConfigError` naming the file, variable or Vault path,
never the secret or a Vault token.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from engine.errors import ConfigError
from engine.keysource import KeySource

__all__ = ["resolve_keysource"]

_MASK = "***"


def resolve_keysource(source: KeySource) -> str:
    """Fetch the secret `source` points at, now."""
    kind, p = source.kind, source.params
    if kind == "key_data" or source.withheld:
        return source.resolve()  # the inline secret, or a ConfigError naming what is missing
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
    return _resolve_vault(p)


def _resolve_vault(p: Mapping[str, str]) -> str:
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


def _scrub(exc: BaseException, token: str) -> str:
    text = str(exc)
    return text.replace(token, _MASK) if token else text
