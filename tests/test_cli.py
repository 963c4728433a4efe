"""`egress check`, run as a real subprocess and in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "policy.py"
SECRET = "tiger-pw-5e3c7"


def egress(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def _policy(tmp_path: Path, body: str) -> str:
    path = tmp_path / "policy.py"
    path.write_text("from engine import *\npolicy = Policy()\n" + textwrap.dedent(body))
    return str(path)


def test_check_example_policy_table() -> None:
    run = egress("check", str(EXAMPLE), "--domain", "gmail.com", "--domain", "example.com")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert run.stderr == ""
    assert "does not resolve MX records" in out
    assert "domain gmail.com" in out and "domain example.com" in out
    assert "egress pool 'bulk': ip-1 (weight 3), ip-2 (weight 1)" in out
    assert "egress path {ip-1, ip-2}->gmail.com" in out
    gmail, example = out.split("domain example.com")

    def rows(section: str) -> dict[str, tuple[str, str]]:
        cells = [line.split("│")[1:4] for line in section.splitlines() if line.count("│") == 4]
        return {k.strip(): (v.strip(), m.strip()) for k, v, m in cells}

    assert len(rows(gmail)) == 52
    assert rows(gmail)["connection_limit"] == ("10", "set")
    assert rows(gmail)["max_deliveries_per_connection"] == ("100", "set")
    assert rows(gmail)["connect_timeout"] == ("1m", "default")
    assert rows(example)["connection_limit"] == ("32", "default")
    assert rows(example)["max_message_rate"] == ("100/s", "set")
    assert "5 of 52 keys differ from the defaults" in out
    assert "1 of 52 keys differ from the defaults" in out
    assert "3000/h" in out and "Required" in out and "google" in out


def test_check_example_policy_json() -> None:
    run = egress("check", str(EXAMPLE), "--domain", "gmail.com", "--domain", "partner.example.net",
                 "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    gmail, partner = data["domains"]
    assert gmail["domain"] == "gmail.com"
    assert gmail["queue_config"]["egress_pool"] == "bulk"
    assert [p["source"] for p in gmail["paths"]] == ["ip-1", "ip-2"]
    path = gmail["paths"][0]
    assert path["site_name"] == "gmail.com"
    assert path["egress_source"]["source_address"] == "127.0.0.10"
    assert path["egress_path"]["connection_limit"] == 10
    assert path["egress_path"]["max_message_rate"] == "3000/h"
    assert path["egress_path"]["connect_timeout"] == 60.0
    assert path["non_default"] == ["connection_limit", "enable_tls",
                                   "max_deliveries_per_connection", "max_message_rate",
                                   "provider_name"]
    pw = partner["paths"][0]["egress_path"]["smtp_auth_plain_password"]
    assert pw == "KeySource(env='EGRESS_RELAY_PASSWORD')"


def test_check_default_domain_and_source_option() -> None:
    run = egress("check", str(EXAMPLE), "--source", "ip-2", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert [d["domain"] for d in data["domains"]] == ["example.com"]
    assert [p["source"] for p in data["domains"][0]["paths"]] == ["ip-2"]


def test_secret_never_printed(tmp_path: Path) -> None:
    policy = _policy(tmp_path, f"""
        @policy.on("get_egress_path_config")
        def path(domain, source_name, site_name):
            return make_egress_path(smtp_auth_plain_username="scott",
                                    smtp_auth_plain_password={{"key_data": {SECRET!r}}})
    """)
    for extra in ((), ("--json",)):
        run = egress("check", policy, *extra)
        assert run.returncode == 0, run.stderr
        assert SECRET not in run.stdout + run.stderr
        assert "KeySource(key_data=***)" in run.stdout


def test_broken_policy_exits_1_naming_the_key(tmp_path: Path) -> None:
    policy = _policy(tmp_path, """
        @policy.on("get_egress_path_config")
        def path(domain, source_name, site_name):
            return make_egress_path(conection_limit=3)
    """)
    run = egress("check", policy, "--domain", "example.com")
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.startswith("egress check: error: hook 'get_egress_path_config'")
    assert "unknown key 'conection_limit'; did you mean 'connection_limit'?" in run.stderr
    assert "Traceback" not in run.stderr


def test_bad_value_and_bad_cipher_list(tmp_path: Path) -> None:
    policy = _policy(tmp_path, """
        @policy.on("get_egress_path_config")
        def path(domain, source_name, site_name):
            if domain == "a.com":
                return make_egress_path(max_message_rate="100/fortnight")
            return make_egress_path(openssl_cipher_list="HIGH:NOSUCHCIPHER")
    """)
    run = egress("check", policy, "--domain", "a.com")
    assert run.returncode == 1
    assert "max_message_rate: '100/fortnight' has unknown unit 'fortnight'" in run.stderr
    run = egress("check", policy, "--domain", "b.com")
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "egress check: error: openssl_cipher_list: 'HIGH:NOSUCHCIPHER' is refused by OpenSSL: "
        "entry 'NOSUCHCIPHER' matches no cipher"
    )


def test_missing_policy_file(tmp_path: Path) -> None:
    run = egress("check", str(tmp_path / "absent.py"))
    assert run.returncode == 1
    assert "absent.py' does not exist" in run.stderr
    assert "Traceback" not in run.stderr


def test_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(EXAMPLE), "--domain", "yahoo.com", "--only-set"]) == 0
    out = capsys.readouterr().out
    assert "max_connection_rate" in out and "60/m" in out
    assert "1000/h,max_burst=50" in out
    assert "smtp_port" not in out  # --only-set hides defaults
    assert main([]) == 2
    assert "check" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["check"])
    assert exit_.value.code == 2


def test_every_package_a_subcommand_imports_is_installed() -> None:
    # The console script runs without the checkout on sys.path, so a package the
    # subcommands import lazily but setuptools leaves out fails only when installed
    # (`egress replay` did: bridge/ was missing from the include list).
    import ast
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parent.parent
    tree = ast.parse((root / "engine" / "cli.py").read_text())
    imported = {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module
                and (root / node.module.split(".")[0] / "__init__.py").exists()}
    assert imported == {"engine", "sim", "lab", "bridge"}
    include = tomllib.loads((root / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    missing = {p for p in imported if not any(fnmatch.fnmatch(p, pat) for pat in include)}
    assert missing == set()


def test_check_shows_the_warm_up_plan_and_the_curfews() -> None:
    """docs/SHAPING.md: `egress check --shaping` names the source's warm-up
    schedule and the curfews that cover the domain's queue."""
    warmup = ROOT / "scenarios" / "ip_warmup"
    run = egress("check", str(warmup / "policy.py"), "--domain", "yahoo.com",
                 "--shaping", str(warmup / "shaping.toml"), "--json")
    assert run.returncode == 0, run.stderr
    [path, _warm] = json.loads(run.stdout)["domains"][0]["paths"]
    assert path["shaping"]["warmup"] == [
        "warm-up of ip-new: day 1 = 2026-01-01 (UTC); daily 1=100 2=200 3=400 4=unlimited, "
        "hourly 1=20 2=40 3=80 4=unlimited; own schedules for Yahoo"]
    assert path["shaping"]["curfews"] == ["curfew yahoo-night: held 22:00-06:00 America/New_York"]
    gmail = egress("check", str(warmup / "policy.py"), "--domain", "gmail.com",
                   "--shaping", str(warmup / "shaping.toml"))
    assert "curfew" not in gmail.stdout and "warm-up of ip-new" in gmail.stdout
