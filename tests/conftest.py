"""Fixtures more than one test module uses; the helpers behind them are in tests/support/.

`ca` (a fresh trustme CA) and `cafile` (its certificate written to
tmp_path/ca.pem) were defined again in each TLS, DANE and MTA-STS test file.
"""

from __future__ import annotations

import pathlib

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
