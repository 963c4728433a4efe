"""Fixtures more than one test module uses; the helpers behind them are in tests/support/.

`ca` (a fresh trustme CA) and `cafile` (its certificate written to
tmp_path/ca.pem) were defined again in each TLS, DANE and MTA-STS test file.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import pathlib
from collections.abc import Iterator

import pytest
import trustme

from tests.support.certs import make_ca, write_cafile


@pytest.fixture
def ca() -> trustme.CA:
    """A fresh test certificate authority."""
    return make_ca()


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: pathlib.Path) -> str:
    """The path of `ca`'s certificate, written to tmp_path/ca.pem."""
    return str(write_cafile(ca, tmp_path))


# -- a loaded machine on demand ------------------------------------------------------------
#
# EGRESS_TEST_LOAD=N (or --cpu-hogs N) starts N busy-loop processes for the whole
# session, so the timing tests are tried on a machine whose cores are taken, as on
# a busy CI runner.  The hogs are killed at the end of the session whatever happens
# (the fixture's finally, and atexit should pytest itself be interrupted).


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-hogs", type=int, default=None, metavar="N",
        help="start N busy-loop processes for the session (default: $EGRESS_TEST_LOAD or 0)",
    )


def _hog_count(config: pytest.Config) -> int:
    option = config.getoption("--cpu-hogs")
    if option is not None:
        return int(option)
    text = os.environ.get("EGRESS_TEST_LOAD", "0").strip() or "0"
    try:
        return int(text)
    except ValueError:
        raise pytest.UsageError(f"EGRESS_TEST_LOAD must be an integer, not {text!r}") from None


def _busy_loop() -> None:  # pragma: no cover - runs in the hog processes
    while True:
        pass


@pytest.fixture(scope="session", autouse=True)
def cpu_hogs(request: pytest.FixtureRequest) -> Iterator[list[multiprocessing.Process]]:
    """N busy-loop processes while the session runs (none by default)."""
    n = _hog_count(request.config)
    if n < 0:
        raise pytest.UsageError(f"--cpu-hogs/EGRESS_TEST_LOAD must be >= 0, not {n}")
    ctx = multiprocessing.get_context("spawn")
    hogs = [ctx.Process(target=_busy_loop, name=f"cpu-hog-{i}", daemon=True) for i in range(n)]

    def stop() -> None:
        for hog in hogs:
            if hog.is_alive():
                hog.kill()
        for hog in hogs:
            hog.join(timeout=5)

    atexit.register(stop)
    try:
        for hog in hogs:
            hog.start()
        yield hogs
    finally:
        stop()
        atexit.unregister(stop)


# -- the live tests on uvloop on demand ------------------------------------------------------
#
# EGRESS_TEST_LOOP=uvloop runs every test's asyncio.run on uvloop, the loop
# `egress deliver --loop auto` picks where it is installed, so the in-process
# live tests (TLS, DANE, the listener) can be tried on it as well as on asyncio's.

if os.environ.get("EGRESS_TEST_LOOP") == "uvloop":
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
