"""Where a datatrove pipeline runs is config, never the step's business: local processes, Slurm or Ray."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from xinstruct.config import ExecutorConfig


def quiet_datatrove() -> None:
    """datatrove logs every step of every task (and Ray's executor its warnings) to the console; its stats
    still go to the stage's logs folder. XINSTRUCT_VERBOSE=1 (or --verbose) shows them."""
    from loguru import logger

    if not os.environ.get("XINSTRUCT_VERBOSE"):
        logger.disable("datatrove")


def make_executor(pipeline: list, logging_dir: Path, cfg: ExecutorConfig, tasks: int, depends=None,
                  start_method: str = "fork"):
    """A datatrove executor for `pipeline`; extra Slurm/Ray keyword arguments come from `executor.options`.

    Local workers are forked by default: the steps are plain objects and our venv is already imported (spawn
    re-imports per worker). A step that runs OpenMP code in the worker (torch, llama.cpp) asks for "spawn": a
    worker forked from a process that already ran OpenMP hangs on its first parallel loop (GNU libgomp's thread
    pool does not survive fork)."""
    quiet_datatrove()
    if cfg.kind == "local":
        from datatrove.executor import LocalPipelineExecutor
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=max(1, cfg.workers),
                                     logging_dir=str(logging_dir), start_method=start_method, depends=depends)
    if cfg.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        options = {"time": "04:00:00", "partition": "cpu", "job_name": f"xinstruct-{Path(logging_dir).parts[-3]}",
                   "workers": cfg.workers, **python_env(), **cfg.options}
        return SlurmPipelineExecutor(pipeline, tasks=tasks, logging_dir=str(logging_dir), depends=depends,
                                     **options)
    if cfg.kind == "ray":
        from datatrove.executor import RayPipelineExecutor
        options = {k: v for k, v in cfg.options.items() if k != "address"}
        return RayPipelineExecutor(pipeline, tasks=tasks, workers=max(1, cfg.workers),
                                   logging_dir=str(logging_dir), **options)
    raise ValueError(f"unknown executor {cfg.kind!r}")


@contextlib.contextmanager
def executor_session(cfg: ExecutorConfig):
    """Ray needs a cluster: connect to the one named by `options.address` or RAY_ADDRESS, else start a local one
    for this command and stop it at the end. Other executors need nothing."""
    if cfg.kind != "ray":
        yield
        return
    import ray

    started = not ray.is_initialized()
    if started:
        address = cfg.options.get("address") or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": max(cfg.workers, len(os.sched_getaffinity(0)))}))
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def python_env() -> dict:
    """What a Slurm job needs to run this very Python: the venv to activate, where one is active."""
    activate = Path(sys.prefix) / "bin" / "activate"
    return {"venv_path": str(activate)} if activate.exists() else {}
