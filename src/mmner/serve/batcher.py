"""Micro-batching: requests that arrive within a few milliseconds share one model call.

A model call on 16 posts costs little more than on one, so under load the service tags far more
posts per second when concurrent requests are grouped. One worker thread owns the model:

1. it blocks until a request (one or more posts) is queued;
2. it then takes the requests already queued and, when there is company to wait for (a request was
   already queued, or the previous call grouped several), keeps taking them until `max_wait_ms` has
   passed since the first one, or the group holds `max_batch` posts;
3. it tags the whole group in one call (`Tagger.try_tag_posts`, which isolates failing posts), with
   region attention when any request of the group asked for it, and hands each request its own
   results (without the attention it did not ask for).

While the worker is busy with one group, new requests queue up and form the next, so the batch
size grows with the load by itself, and a lone request (the previous call served one, nothing else
is queued) is tagged at once: it waits for no one. The queue is a
thread queue and each request gets a `concurrent.futures.Future`, so the event loop (uvicorn's, or a
test client's) never runs the model and any number of loops may submit.

The queue is bounded by `max_pending` posts (admitted and not yet answered: queued or in the model
call): a `submit` that would go over it raises `QueueFull` at once, with a `retry_after` estimate in
seconds (the pending posts at the recent seconds per post), instead of letting the wait grow without
bound; the service answers it with 503 and a Retry-After header. A request larger than the bound is
admitted when nothing is pending, so that no request is refused forever.

`run_in_worker(fn)` runs any function in the worker thread, e.g. loading the model there: torch's CPU
kernels run in OpenMP thread teams, one per thread that calls them, and with a second team in the process
(the model loaded in the main thread, tagged in the worker) libgomp stops letting its idle threads spin
between kernels once the process holds more OpenMP threads than cores, so every kernel waits to wake
them (`mmner serve` loads the model in the worker for this; docs/results/serve.md measures it).

A model call that raises fails the requests of its group only; the worker goes on with the next
group, and every admitted request's future is resolved, whatever the model call does. `close`
finishes the queued requests before the worker stops (graceful shutdown).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from mmner.api import without_attention
from mmner.data.post import Post

_STOP = object()


@dataclass
class _Request:
    posts: Sequence[Post]
    attention: bool = False
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self.future.set_exception(exc)


@dataclass
class BatchStats:
    calls: int = 0  # model calls
    posts: int = 0  # posts tagged
    requests: int = 0
    largest: int = 0  # most requests grouped into one call
    seconds: float = 0.0  # spent in model calls (seconds / calls: the mean model call, as the service sees it)


class QueueFull(Exception):
    """A `submit` refused because the queue holds `max_pending` posts; try again in `retry_after` seconds."""

    def __init__(self, pending: int, limit: int, retry_after: int) -> None:
        super().__init__(f"the service is busy: {pending} posts are waiting to be tagged (the limit is {limit}); "
                         f"retry in {retry_after} s")
        self.pending, self.limit, self.retry_after = pending, limit, retry_after


class MicroBatcher:
    """Groups concurrent `submit`s into model calls of up to `max_batch` posts (see module docstring)."""

    def __init__(self, tag: Callable[..., list[Any]] | None, max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_pending: int | None = None) -> None:
        self.tag = tag
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_pending = None if max_pending is None else max(1, max_pending)  # None: unbounded
        self.stats = BatchStats()
        self.pending = 0  # posts admitted and not yet answered (queued or in the model call)
        self.refused = 0  # requests refused with QueueFull
        self._seconds_per_post = 0.0  # moving average over model calls, for retry_after
        self._queue: queue.Queue = queue.Queue()
        self._last_group = 1  # requests in the previous model call: several mean company is likely
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, posts: Sequence[Post], attention: bool = False) -> Future:
        """A future of the posts' output records, in order (with region attention if `attention`); it
        raises the first failing post's error. Raises `QueueFull` at once when the posts would take the
        pending ones over `max_pending`. `tag(posts, attention=...)` is called with the group's choice."""
        n = len(posts)
        with self._lock:
            if self.max_pending is not None and self.pending and self.pending + n > self.max_pending:
                self.refused += 1
                raise QueueFull(self.pending, self.max_pending, self._retry_after())
            self.pending += n
        request = _Request(posts, attention)
        request.future.add_done_callback(lambda _: self._release(n))  # answered, failed or cancelled
        self._ensure_worker()
        self._queue.put(request)
        return request.future

    def run_in_worker(self, fn: Callable[[], Any]) -> Future:
        """A future of fn(), called in the worker thread (between model calls)."""
        call = _Call(fn)
        self._ensure_worker()
        self._queue.put(call)
        return call.future

    def queue_state(self) -> dict[str, Any]:
        """For /healthz: pending posts, the bound, and how many requests it refused."""
        with self._lock:
            return {"pending_posts": self.pending, "max_pending_posts": self.max_pending, "refused": self.refused}

    def _release(self, n: int) -> None:
        with self._lock:
            self.pending -= n

    def _retry_after(self) -> int:
        """Seconds until the pending posts are likely tagged (at least 1, at most 60); under the lock."""
        return min(60, max(1, math.ceil(self.pending * self._seconds_per_post)))

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
            if isinstance(first, _Call):
                first.run()
                continue
            group = [first]
            size = len(first.posts)
            company = self._last_group > 1 or not self._queue.empty()
            deadline = time.monotonic() + (self.max_wait if company else 0.0)
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
                if isinstance(item, _Call):
                    item.run()
                    continue
                group.append(item)
                size += len(item.posts)
            try:
                self._tag(group)
            except BaseException as exc:  # noqa: BLE001 - the worker outlives any failure of one group
                for r in group:
                    if not r.future.done():
                        r.future.set_exception(exc)
            if stop:
                return

    def _tag(self, group: list[_Request]) -> None:
        # A request whose client went away is cancelled: skip its posts.
        live = [r for r in group if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        posts = [p for r in live for p in r.posts]
        attention = any(r.attention for r in live)
        started = time.perf_counter()
        try:
            results = list(self.tag(posts, attention=attention))
            if len(results) != len(posts):
                raise RuntimeError(f"the model call returned {len(results)} results for {len(posts)} posts")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request of this group only
            for r in live:
                r.future.set_exception(exc)
            return
        spent = time.perf_counter() - started
        per_post = spent / max(1, len(posts))
        with self._lock:
            self._seconds_per_post = per_post if not self.stats.calls else 0.8 * self._seconds_per_post + 0.2 * per_post
        self.stats.calls += 1
        self.stats.seconds = round(self.stats.seconds + spent, 6)
        self.stats.posts += len(posts)
        self.stats.requests += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        self._last_group = len(group)
        start = 0
        for r in live:
            mine = results[start : start + len(r.posts)]
            start += len(r.posts)
            failed = next((x for x in mine if isinstance(x, BaseException)), None)
            if failed is not None:
                r.future.set_exception(failed)
            else:
                r.future.set_result(mine if r.attention or not attention else [without_attention(x) for x in mine])
