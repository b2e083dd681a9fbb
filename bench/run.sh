#!/usr/bin/env bash
# Full benchmark: set up .venv-bench, then run every contender on every workload, each in a
# fresh process, and rewrite the results section of bench/README.md (full-size runs only).
# Arguments are passed to bench/run_stitch.py, e.g. `bash bench/run.sh --quick`,
# `bash bench/run.sh -w a -c tilewise_stream,naive`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash "$ROOT/bench/setup.sh"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" "$ROOT/bench/run_stitch.py" "$@"
