"""tests.support.deliver_process: a process that dies before it listens fails the
test with its own output (its one-line error), and leaves nothing running."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deliver_process import deliver_argv, start_deliver
from tests.support.live_harness import free_port

pytestmark = pytest.mark.timeout(60)


def test_a_process_that_exits_before_listening_fails_with_its_output(tmp_path: Path) -> None:
    port = free_port()
    argv = deliver_argv("--policy", str(tmp_path / "missing.py"), "--spool",
                        str(tmp_path / "spool"), "--listen", f"127.0.0.1:{port}")
    with pytest.raises(AssertionError, match=r"egress deliver: error: .*missing\.py"):
        start_deliver(argv, port, tmp_path / "deliver.log")
