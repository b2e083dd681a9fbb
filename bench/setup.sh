#!/usr/bin/env bash
# Create / refresh the benchmark environment at .venv-bench (idempotent, re-runnable).
# torch is pinned through bench/constraints.txt on EVERY pip call, so pip never resolves
# another torch (a CUDA build would pull gigabytes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
CONSTRAINTS="$ROOT/bench/constraints.txt"
PY="${BENCH_PYTHON:-python3.11}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

have() {  # have DIST==VERSION-or-prefix : is it installed already?
    "$VENV/bin/python" - "$1" <<'PYEOF' 2>/dev/null
import sys
from importlib import metadata
name, _, want = sys.argv[1].partition("==")
try:
    v = metadata.version(name)
except metadata.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if (not want or v == want or v.startswith(want.rstrip("*").rstrip("."))) else 1)
PYEOF
}

# 1. torch first, alone, from the pinned version.
if ! have "torch==2.13.0"; then
    echo "[setup] installing torch==2.13.0" >&2
    "${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==2.13.0"
fi

# 2. peers (and tools), always under the torch constraint.
PEERS=("monai>=1.6,<1.7" "torchio" "tiler" "qlty==1.5.0" "psutil" "ruff")
need=0
for p in "monai==1.6" torchio tiler "qlty==1.5.0" psutil ruff; do
    have "$p" || need=1
done
if [ "$need" = 1 ]; then
    echo "[setup] installing peers: ${PEERS[*]}" >&2
    "${PIP[@]}" install -q -c "$CONSTRAINTS" "${PEERS[@]}"
fi

# 3. the library itself (editable) once it has a pyproject.toml; otherwise run.sh uses
#    PYTHONPATH=src.
if [ -f "$ROOT/pyproject.toml" ]; then
    if ! "$VENV/bin/python" - "$ROOT/src" <<'PYEOF' 2>/dev/null; then
import sys
import tilewise
sys.exit(0 if tilewise.__file__.startswith(sys.argv[1]) else 1)
PYEOF
        echo "[setup] pip install -e $ROOT" >&2
        "${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$ROOT" \
            || echo "[setup] WARNING: editable install failed; falling back to PYTHONPATH=src" >&2
    fi
else
    echo "[setup] no pyproject.toml yet: tilewise is imported from src/ via PYTHONPATH" >&2
fi

"$VENV/bin/python" - <<'PYEOF' >&2
from importlib import metadata
for d in ("torch", "monai", "torchio", "tiler", "qlty", "numba", "numpy", "tilewise"):
    try:
        print(f"[setup] {d} {metadata.version(d)}")
    except metadata.PackageNotFoundError:
        print(f"[setup] {d} not installed")
PYEOF
