"""docs/SCENARIOS.md against the scenario schema, and the schema against the readers.

`sim.scenario_fields` declares every field; this test fails when the page is
not what `python -m sim.scenario_doc` renders from it, when a reader takes a
field the schema does not declare (or the schema declares one no reader
takes), and when a documented example is not a valid value.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sim import scenario_doc
from sim.scenario import Scenario
from sim.scenario_fields import SECTIONS, Field
from sim.scenario_schema import Table

HOST = "mx1.example.com"
DOMAIN = "example.com"
FAULTS = "tempfail_mail|tempfail_rcpt|permfail_rcpt|tempfail_data|permfail_data"


def test_the_page_is_what_the_schema_renders(tmp_path: Path) -> None:
    assert scenario_doc.DOC.read_text(encoding="utf-8") == scenario_doc.render(), (
        "docs/SCENARIOS.md is stale: run python -m sim.scenario_doc")
    page = tmp_path / "SCENARIOS.md"
    assert scenario_doc.main([str(page)]) == 0
    assert scenario_doc.main(["--check", str(page)]) == 0
    page.write_text(page.read_text().replace("`seed`", "`sede`"))
    assert scenario_doc.main(["--check", str(page)]) == 1


def _base() -> dict[str, Any]:
    return {
        "traffic": [{"domain": DOMAIN, "messages": 1}],
        "domains": {DOMAIN: {"mx": [HOST]}},
        "hosts": {HOST: {}},
        "host_defaults": {},
    }


def _value(example: str) -> Any:
    return tomllib.loads(f"v = {example}")["v"]


def _with(section: str, f: Field) -> dict[str, Any]:
    """The base scenario with `f` set to its example in `section`'s table."""
    d = _base()
    v = _value(f.example)
    stream, domain, host = d["traffic"][0], d["domains"][DOMAIN], d["hosts"][HOST]
    if section == "":
        d[f.name] = v
    elif section == "traffic[]":
        if f.name in ("rate", "duration", "start"):
            del stream["messages"]
            stream.update({"rate": 1, "duration": "1m"})
        if f.name == "domains":
            del stream["domain"]
        stream[f.name] = v
    elif section == "domains.<name>":
        if f.name in ("null_mx", "nxdomain", "servfail"):
            del domain["mx"]
        domain[f.name] = v
    elif section == "domains.<name>.mx[]":
        domain["mx"] = [{"host": HOST, f.name: v}]
    elif section == "domains.<name>.dns_outages[]":
        domain["dns_outages"] = [{"start": "0s", "end": "2h", f.name: v}]
    elif section == "domains.<name>.mta_sts":
        domain["mta_sts"] = {"mode": "testing", f.name: v}
    elif section == "hosts.<name>":
        host[f.name] = v
    elif section == "hosts.<name>.<fault>":
        host["tempfail_rcpt"] = {"probability": 0.1, f.name: v}
    elif section == "hosts.<name>.pushback":
        host["pushback"] = {f.name: v}
    elif section == "hosts.<name>.outages[]":
        host["outages"] = [{"start": "0s", "end": "2h", "mode": "tempfail", f.name: v}]
    elif section in ("host_defaults", "client", "egress_path", "queue"):
        d.setdefault(section, {})[f.name] = v
        if f.name == "smtp_auth_plain_password":  # needs its user name
            d[section]["smtp_auth_plain_username"] = "user"
        if f.name in ("tls_certificate", "tls_private_key"):  # a client certificate is a pair
            d[section].setdefault("tls_certificate", "/etc/egress/client.pem")
            d[section].setdefault("tls_private_key", "/etc/egress/client.key")
    else:  # pragma: no cover - a section this test does not know
        raise AssertionError(f"no way to set a field of {section!r}")
    return d


def _shape(path: str) -> str:
    """A table's path as the schema writes it: names and indices abstracted."""
    path = re.sub(r'"[^"]*"', "<name>", path)
    path = re.sub(r"\[\d+\]", "[]", path)
    path = re.sub(rf"\.({FAULTS})$", ".<fault>", path)
    return re.sub(r"^host_defaults\.", "hosts.<name>.", path)


def _sections() -> list[tuple[str, Field]]:
    engine = [("egress_path", f) for f in scenario_doc.egress_fields()]
    engine += [("queue", f) for f in scenario_doc.queue_fields()]
    return [(s.path, f) for s in SECTIONS for f in s.fields] + engine


@pytest.fixture
def read_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Every key each table's reader read (hence accepts), by table shape."""
    seen: dict[str, set[str]] = {}
    finish = Table.finish

    def recording(self: Table) -> None:
        seen.setdefault(_shape(self.path), set()).update(self._used)
        finish(self)

    monkeypatch.setattr(Table, "finish", recording)
    return seen


def test_every_example_is_valid_and_the_readers_take_exactly_the_declared_fields(
    tmp_path: Path, read_keys: dict[str, set[str]]
) -> None:
    (tmp_path / "policy.py").write_text("from engine.policy import Policy\npolicy = Policy()\n")
    (tmp_path / "shaping.toml").write_text('["default"]\nconnection_limit = 2\n')
    for section, f in _sections():
        try:
            Scenario.from_dict(copy.deepcopy(_with(section, f)), base_dir=tmp_path)
        except ValueError as e:
            raise AssertionError(f"{section or '(top)'}.{f.name} = {f.example}: {e}") from None
    declared = {s.path: {f.name for f in s.fields} for s in SECTIONS}
    read = {("" if k == "(top level)" else k): v for k, v in read_keys.items()}
    assert read == declared
