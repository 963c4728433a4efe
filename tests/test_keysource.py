"""KeySource: every spelling, lazy resolution by the driver's resolver
(engine.live.keysource_resolve), Vault through hvac against a real HTTP server
on loopback, and the secret never shown."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.errors import ConfigError
from engine.keysource import KeySource
from engine.live.keysource_resolve import resolve_keysource

SECRET = "tiger-s3cret-\u00e9"
TOKEN = "hvs.token-never-shown"


def test_key_data_resolves_and_is_masked() -> None:
    ks = KeySource.coerce({"key_data": SECRET}, key="smtp_auth_plain_password")
    assert ks.kind == "key_data"
    assert resolve_keysource(ks) == SECRET
    assert repr(ks) == "KeySource(key_data=***)"
    assert str(ks) == "KeySource(key_data=***)"
    assert f"{ks}" == "KeySource(key_data=***)"
    assert ks == KeySource.inline(SECRET)
    assert hash(ks) == hash(KeySource.inline(SECRET))
    assert KeySource.coerce(ks) is ks
    assert resolve_keysource(KeySource.coerce({"key_data": SECRET.encode()})) == SECRET
    assert ks.resolve() == SECRET  # inline: the core may read it, no I/O involved


def test_the_core_does_not_read_files_or_the_environment(tmp_path) -> None:
    path = tmp_path / "password"
    path.write_text(SECRET, encoding="utf-8")
    for ks in (KeySource.coerce(str(path)), KeySource.coerce({"env": "HOME"})):
        with pytest.raises(ConfigError, match=r"is read by the driver") as err:
            ks.resolve()
        assert SECRET not in str(err.value)
    assert resolve_keysource(KeySource.coerce(str(path))) == SECRET


def test_file_resolves_lazily_and_strips_one_newline(tmp_path) -> None:
    path = tmp_path / "password"
    ks = KeySource.coerce(str(path))  # the file need not exist yet: resolution is lazy
    assert repr(ks) == f"KeySource(file={str(path)!r})"
    path.write_text(SECRET + "\n", encoding="utf-8")
    assert resolve_keysource(ks) == SECRET
    path.write_text(SECRET + "\r\n", encoding="utf-8")
    assert resolve_keysource(ks) == SECRET
    path.write_text(SECRET, encoding="utf-8")
    assert resolve_keysource(ks) == SECRET


def test_missing_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(ConfigError, match=r"keysource file '.*absent' cannot be read"):
        resolve_keysource(KeySource.coerce(str(path)))


def test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    ks = KeySource.coerce({"env": "EGRESS_TEST_PASSWORD"})
    assert repr(ks) == "KeySource(env='EGRESS_TEST_PASSWORD')"
    monkeypatch.delenv("EGRESS_TEST_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="environment variable 'EGRESS_TEST_PASSWORD' is not set"):
        resolve_keysource(ks)
    monkeypatch.setenv("EGRESS_TEST_PASSWORD", SECRET)
    assert resolve_keysource(ks) == SECRET


@pytest.mark.parametrize(
    ("value", "msg"),
    [
        ({"key_dta": SECRET}, r"a mapping with keys \['key_dta'\] is not a keysource"),
        ({"key_data": 12345}, "key_data must be a string, not a int"),
        ({"key_data": SECRET, "env": "X"}, "is not a keysource"),
        ({"env": ""}, "env must be a variable name"),
        ({"vault_mount": "secret"}, "is not a keysource"),
        ({"vault_mount": "secret", "vault_path": "p", "vault_token": 7}, "vault_token must be"),
        ("", "an empty string is not a file path"),
        (42, "a int is not a keysource"),
    ],
)
def test_bad_spellings(value: object, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg) as err:
        KeySource.coerce(value, key="smtp_auth_plain_password")
    text = str(err.value)
    assert text.startswith("smtp_auth_plain_password: ")
    assert SECRET not in text and "12345" not in text
    assert "{'env': 'NAME'}" in text or "must be" in text


def test_vault_repr_masks_token() -> None:
    ks = KeySource.coerce({"vault_mount": "secret", "vault_path": "smtp/x", "vault_token": TOKEN})
    assert repr(ks) == "KeySource(vault_mount='secret', vault_path='smtp/x', vault_token=***)"
    assert TOKEN not in str(ks)


def test_vault_without_hvac(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)  # makes `import hvac` fail
    ks = KeySource.coerce({"vault_mount": "secret", "vault_path": "p", "vault_token": TOKEN,
                           "vault_address": "http://127.0.0.1:1"})
    with pytest.raises(ConfigError, match=r"needs the hvac package.*pip install 'egress\[vault\]'"):
        resolve_keysource(ks)


_SECRETS = {"/v1/secret/data/smtp-auth/example.com": {"key": SECRET, "other": "x"}}


class _Vault(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("X-Vault-Token") != TOKEN:
            self._reply(403, {"errors": ["permission denied"]})
        elif self.path in _SECRETS:
            self._reply(200, {"data": {"data": _SECRETS[self.path],
                                       "metadata": {"deletion_time": "", "version": 1}}})
        else:
            self._reply(404, {"errors": []})

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def vault() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Vault)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_vault_resolves_through_hvac(vault: str) -> None:
    spec = {"vault_mount": "secret", "vault_path": "smtp-auth/example.com",
            "vault_address": vault, "vault_token": TOKEN}
    assert resolve_keysource(KeySource.coerce(spec)) == SECRET
    assert resolve_keysource(KeySource.coerce({**spec, "vault_key": "other"})) == "x"


def test_vault_env_defaults(vault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", vault)
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    ks = KeySource.coerce({"vault_mount": "secret", "vault_path": "smtp-auth/example.com"})
    assert resolve_keysource(ks) == SECRET


def test_vault_errors_never_show_token_or_secret(vault: str) -> None:
    base = {"vault_mount": "secret", "vault_address": vault, "vault_token": TOKEN}
    with pytest.raises(ConfigError) as missing:
        resolve_keysource(KeySource.coerce({**base, "vault_path": "smtp-auth/nowhere"}))
    assert "path 'smtp-auth/nowhere'" in str(missing.value)
    assert "InvalidPath" in str(missing.value)
    with pytest.raises(ConfigError, match="the secret has no key 'nokey'") as nokey:
        resolve_keysource(KeySource.coerce({**base, "vault_path": "smtp-auth/example.com",
                                            "vault_key": "nokey"}))
    with pytest.raises(ConfigError, match="Forbidden") as forbidden:
        resolve_keysource(KeySource.coerce({**base, "vault_path": "smtp-auth/example.com",
                                            "vault_token": "wrong-" + TOKEN}))
    for err in (missing, nokey, forbidden):
        assert TOKEN not in str(err.value)
        assert SECRET not in str(err.value)


def test_vault_without_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    ks = KeySource.coerce({"vault_mount": "secret", "vault_path": "p", "vault_token": TOKEN})
    with pytest.raises(ConfigError, match=r"no vault_address and \$VAULT_ADDR is not set"):
        resolve_keysource(ks)
