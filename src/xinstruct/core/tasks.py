"""Model stages as sharded tasks: (language, shard), run in-process or on datatrove's executors.

A record belongs to shard `stable_hash(key) % shards` of its language, so the split never depends on the
order records arrive in or on how many machines run them. Each task keeps its model work in its own cache
(io/cache.py), so it resumes by itself after a kill, and a rerun redoes only unfinished tasks (datatrove's
completion markers, kept per stage fingerprint) and, inside them, only unfinished records.

Where tasks run is the `executor` section's business:
- `local` with one worker: in this process, one model loaded once for every task (the default; llama.cpp
  batches across sequences itself);
- `local` with N workers, `ray`, `slurm`: datatrove's LocalPipelineExecutor / RayPipelineExecutor /
  SlurmPipelineExecutor run one TaskStep per task; each task opens its own backend (a client of an
  OpenAI-compatible server, a managed server on its GPU, or an in-process model).
Progress: each task writes <stage folder>/tasks/<task>.json (done/total/state), which the driver shows as a
bar while it waits and `xinstruct status RUN` summarises.
"""

from __future__ import annotations

import _thread
import fcntl
import hashlib
import importlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from datatrove.pipeline.base import PipelineStep

from xinstruct.core.executors import executor_session, make_executor
from xinstruct.core.stage import RunContext
from xinstruct.io.cache import RecordCache, open_reusable


@dataclass(frozen=True)
class Task:
    lang: str
    shard: int = 0
    shards: int = 1
    group: str = ""  # what else splits the work besides the language (evaluate: the system, the judged pair)

    @property
    def name(self) -> str:
        name = self.lang if self.shards == 1 else f"{self.lang}.{self.shard:03d}-of-{self.shards:03d}"
        return f"{self.group}.{name}" if self.group else name

    def owns(self, key: str) -> bool:
        return self.shards == 1 or shard_of(key, self.shards) == self.shard


class TaskStage(Protocol):
    """What run_tasks and TaskStep read of a stage whose model work is split into tasks: GenerateStage,
    RefineStage, DiversifyStage (core/stage.Stage gives the defaults below) and evaluate's answering and judging.

    - `task_folder`: where its task caches, progress files (tasks/) and executor logs (logs/) go;
    - `open_backend()`: a context manager holding the model (or a ModelSlot that loads one on first use);
    - `run_task(task, backend, progress)`: one task's work; returns its counts ("records": how many);
    - `start_method`: how local workers start, "fork" or "spawn" (a step that runs OpenMP code: torch, llama.cpp);
    - `worker_state()`: None for a Stage, which a worker rebuilds from `cfg`, `ctx.limit` and its fingerprints;
      else what the class's `from_worker_state(state)` rebuilds it from.
    """

    name: str
    start_method: str

    @property
    def task_folder(self) -> Path: ...

    def open_backend(self) -> AbstractContextManager: ...

    def run_task(self, task: Task, backend, progress) -> dict: ...

    def worker_state(self) -> object | None: ...


def shard_of(key: str, shards: int) -> int:
    """A stable shard for a record key (the same on every machine and Python run, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % shards


def shards_per_language(executor) -> int:
    """`executor.shards` where set, else one shard per worker (in-process: one)."""
    if executor.shards:
        return executor.shards
    return 1 if executor.kind == "local" and executor.workers == 1 else max(1, executor.workers)


def task_list(languages: list[str], shards: int, group: str = "") -> list[Task]:
    return [Task(lang, s, shards, group) for lang in languages for s in range(shards)]


def other_splits(folder: Path, task: Task, suffix: str = ".sqlite") -> list[Path]:
    """Files of the same language (and group) written under another number of shards (another `workers`): a
    task may copy finished records from them instead of redoing the model work."""
    whole = Task(task.lang, group=task.group).name
    found = [Path(folder) / f"{whole}{suffix}", *sorted(Path(folder).glob(f"{whole}.*-of-*{suffix}"))]
    return [p for p in found if p.is_file() and not p.name.endswith(f"-of-{task.shards:03d}{suffix}")
            and not (task.shards == 1 and p.name == f"{whole}{suffix}")]


@contextmanager
def open_task_cache(path: Path, task: Task, fingerprint: str | None = None, kind: type = RecordCache,
                    **kw) -> Iterator[tuple]:
    """(the task's cache at `path`, the caches other splits of its language left beside it under the same
    fingerprint): what core/work.journaled_map reads, writes and copies from."""
    with ExitStack() as stack:
        cache = stack.enter_context(kind(path, fingerprint, **kw))
        others = open_reusable(other_splits(Path(path).parent, task), cache.stored_fingerprint, kind, **kw)
        for other in others:
            stack.callback(other.close)
        yield cache, others


class ShardCaches:
    """The read-only caches of one language's `shards` tasks, `path_of(shard)` each: `of(key)` is the cache of
    the task that owns `key` (how a stage reads its tasks' work back, in corpus order, after they ran)."""

    def __init__(self, path_of: Callable[[int], Path], shards: int, kind: type = RecordCache):
        self.shards = shards
        self.caches = [kind(path_of(s), readonly=True) for s in range(shards)]

    def of(self, key: str):
        return self.caches[shard_of(key, self.shards)]

    def close(self) -> None:
        for cache in self.caches:
            cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ModelSlot:
    """One model at a time, loaded on first use: a task with nothing left to do loads none, tasks run in one
    process share it, and asking for another closes the one held. `load(*args)` returns a model; one with a
    `close()` is closed when replaced or at the end."""

    def __init__(self, load):
        self.load, self.key, self.model = load, None, None

    def get(self, key, *args):
        if self.model is None or key != self.key:
            self.close()
            self.model, self.key = self.load(*args), key
        return self.model

    def close(self) -> None:
        if self.model is not None and hasattr(self.model, "close"):
            self.model.close()
        self.model = self.key = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- progress files ---------------------------------------------------------------------------------------------

def progress_path(folder: Path, task: Task) -> Path:
    return Path(folder) / "tasks" / f"{task.name}.json"


def write_progress(folder: Path, task: Task, **state) -> None:
    path = progress_path(folder, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"task": task.name, **asdict(task), "host": socket.gethostname(), "pid": os.getpid(),
                               "updated": time.time(), **state}))
    os.replace(tmp, path)


def read_progress(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(folder) / "tasks").glob("*.json"))]


class FileProgress:
    """advance(n) for a task: its progress file, rewritten at most once a second (what `xinstruct status` and a
    driver waiting on workers read), and the console bar where the task runs in the driver's process."""

    def __init__(self, folder: Path, task: Task, total: int, bar=None):
        self.folder, self.task, self.total, self.done, self.last, self.bar = folder, task, total, 0, 0.0, bar
        self.note = ""  # e.g. "3 calls retrying", shown on the bar and in the progress file
        write_progress(folder, task, done=0, total=total, state="running")

    def __call__(self, n: int, note: str | None = None) -> None:
        if self.bar:
            self.bar(n, note=note)
        self.done += n
        self.note = self.note if note is None else note
        if time.time() - self.last > 1 or self.done >= self.total:
            self.last = time.time()
            write_progress(self.folder, self.task, done=self.done, total=self.total, state="running", note=self.note)


# -- running the tasks ------------------------------------------------------------------------------------------

_HELD_GPUS: list = []  # (gpu, locked file) this worker process holds, for its whole life


def claim_gpus(folder: Path, gpus: list[int], per_task: int = 1) -> list[int]:
    """`per_task` of `gpus` for this worker process alone, set as its CUDA_VISIBLE_DEVICES (local workers on one
    node with several GPUs: each worker's model, or the server it manages, gets its own). A GPU is held by an
    exclusive lock on <folder>/gpus/<gpu>.lock, which the kernel drops when the process ends, even killed."""
    if not _HELD_GPUS:
        (Path(folder) / "gpus").mkdir(parents=True, exist_ok=True)
        for gpu in gpus:
            f = open(Path(folder) / "gpus" / f"{gpu}.lock", "w")  # noqa: SIM115 - held until the process ends
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            _HELD_GPUS.append((gpu, f))
            if len(_HELD_GPUS) == per_task:
                break
        if len(_HELD_GPUS) < per_task:
            for _, f in _HELD_GPUS:
                f.close()
            _HELD_GPUS.clear()
            raise RuntimeError(f"no {per_task} free GPU(s) among {gpus} for this worker: other workers hold them")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g, _ in _HELD_GPUS)
    return [g for g, _ in _HELD_GPUS]


def local_gpus(executor) -> tuple[list[int], int] | None:
    """(GPUs, per worker) for local workers from `executor.options` {gpus: [...], gpus_per_task: n}, else None."""
    gpus = executor.options.get("gpus")
    if executor.kind != "local" or executor.workers == 1 or not gpus:
        return None
    per_task = int(executor.options.get("gpus_per_task", 1))
    if executor.workers * per_task > len(gpus):
        raise ValueError(f"executor: {executor.workers} workers × {per_task} GPU(s) each need more than the "
                         f"{len(gpus)} GPU(s) in executor.options.gpus")
    return list(gpus), per_task


class TaskStep(PipelineStep):
    """One datatrove pipeline step that runs task `rank` of a sharded stage in whatever process the executor
    gives it. It carries the run config and the stage's fingerprints, so a worker rebuilds the stage exactly;
    a runner that is no Stage (evaluate) hands over `worker_state()` and is rebuilt by `from_worker_state()`."""

    name = "🧠 xinstruct model task"
    type = "🤖 - INFERENCE"

    def __init__(self, stage: TaskStage, tasks: list[Task], gpus: tuple[list[int], int] | None = None):
        super().__init__()
        self.gpus = gpus  # local workers: (GPUs to share out, per worker)
        self.stage_class = f"{type(stage).__module__}:{type(stage).__qualname__}"
        self.state = stage.worker_state()
        if self.state is None:
            self.cfg, self.limit = stage.cfg, stage.ctx.limit
            self.fingerprint, self.work = stage.fingerprint, stage.work_fingerprint
        self.tasks = tasks

    def rebuild(self):
        from loguru import logger

        module, _, cls = self.stage_class.partition(":")
        cls = getattr(importlib.import_module(module), cls)
        if self.state is not None:
            return cls.from_worker_state(self.state)
        stage = cls(RunContext(self.cfg, log=logger.info, limit=self.limit, quiet=True))
        stage.fingerprint = self.fingerprint
        stage.parts  # noqa: B018 - computed here, in the worker, before any model is loaded
        return stage

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        stage = self.rebuild()
        if self.gpus:
            claim_gpus(stage.task_folder, *self.gpus)
        task = self.tasks[rank]
        with stage.open_backend() as backend:
            stats = stage.run_task(task, backend, None)
        self.stat_update("records", value=int(stats.get("records", 0)))
        if data:
            yield from data


def run_tasks(stage: TaskStage, tasks: list[Task], progress=None, log=print, executor=None) -> None:
    """Run every task of `stage` where its executor section (`executor`, else the stage's config) says; returns
    when all are done, else raises. A task whose last run left records to retry (`retry` in its progress file)
    runs again even where datatrove marked it complete. Local workers start as `stage.start_method` says
    (default fork; see core/executors.py)."""
    executor = executor or stage.cfg.executor
    if executor.kind == "local" and executor.workers == 1:
        with stage.open_backend() as backend:
            for task in tasks:
                stage.run_task(task, backend, progress)
        return
    logs = stage.task_folder / "logs" / stage.fingerprint
    runner = make_executor([TaskStep(stage, tasks, local_gpus(executor))], logs, executor, len(tasks),
                           start_method=stage.start_method)
    _forget_completion_of_retries(stage.task_folder, tasks, logs)
    log(f"{stage.name}: {len(tasks)} tasks on the {executor.kind} executor ({executor.workers} workers); "
        f"logs in {logs}")
    stop, died = threading.Event(), []
    watch_pids = executor.kind == "local"  # a pool never hears of a worker killed outright: watch for it
    watcher = threading.Thread(target=_watch, args=(stage.task_folder, tasks, progress, stop, died, watch_pids),
                               daemon=True)
    previous = _listen_for_dead_workers()
    watcher.start()
    try:
        with executor_session(executor):
            runner.run()
        if executor.kind == "slurm":
            _wait_for_slurm(runner, log)
    except (WorkerDied, KeyboardInterrupt) as e:
        if not died:
            raise
        raise RuntimeError(f"{stage.name}: the worker running task {died[0]} died; its finished records are kept "
                           "(run the same command again to finish it)") from None if isinstance(e, WorkerDied) else e
    finally:
        stop.set()
        watcher.join()
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)
    left = runner.get_incomplete_ranks(range(len(tasks)))
    if left:
        names = ", ".join(tasks[r].name for r in left[:5])
        raise RuntimeError(f"{stage.name}: {len(left)} of {len(tasks)} tasks did not finish ({names}); see {logs} "
                           "and run the same command again")


def _forget_completion_of_retries(folder: Path, tasks: list[Task], logs: Path) -> None:
    """datatrove marks a task complete when it returns, even with records that failed for a reason worth
    retrying (a server error); without this, the next run would skip it and never retry them."""
    retry = {p["task"] for p in read_progress(folder) if p.get("retry")}
    for rank, task in enumerate(tasks):
        if task.name in retry:
            (Path(logs) / "completions" / f"{rank:05d}").unlink(missing_ok=True)


class WorkerDied(Exception):
    """Raised in the driver's main thread when the watcher finds a local worker killed mid-task."""


def _raise_worker_died(_signum, _frame):
    raise WorkerDied


def _listen_for_dead_workers():
    """The watcher stops the driver with SIGUSR1 to its main thread: a real signal wakes the main thread where it
    waits on the pool (a flag like interrupt_main() is only seen between bytecodes), and unlike SIGINT it is not
    ignored in a job started in the background (`nohup ... &` sets SIGINT to SIG_IGN, and Python then raises
    nothing). Returns the handler to restore, or None where this is not the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGUSR1, _raise_worker_died)


def _watch(folder: Path, tasks: list[Task], progress, stop: threading.Event, died: list, watch_pids: bool,
           started: float | None = None) -> None:
    """Follow the workers' progress files on the driver's bar (same machine or shared filesystem), and, for
    local workers, stop the run when one was killed mid-task (its pool would wait for it forever)."""
    started = started or time.time()
    names = {t.name for t in tasks}
    advances, seen = {}, {}
    while not stop.wait(1.0):
        for state in read_progress(folder):
            name = state["task"]
            if name not in names or state.get("updated", 0) < started:
                continue
            if watch_pids and state.get("state") == "running" and not _alive(state.get("pid")):
                died.append(name)
                if signal.getsignal(signal.SIGUSR1) is _raise_worker_died:
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                else:  # run_tasks was not called from the main thread
                    _thread.interrupt_main()
                return
            if progress is None:
                continue
            if name not in advances:
                advances[name] = progress(f"{name}", state.get("total", 0))
                seen[name] = 0
            delta = state.get("done", 0) - seen[name]
            advances[name](max(0, delta), note=state.get("note", ""))
            seen[name] += max(0, delta)


def _alive(pid) -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child stays a zombie until its pool reaps it
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_for_slurm(runner, log, poll: float = 10.0) -> None:
    """datatrove submits a Slurm array and returns; the next stage needs this one's output, so wait until
    every task is complete or the job has left the queue."""
    job = getattr(runner, "job_id", None)
    while runner.get_incomplete_ranks():
        if job in (None, -1):
            return
        queued = subprocess.run(["squeue", "-h", "-j", str(job)], capture_output=True, text=True, check=False)
        if queued.returncode == 0 and not queued.stdout.strip():
            return  # the job is gone: whatever is incomplete now failed
        time.sleep(poll)
        log(f"waiting for Slurm job {job}: {len(runner.get_incomplete_ranks())} task(s) left")
