"""Micro-batching: requests that arrive within a few milliseconds share one model call.

A model call on 16 posts costs little more than on one, so under load the service tags far more
posts per second when concurrent requests are grouped. One worker thread owns the model:

1. it blocks until a request (one or more posts) is queued;
2. it then keeps taking queued requests until `max_wait_ms` has passed since the first one, or the
   group holds `max_batch` posts;
3. it tags the whole group in one call (`Tagger.try_tag_posts`, which isolates failing posts) and
   hands each request its own results.

While the worker is busy with one group, new requests queue up and form the next, so the batch
size grows with the load by itself, and a lone request waits at most `max_wait_ms`. The queue is a
thread queue and each request gets a `concurrent.futures.Future`, so the event loop (uvicorn's, or a
test client's) never runs the model and any number of loops may submit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from mmner.data.post import Post

_STOP = object()


@dataclass
class _Request:
    posts: Sequence[Post]
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    calls: int = 0  # model calls
    posts: int = 0  # posts tagged
    requests: int = 0
    largest: int = 0  # most requests grouped into one call


class MicroBatcher:
    """Groups concurrent `submit`s into model calls of up to `max_batch` posts (see module docstring)."""

    def __init__(self, tag: Callable[[list[Post]], list[Any]], max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        self.tag = tag
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, posts: Sequence[Post]) -> Future:
        """A future of the posts' output records, in order; it raises the first failing post's error."""
        self._ensure_worker()
        request = _Request(posts)
        self._queue.put(request)
        return request.future

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the queued requests; a later `submit` starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mmner-batcher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            size = len(first.posts)
            deadline = time.monotonic() + self.max_wait
            stop = False
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
                size += len(item.posts)
            self._tag(group)
            if stop:
                return

    def _tag(self, group: list[_Request]) -> None:
        # A request whose client went away is cancelled: skip its posts.
        live = [r for r in group if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        posts = [p for r in live for p in r.posts]
        try:
            results = self.tag(posts)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            for r in live:
                r.future.set_exception(exc)
            return
        self.stats.calls += 1
        self.stats.posts += len(posts)
        self.stats.requests += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        start = 0
        for r in live:
            mine = results[start : start + len(r.posts)]
            start += len(r.posts)
            failed = next((x for x in mine if isinstance(x, BaseException)), None)
            if failed is not None:
                r.future.set_exception(failed)
            else:
                r.future.set_result(mine)
