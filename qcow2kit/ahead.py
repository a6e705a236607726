"""Work done ahead on every core, handed back in order, within a memory bound.

Decompressing a cluster (zlib or zstd) and reading it (pread) release the GIL, so a
thread pool runs them on all cores while the caller writes what came before. Jobs are
started as their items are met and their results taken in the order of the items;
at most `limit` items wait at a time, so no more than that many results are held
(and a result's buffers can be used again once its item is done with).
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Deque, Iterable, Iterator, Optional, Union


def cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Later:
    """An item whose value a job computes; value(result) makes the item from the
    job's result, and release(result), when given, runs once the item is done with."""

    def __init__(self, future: "Future[Any]", value: Callable[[Any], Any],
                 release: Optional[Callable[[Any], None]] = None) -> None:
        self.future = future
        self.value = value
        self.release = release

    def get(self) -> Any:
        return self.value(self.future.result())

    def done(self) -> None:
        """The item's value is no longer used."""
        if self.release is not None:
            self.release(self.future.result())


class Pool:
    """A thread pool for jobs whose items are taken in order (in_order)."""

    def __init__(self, workers: Optional[int] = None) -> None:
        self.workers = cores() if workers is None else workers
        self._executor: Optional[ThreadPoolExecutor] = None

    def submit(self, job: Callable[..., Any], *args: Any) -> Any:
        """A future of job(*args); run now when there is a single worker."""
        if self.workers <= 1:
            future: "Future[Any]" = Future()
            try:
                future.set_result(job(*args))
            except BaseException as exc:  # handed back where the item is taken
                future.set_exception(exc)
            return future
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="qcow2kit")
        return self._executor.submit(job, *args)

    def close(self) -> None:
        """Stop: jobs not started are dropped, running ones finished."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def in_order(items: Iterable[Union[Later, Any]], limit: int) -> Iterator[Any]:
    """items with each Later replaced by its value, in order; while the first waits,
    up to limit items are taken ahead (so their jobs run meanwhile). A Later's value
    is used until the next item is asked for: it is released then."""
    waiting: Deque[Any] = deque()
    for item in items:
        waiting.append(item)
        while waiting and (not isinstance(waiting[0], Later) or len(waiting) > limit):
            yield from _hand(waiting.popleft())
    for first in waiting:
        yield from _hand(first)


def _hand(item: Union[Later, Any]) -> Iterator[Any]:
    if not isinstance(item, Later):
        yield item
        return
    yield item.get()
    item.done()
