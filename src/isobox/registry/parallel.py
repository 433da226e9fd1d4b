"""Blob transfers in parallel: the first failure stops the rest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")


def run_all(work: Callable[[T], None], items: Sequence[T], *, workers: int,
            abort: threading.Event, name: str) -> None:
    """Run ``work`` on every item with up to ``workers`` threads. On the first
    error, set ``abort`` (transfers in flight watch it), cancel what has not
    started, and raise that error."""
    if len(items) <= 1 or workers == 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            abort.set()
            for future in futures:
                future.cancel()
            raise
