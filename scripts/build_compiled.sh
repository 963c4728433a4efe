#!/usr/bin/env bash
# Build a mypyc-compiled copy of the checkout in DIR (default /tmp/egress-compiled),
# for benchmarks: the checkout itself stays pure Python.
#   scripts/build_compiled.sh [DIR]
#   cd DIR && python -m bench.core --quick      # the compiled core
# Needs mypy (the test extra) and a C compiler; see setup.py.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/egress-compiled}
py=${PYTHON:-$here/.venv/bin/python}
rm -rf "$out"
mkdir -p "$out"
cd "$here"
git ls-files -z engine sim bench lab bridge scenarios examples setup.py pyproject.toml README.md \
  | xargs -0 cp --parents -t "$out"
cd "$out"
EGRESS_COMPILE=1 "$py" setup.py -q build_ext --inplace > build.log 2>&1 || { tail -20 build.log; exit 1; }
n=$(find engine -maxdepth 1 -name "*.so" | wc -l)
if [ "$n" -eq 0 ]; then
  tail -5 build.log
  echo "no module compiled (see $out/build.log)" >&2
  exit 1
fi
echo "$out: $n modules compiled"
