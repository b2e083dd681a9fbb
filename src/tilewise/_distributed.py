"""Running ``predict``'s rows of output blocks as tasks on a dask.distributed cluster.

Each row of blocks (blocks sharing their box on every axis but the first) is one task: it reads
the input its windows need, runs the model, stitches and writes only its own chunk-aligned
blocks, leaving a marker in the journal after each. Blocks never share a chunk, so workers write
without locks. A row's windows are cut into batches in one fixed way, and windows that straddle
rows are run by each row that needs them, so a block's values do not depend on where or when it
ran: the result is bit-identical to the single-process one. A task whose worker dies is rerun
elsewhere by the scheduler and skips the blocks already journalled, so no finished block is
written twice.

The job (model, source and settings) is scattered once to every worker; the model is built once
per worker process, not once per task.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from tilewise._errors import ParameterError, message

if TYPE_CHECKING:
    from tilewise._predict import _Job, _Progress
    from tilewise._sink import Block

__all__ = ["run_rows"]


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "running predict on a dask cluster needs dask.distributed: pip install 'tilewise[dask]'"
        ) from None
    return distributed


def run_rows(
    job: _Job,
    todo: list[tuple[Block, ...]],
    work: dict[str, int],
    bar: _Progress,
    client: Any,
    workers: int,
) -> int:
    """Run ``todo`` rows of blocks on ``client`` (checked by ``predict``), or on a LocalCluster
    of ``workers`` started here; returns the window runs."""
    from tilewise._predict import run_job_row

    distributed = _distributed()
    own = None
    if client is None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ParameterError(
                message(
                    "workers",
                    expected="a positive number of worker processes",
                    received=repr(workers),
                    fix="pass e.g. workers=2",
                )
            )
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        own = client = distributed.Client(cluster)
    try:
        if bar.enabled and getattr(client, "dashboard_link", None):
            bar.note(f"dask dashboard: {client.dashboard_link}")
        shared = client.scatter(job, broadcast=True, hash=False)
        futures = [
            client.submit(
                run_job_row,
                shared,
                row,
                key=f"tilewise-row-{job.token}-{row[0].key}",
                pure=False,
                retries=3,
            )
            for row in todo
        ]
        run = 0
        try:
            for fut in distributed.as_completed(futures):
                key, windows = fut.result()
                run += windows
                bar.update(work.get(key, 0))
        except BaseException:
            client.cancel(futures)  # start no further rows; finished blocks stay journalled
            # rows already running cannot be stopped: let them finish before the lock is
            # released, so that no task of this run writes into a run started after it
            with contextlib.suppress(BaseException):  # a second Ctrl-C stops waiting
                _wait_for_running(client, f"tilewise-row-{job.token}-")
            raise
        return run
    finally:
        if own is not None:
            cluster_obj = own.cluster
            own.close()
            if cluster_obj is not None:
                cluster_obj.close()


def _running_rows(prefix: str, dask_worker: Any = None) -> list[str]:
    """Keys of this run's tasks still running on a worker, cancelled ones included."""
    state = getattr(dask_worker, "state", None)
    tasks = set(getattr(state, "executing", ())) | set(getattr(state, "long_running", ()))
    return [str(ts.key) for ts in tasks if str(ts.key).startswith(prefix)]


def _wait_for_running(client: Any, prefix: str, timeout: float = 3600.0) -> None:
    """Wait until no worker runs a task of this run (cancelling does not stop a running one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.run(_running_rows, prefix).values()):
            return
        time.sleep(0.2)
