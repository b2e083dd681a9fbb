#!/usr/bin/env bash
# Full benchmark: set up .venv-bench, then run every contender on every workload, each in a
# fresh process, and rewrite the results section of bench/README.md (full-size runs only).
# Arguments are passed to bench/run_stitch.py, e.g. `bash bench/run.sh --quick`,
# `bash bench/run.sh -w a -c tilewise_stream,naive`.
# Then bench/run_train.py runs the training-window (cleaning) benchmark with its own defaults
# (`--quick` is passed on; extra arguments through BENCH_TRAIN_ARGS, e.g. "-c tilewise,naive").
# `--no-train` skips it, `--train-only` skips the stitching benchmark.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
stitch=1 train=1 args=() train_args=()
for a in "$@"; do
    case "$a" in
        --no-train) train=0 ;;
        --train-only) stitch=0 ;;
        --quick) args+=("$a"); train_args+=("$a") ;;
        -h|--help) args+=("$a"); train_args+=("$a") ;;
        *) args+=("$a") ;;
    esac
done
bash "$ROOT/bench/setup.sh"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if [ "$stitch" = 1 ]; then
    "$VENV/bin/python" "$ROOT/bench/run_stitch.py" ${args[@]+"${args[@]}"}
fi
if [ "$train" = 1 ]; then
    # shellcheck disable=SC2086  # BENCH_TRAIN_ARGS is split into words on purpose
    "$VENV/bin/python" "$ROOT/bench/run_train.py" ${train_args[@]+"${train_args[@]}"} ${BENCH_TRAIN_ARGS:-}
fi
