"""Model work on records, handed back as it completes, so that a record that keeps failing holds up no other.

The model stages (generation, grading, embedding's caller, evaluation) ask a model about many records and
commit the answers a group at a time. With an in-process model (llama.cpp, transformers) the model batches
itself: records go to it `size` at a time, in order. With a server client (the openai backend) each record is
its own call on one of `workers` threads: a record whose call is retrying (a 503, a timeout) waits on its own
thread while the others go on, and the ones that finished are handed back at once, to be committed, however long
the slow one takes. A record that failed is asked again at the back of the queue (`retries` times), never in the
way of the rest. Handing back in completion order is safe because the stages write their outputs from the
caches, in corpus order.

`journaled_map` is the one resumable loop every model stage runs (generation, refinement's evidence, the
embeddings, evaluation's answers and judgements): skip what the task's cache finished, copy what another split
finished, ask the model about the rest through `completed`, commit each group to the cache, count, and advance
the progress bar. A killed task started again redoes at most the groups in flight.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import chain, islice
from typing import Protocol, TypeVar

R = TypeVar("R")
O = TypeVar("O")


class WorkCache(Protocol):
    """A task's cache of model work (io/cache.py: RecordCache, BlobCache)."""

    def finished(self, key: str) -> bool: ...

    def finished_entry(self, key: str) -> tuple | None: ...

    def put_many(self, entries: Iterable[tuple]) -> None: ...


@dataclass
class MapCounts:
    cached: int = 0  # finished in this task's cache: skipped
    copied: int = 0  # finished in another split's cache: copied, not asked
    asked: int = 0  # handed to the model (and committed, whatever came back)


def journaled_map(records: Iterable[R], key: Callable[[R], str], cache: WorkCache,
                  call: Callable[[list[R]], list[O]], entry: Callable[[R, O], tuple], size: int,
                  workers: int | Callable[[], int] = 1, retries: int = 0,
                  failed: Callable[[O], bool] = lambda _o: False, reuse: Iterable[WorkCache] = (),
                  advance: Callable | None = None, note: Callable[[], dict] = dict,
                  counts: MapCounts | None = None) -> Iterator[list[tuple[R, O]]]:
    """Ask `call` about the `records` that `cache` has not finished, committing `entry(record, outcome)` a group
    at a time (see `completed`); yields each committed group for the caller to count.

    A record finished in one of the `reuse` caches (the same work under another split) is copied, `size` at a
    time. `workers` may be a function (it may load the model), called only when a record is left to ask. Every
    record skipped, copied or committed advances `advance(n, **note())`; `counts` receives the tallies."""
    counts = counts if counts is not None else MapCounts()
    reuse = list(reuse)

    def todo():
        copies = []
        for record in records:
            k = key(record)
            if cache.finished(k):
                counts.cached += 1
            elif found := next((e for other in reuse if (e := other.finished_entry(k)) is not None), None):
                copies.append(found)
                counts.copied += 1
                if len(copies) >= size:
                    cache.put_many(copies)
                    copies = []
            else:
                yield record
                continue
            if advance:
                advance(1)
        cache.put_many(copies)

    left = todo()
    first = next(left, _END)
    if first is _END:
        return
    n_workers = workers() if callable(workers) else workers
    for group in completed(chain([first], left), call, size, n_workers, retries, failed):
        cache.put_many(entry(record, outcome) for record, outcome in group)
        counts.asked += len(group)
        if advance:
            advance(len(group), **note())
        yield group


def workers_for(backend) -> int:
    """Records to keep in flight: 1 for a model in this process (it batches internally); for a server client,
    its `concurrent_calls` (the openai backend's max_concurrency)."""
    return max(1, int(getattr(backend, "concurrent_calls", 1) or 1))


def retry_note(backend) -> dict:
    """{"note": "N calls retrying"} while a server client waits to retry calls, for a progress bar; else {}."""
    n = getattr(backend, "waiting_to_retry", 0)
    return {"note": f"{n} call{'s' if n != 1 else ''} retrying"} if n else {"note": ""}


def completed(records: Iterable[R], call: Callable[[list[R]], list[O]], size: int, workers: int = 1,
              retries: int = 0, failed: Callable[[O], bool] = lambda _o: False,
              every_s: float = 2.0) -> Iterator[list[tuple[R, O]]]:
    """Lists of (record, outcome) as they complete: about `size` a list (a commit), and one at least every
    `every_s` seconds while work is in flight (empty when nothing finished: the caller can show what is retrying).

    workers == 1: call(batch) on `size` records at a time, in order; a failed record is asked again at once.
    workers > 1: call([record]) on `workers` threads; a failed record goes to the back of the queue.
    An exception from `call` (a FatalBackendError) stops everything and is raised."""
    if workers <= 1:
        source = iter(records)
        while batch := list(islice(source, size)):
            outcomes = list(call(batch))
            for _ in range(retries):
                again = [i for i, o in enumerate(outcomes) if failed(o)]
                if not again:
                    break
                for i, o in zip(again, call([batch[i] for i in again]), strict=True):
                    outcomes[i] = o
            yield list(zip(batch, outcomes, strict=True))
        return
    source, requeued = iter(records), deque()
    pending: dict = {}  # future -> (record, attempt)
    group: list[tuple[R, O]] = []
    last = time.monotonic()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="xinstruct-call")
    try:
        def fill() -> None:
            while len(pending) < workers:
                if requeued:
                    record, attempt = requeued.popleft()
                else:
                    record = next(source, _END)
                    if record is _END:
                        return
                    attempt = 0
                pending[pool.submit(call, [record])] = (record, attempt)

        fill()
        while pending:
            done, _ = wait(pending, timeout=every_s, return_when=FIRST_COMPLETED)
            for future in done:
                record, attempt = pending.pop(future)
                [outcome] = future.result()
                if failed(outcome) and attempt < retries:
                    requeued.append((record, attempt + 1))
                else:
                    group.append((record, outcome))
            fill()
            if len(group) >= size or not pending or time.monotonic() - last >= every_s:
                yield group
                group, last = [], time.monotonic()
        if group:
            yield group
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


_END = object()
