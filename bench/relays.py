"""The relay peers of the end-to-end benchmark: Postfix and python-slimta.

Both sit between ``smtp-source`` and ``smtp-sink`` exactly where ``egress
deliver --listen`` sits, so the three are compared on the same rig:

* `PostfixRelay`: a throwaway Postfix instance (its own config, queue and
  data directories under a temp dir, a listener on a loopback port, relaying
  everything to the sink), started with ``postfix -c DIR start``; the
  machine's /etc/postfix is never touched;
* `SlimtaRelay`: python-slimta 5 (SmtpEdge -> Queue -> StaticSmtpRelay), run
  by ``bench/slimta_relay.py`` in its own venv (``bench/.slimta-venv``) so
  gevent never touches the project's process or venv.

Each is a context manager that removes what it made, also when it fails to
start; a missing tool raises `PeerUnavailable` naming the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from bench.peers import (
    ROOT,
    SETUP_HINT,
    SLIMTA_PYTHON,
    PeerUnavailable,
    free_port,
    stop_process,
    tool,
    wait_listening,
)

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [{sink_host}]:{sink_port}
disable_dns_lookups = yes
smtp_destination_concurrency_limit = 32
smtp_connection_cache_on_demand = yes
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
smtputf8_enable = no
biff = no
"""


class PostfixRelay:
    """A throwaway Postfix relaying everything from `listen` to the sink.

    Its own config, queue and data directories live in a temp dir, so the
    machine's /etc/postfix is never touched; ``master.cf`` is the packaged
    one with the smtpd listener moved to the bench port, chroot off.
    """

    def __init__(self, sink_host: str, sink_port: int, *, listen_port: int | None = None
                 ) -> None:
        self.sink_host, self.sink_port = sink_host, sink_port
        self.host = "127.0.0.1"
        self.port = listen_port or free_port(self.host)
        self._dir: str | None = None

    def start(self) -> PostfixRelay:
        """Write the instance, ``postfix -c DIR start``, wait for the listener."""
        postfix = tool("postfix")
        if os.geteuid() != 0:
            raise PeerUnavailable("the Postfix relay peer must be started as root")
        packaged = Path("/etc/postfix/master.cf")
        if not packaged.exists():
            raise PeerUnavailable(f"{packaged} is missing; {SETUP_HINT}")
        self._dir = tempfile.mkdtemp(prefix="bench-postfix-")
        os.chmod(self._dir, 0o755)
        d = Path(self._dir)
        (d / "data").mkdir()
        shutil.chown(d / "data", user="postfix")  # master's lock file lives there
        (d / "queue").mkdir()
        (d / "main.cf").write_text(_MAIN_CF.format(dir=d, sink_host=self.sink_host,
                                                   sink_port=self.sink_port))
        lines = []
        for line in packaged.read_text().splitlines():
            fields = line.split()
            if fields[:2] == ["smtp", "inet"]:
                line = f"{self.host}:{self.port} inet n - n - - smtpd"
            elif len(fields) >= 8 and fields[1] in ("unix", "fifo", "pass", "inet") \
                    and not line.startswith((" ", "\t", "#")) and fields[4] == "y":
                fields[4] = "n"  # no chroot: the temp queue has no /etc copies
                line = " ".join(fields)
            lines.append(line)
        (d / "master.cf").write_text("\n".join(lines) + "\n")
        done = subprocess.run([postfix, "-c", str(d), "start"], capture_output=True, timeout=60)
        try:
            if done.returncode != 0:
                # Without a tty and a syslog, postfix says why only in its log file.
                log = d / "maillog"
                why = log.read_text()[-800:] if log.exists() else done.stderr.decode()
                raise PeerUnavailable(f"postfix -c {d} start failed (exit {done.returncode}): "
                                      f"{why.strip() or 'no message (run it on a tty to see)'}")
            wait_listening(self.host, self.port, 15.0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """``postfix stop`` (``abort`` if that hangs) and remove the instance."""
        if self._dir is None:
            return
        postfix = tool("postfix")
        try:
            subprocess.run([postfix, "-c", self._dir, "stop"], capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run([postfix, "-c", self._dir, "abort"], capture_output=True, timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> PostfixRelay:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class SlimtaRelay:
    """python-slimta (bench/slimta_relay.py) run by the separate slimta venv."""

    def __init__(self, sink_host: str, sink_port: int, *, listen_port: int | None = None,
                 storage: str = "memory") -> None:
        self.sink_host, self.sink_port = sink_host, sink_port
        self.host = "127.0.0.1"
        self.port = listen_port or free_port(self.host)
        self.storage = storage
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    def start(self) -> SlimtaRelay:
        """Start the relay and return once it accepts connections."""
        if not SLIMTA_PYTHON.exists():
            raise PeerUnavailable(f"python-slimta's venv {SLIMTA_PYTHON.parent.parent} is missing; "
                                  f"{SETUP_HINT}")
        self._dir = tempfile.mkdtemp(prefix="bench-slimta-")
        cmd = [str(SLIMTA_PYTHON), str(ROOT / "bench" / "slimta_relay.py"),
               "--listen", f"{self.host}:{self.port}",
               "--relay", f"{self.sink_host}:{self.sink_port}",
               "--storage", self.storage, "--dir", self._dir]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(self.host, self.port, 15.0, self._proc)
        except PeerUnavailable:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            self.stop()
            raise PeerUnavailable(f"python-slimta relay failed to start: {err[-800:]}") from None
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        """The relay's process id while it runs (for its CPU accounting)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """Stop the relay process and remove its storage."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> SlimtaRelay:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
