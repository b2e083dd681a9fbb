#!/usr/bin/env bash
# Full benchmark: set up .venv-bench, then run every contender on every workload, each in a
# fresh process, and rewrite the results section of bench/README.md (full-size runs only).
# Arguments are passed to bench/run_stitch.py, e.g. `bash bench/run.sh --quick`,
# `bash bench/run.sh -w a -c tilewise_stream,naive`.
# Then bench/run_train.py runs the training-window (cleaning) benchmark with its own defaults
# (`--quick` is passed on; extra arguments through BENCH_TRAIN_ARGS, e.g. "-c tilewise,naive").
# `--no-train` skips it, `--train-only` skips the stitching benchmark.
# `--ooc` also runs bench/run_ooc.py, the out-of-core (zarr on disk) inference benchmark, last:
# it is long (about 30 minutes at full size, up to 30 GB on disk), so it is off by default.
# `--ooc-only` runs only that one; `--quick` is passed on, other arguments go through
# BENCH_OOC_ARGS (e.g. "-c tilewise,naive_zarr --no-scale").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
stitch=1 train=1 ooc=0 args=() train_args=() ooc_args=()
for a in "$@"; do
    case "$a" in
        --no-train) train=0 ;;
        --train-only) stitch=0 ;;
        --ooc) ooc=1 ;;
        --ooc-only) ooc=1 stitch=0 train=0 ;;
        --quick) args+=("$a"); train_args+=("$a"); ooc_args+=("$a") ;;
        -h|--help) args+=("$a"); train_args+=("$a"); ooc_args+=("$a") ;;
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
if [ "$ooc" = 1 ]; then
    # shellcheck disable=SC2086  # BENCH_OOC_ARGS is split into words on purpose
    "$VENV/bin/python" "$ROOT/bench/run_ooc.py" ${ooc_args[@]+"${ooc_args[@]}"} ${BENCH_OOC_ARGS:-}
fi
