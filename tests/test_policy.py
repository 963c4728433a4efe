"""Policy: hooks, defaults, return-type checks, wrapped errors, loading files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.config import EgressPathConfig, make_egress_path
from engine.errors import ConfigError, PolicyError
from engine.policy import HOOKS, Policy
from engine.queue_config import (
    EgressPool,
    make_egress_pool,
    make_egress_source,
    make_queue_config,
)


def test_defaults_without_hooks() -> None:
    p = Policy()
    assert p.egress_path_config("example.com", "unspecified", "example.com") == make_egress_path()
    assert p.queue_config("example.com", "", "", "") == make_queue_config()
    assert p.egress_source("ip-9") == make_egress_source("ip-9")
    assert p.egress_pool("unspecified") == EgressPool(name="unspecified",
                                                      entries=(("unspecified", 1),))
    with pytest.raises(PolicyError, match="egress pool 'bulk' is used by a queue config but the "
                       "policy has no 'get_egress_pool' hook"):
        p.egress_pool("bulk")


def test_hooks_receive_their_arguments() -> None:
    p = Policy()
    calls: list[tuple] = []

    @p.on("get_egress_path_config")
    def path(domain: str, source_name: str, site_name: str) -> EgressPathConfig:
        calls.append(("path", domain, source_name, site_name))
        return make_egress_path(connection_limit=8)

    @p.on("get_queue_config")
    def queue(domain: str, tenant: str, campaign: str, routing_domain: str):
        calls.append(("queue", domain, tenant, campaign, routing_domain))
        return make_queue_config(egress_pool="bulk")

    @p.on("get_egress_pool")
    def pool(name: str):
        calls.append(("pool", name))
        return make_egress_pool(name, entries=[{"name": "ip-1", "weight": 2}])

    @p.on("get_egress_source")
    def source(name: str):
        calls.append(("source", name))
        return make_egress_source(name, ehlo_domain="mta.example.org")

    assert p.egress_path_config("a.com", "ip-1", "mx.a.com").connection_limit == 8
    assert p.queue_config("a.com", "t", "c", "r").egress_pool == "bulk"
    assert p.egress_pool("bulk").entries == (("ip-1", 2),)
    assert p.egress_source("ip-1").ehlo_domain == "mta.example.org"
    assert calls == [("path", "a.com", "ip-1", "mx.a.com"), ("queue", "a.com", "t", "c", "r"),
                     ("pool", "bulk"), ("source", "ip-1")]
    assert path.__name__ == "path"  # the decorator returns the function
    assert p.has_hook("get_egress_pool") and repr(p) == (
        "<Policy: get_egress_path_config, get_egress_pool, get_egress_source, get_queue_config>")


def test_unknown_hook_is_refused_with_a_suggestion() -> None:
    with pytest.raises(PolicyError) as err:
        Policy().on("get_egress_path")
    assert str(err.value) == (
        "unknown hook 'get_egress_path'; did you mean 'get_egress_path_config'? "
        f"(known hooks: {', '.join(HOOKS)})"
    )


def test_hook_registered_twice() -> None:
    p = Policy()
    p.on("get_queue_config")(lambda *a: make_queue_config())
    with pytest.raises(PolicyError, match="hook 'get_queue_config' is registered twice"):
        p.on("get_queue_config")(lambda *a: make_queue_config())


def test_hook_returning_wrong_type() -> None:
    p = Policy()

    @p.on("get_egress_path_config")
    def path(domain, source_name, site_name):
        return {"connection_limit": 8}

    with pytest.raises(PolicyError) as err:
        p.egress_path_config("a.com", "s", "site")
    msg = str(err.value)
    assert msg.startswith("hook 'get_egress_path_config' (")
    assert "called with ('a.com', 's', 'site') returned dict; expected EgressPathConfig" in msg
    assert "make_egress_path(...)" in msg


def test_hook_raising_is_wrapped_with_cause() -> None:
    p = Policy()

    @p.on("get_egress_path_config")
    def path(domain, source_name, site_name):
        return make_egress_path(conection_limit=3)

    with pytest.raises(PolicyError) as err:
        p.egress_path_config("bad.com", "s", "site")
    msg = str(err.value)
    assert "hook 'get_egress_path_config'" in msg and "('bad.com', 's', 'site')" in msg
    assert "raised ConfigError: make_egress_path: unknown key 'conection_limit'; " \
        "did you mean 'connection_limit'?" in msg
    assert isinstance(err.value.__cause__, ConfigError)


def test_source_and_pool_must_have_the_asked_name() -> None:
    p = Policy()
    p.on("get_egress_source")(lambda name: make_egress_source("other"))
    p.on("get_egress_pool")(lambda name: make_egress_pool("other"))
    with pytest.raises(PolicyError, match="returned a source named 'other'"):
        p.egress_source("ip-1")
    with pytest.raises(PolicyError, match="returned a pool named 'other'"):
        p.egress_pool("bulk")


def _write(tmp_path: Path, body: str, name: str = "policy.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


GOOD = """
    from engine import Policy, make_egress_path
    policy = Policy()
    COUNTER = []

    @policy.on("get_egress_path_config")
    def path(domain, source_name, site_name):
        COUNTER.append(domain)
        return make_egress_path(connection_limit=len(COUNTER))
"""


def test_from_file_loads_each_time_afresh(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    a = Policy.from_file(path)
    b = Policy.from_file(str(path))
    assert a is not b and a.source == str(path)
    assert a.egress_path_config("x", "s", "x").connection_limit == 1
    assert a.egress_path_config("x", "s", "x").connection_limit == 2
    assert b.egress_path_config("x", "s", "x").connection_limit == 1  # its own module state


def test_example_policy_loads() -> None:
    p = Policy.from_file(Path(__file__).resolve().parent.parent / "examples" / "policy.py")
    assert p.egress_path_config("gmail.com", "ip-1", "gmail.com").connection_limit == 10
    assert p.egress_pool("bulk").entries == (("ip-1", 3), ("ip-2", 1))


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ("x = (\n", r"line 1: syntax error: '\(' was never closed"),
        ("a = 1\nb = 2\ndef f(:\n  pass\n", "line 3: syntax error"),
        ("import nonexistent_module_xyz\n", "line 1 raised ModuleNotFoundError"),
        ("x = 1\nraise RuntimeError('boom')\n", "line 2 raised RuntimeError: boom"),
        ("x = 1\n", "defines no module-level 'policy'; expected `policy = Policy\\(\\)`"),
        ("policy = 5\n", "'policy' is a int, expected an engine.Policy"),
        ("from engine import Policy\npolicy = Policy()\npolicy.on('get_egres_pool')\n",
         "line 3 raised PolicyError: unknown hook 'get_egres_pool'; "
         "did you mean 'get_egress_pool'"),
    ],
)
def test_from_file_errors(tmp_path: Path, body: str, msg: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(PolicyError, match=msg) as err:
        Policy.from_file(path)
    assert f"policy file {str(path)!r}" in str(err.value)


def test_from_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(PolicyError, match=r"policy file '.*nope\.py' does not exist"):
        Policy.from_file(missing)
    with pytest.raises(PolicyError, match="does not exist or is not a file"):
        Policy.from_file(tmp_path)
