"""Where a datatrove pipeline runs is config, never the step's business: local processes, Slurm or Ray."""

from __future__ import annotations

from pathlib import Path

from xinstruct.config import ExecutorConfig


def make_executor(pipeline: list, logging_dir: Path, cfg: ExecutorConfig, tasks: int, depends=None):
    """A datatrove executor for `pipeline`; extra Slurm/Ray keyword arguments come from `executor.options`."""
    if cfg.kind == "local":
        from datatrove.executor import LocalPipelineExecutor
        # fork: the steps are plain objects and our venv is already imported; forkserver re-imports per task
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=max(1, cfg.workers),
                                     logging_dir=str(logging_dir), start_method="fork", depends=depends)
    if cfg.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor
        options = {"time": "04:00:00", "partition": "cpu", **cfg.options}
        return SlurmPipelineExecutor(pipeline, tasks=tasks, logging_dir=str(logging_dir), depends=depends,
                                     **options)
    if cfg.kind == "ray":
        from datatrove.executor import RayPipelineExecutor
        return RayPipelineExecutor(pipeline, tasks=tasks, workers=max(1, cfg.workers),
                                   logging_dir=str(logging_dir), **cfg.options)
    raise ValueError(f"unknown executor {cfg.kind!r}")
