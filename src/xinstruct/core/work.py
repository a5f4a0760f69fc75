"""Model work on records, handed back as it completes, so that a record that keeps failing holds up no other.

The model stages (generation, grading, embedding's caller, evaluation) ask a model about many records and
commit the answers a group at a time. With an in-process model (llama.cpp, transformers) the model batches
itself: records go to it `size` at a time, in order. With a server client (the openai backend) each record is
its own call on one of `workers` threads: a record whose call is retrying (a 503, a timeout) waits on its own
thread while the others go on, and the ones that finished are handed back at once, to be committed, however long
the slow one takes. A record that failed is asked again at the back of the queue (`retries` times), never in the
way of the rest. Handing back in completion order is safe because the stages write their outputs from the
caches, in corpus order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from itertools import islice
from typing import TypeVar

R = TypeVar("R")
O = TypeVar("O")


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
