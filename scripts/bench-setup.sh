#!/usr/bin/env bash
# Install the peers the delivery and end-to-end benchmarks compare against.
#
# * Debian's postfix, for /usr/sbin/smtp-sink and /usr/sbin/smtp-source (the C
#   ceiling) and for Postfix itself as a relay peer.  The debconf preseed
#   "No configuration" means no main.cf is written and no daemon starts; the
#   bench writes its own throwaway instance and starts/stops it itself.
# * python-slimta 5 and gevent, the Python MTA peer, in a SEPARATE venv
#   (bench/.slimta-venv): gevent monkey-patches the standard library and
#   slimta pins old packages, neither of which may touch the project's .venv.
#
# Needs root for apt-get.  Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/sbin/smtp-sink ] || [ ! -x /usr/sbin/postfix ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends postfix
fi
# Make sure the package did not leave a daemon running (it should not have).
if [ -x /usr/sbin/postfix ] && /usr/sbin/postfix status >/dev/null 2>&1; then
    /usr/sbin/postfix stop || true
fi

VENV=bench/.slimta-venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    echo "*" > "$VENV/.gitignore"  # never committed
fi
if ! "$VENV/bin/python" -W ignore -c "import slimta.core, gevent" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # slimta 5 reads its version through pkg_resources, which old setuptools
    # cannot match against the normalised dist-info names of new wheels.
    "$VENV/bin/python" -m pip install -q "python-slimta>=5,<6" gevent "setuptools>=70,<81"
fi
"$VENV/bin/python" -W ignore -c "import slimta.core, gevent; print('slimta peer ready:', gevent.__version__)"
echo "smtp-sink: $(command -v smtp-sink || echo /usr/sbin/smtp-sink)"
