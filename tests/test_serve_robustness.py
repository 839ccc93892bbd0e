"""The service under pressure and failure: the bounded queue (503 + Retry-After), graceful shutdown on
SIGTERM, the 500 path, a model call failing inside the micro-batcher, and image limits after base64 decoding.

Slow model calls are test doubles that block on an event (or a file, in the subprocess) until the test
releases them, so what is in flight when is decided by the test, not by timing. Everything is bounded:
every wait has a deadline, servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving_helpers import live_server, tiny_run_dir

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from mmner.data.post import Post  # noqa: E402
from mmner.serve import Limits, create_app  # noqa: E402
from mmner.serve.batcher import MicroBatcher, QueueFull  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_encoder, tiny_corpus) -> Path:
    return tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus)


@pytest.fixture(scope="module")
def tagger(run_dir):
    from mmner import Tagger

    return Tagger.load(run_dir, device="cpu")


def wait_until(condition, seconds: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def one_line_error(response: httpx.Response, status: int) -> str:
    """The documented error shape: JSON {"error": one line, "detail": ...}, no traceback anywhere."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str)
    assert "\n" not in body["error"] and "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


@pytest.fixture
def gated(tagger):
    """The tagger's model call made slow: a call holding a post with the token `hold` blocks until
    `gate` is set (10 s at most). Yields (gate, entered); the real call is restored afterwards."""
    real = tagger.try_tag_posts
    gate, entered = threading.Event(), threading.Event()

    def slow(posts, **options):
        if any("hold" in p.tokens for p in posts):
            entered.set()
            gate.wait(10)
        return real(posts, **options)

    tagger.try_tag_posts = slow
    try:
        yield gate, entered
    finally:
        gate.set()
        del tagger.try_tag_posts


# -- 1. bounded queue ------------------------------------------------------------------------------

def test_micro_batcher_refuses_over_its_bound_and_frees_the_places_of_answered_and_cancelled_requests():
    gate = threading.Event()

    def tag(posts, attention=False):
        gate.wait(10)
        return [{"id": p.id} for p in posts]

    batcher = MicroBatcher(tag, max_batch=2, max_wait_ms=0, max_pending=3)
    try:
        big = batcher.submit([Post(id=f"b{i}", tokens=["x"]) for i in range(5)])  # over the bound, queue empty: in
        with pytest.raises(QueueFull) as refused:
            batcher.submit([Post(id="c", tokens=["x"])])
        assert refused.value.retry_after >= 1 and refused.value.pending == 5 and refused.value.limit == 3
        assert "busy" in str(refused.value) and "\n" not in str(refused.value)
        gate.set()
        assert [r["id"] for r in big.result(5)] == [f"b{i}" for i in range(5)]
        wait_until(lambda: batcher.pending == 0, what="the places of answered posts")
        gate.clear()
        first = batcher.submit([Post(id="1", tokens=["x"])])
        wait_until(first.running, what="the model call")
        queued = batcher.submit([Post(id="2", tokens=["x"]), Post(id="3", tokens=["x"])])
        with pytest.raises(QueueFull):
            batcher.submit([Post(id="4", tokens=["x"])])
        assert queued.cancel()  # a client that went away frees its places at once
        fourth = batcher.submit([Post(id="4", tokens=["x"])])
        gate.set()
        assert first.result(5) == [{"id": "1"}] and fourth.result(5) == [{"id": "4"}]
        assert batcher.queue_state() == {"pending_posts": 0, "max_pending_posts": 3, "refused": 2}
    finally:
        gate.set()
        batcher.close()


def test_a_full_queue_answers_503_with_retry_after_at_once_and_the_admitted_requests_succeed(tagger, gated):
    gate, entered = gated
    app = create_app(tagger, Limits(max_batch=2, max_wait_ms=1, max_queue=4))
    texts = [f"hold visit Rome {i}" if i == 0 else f"meet Obama in Paris {i}" for i in range(10)]

    async def scenario(base: str):
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
            first = asyncio.ensure_future(http.post("/v1/tag", json={"id": "0", "text": texts[0]}))
            await asyncio.to_thread(entered.wait, 10)  # the model call is now busy with post 0
            rest = [asyncio.ensure_future(http.post("/v1/tag", json={"id": str(i), "text": t}))
                    for i, t in enumerate(texts) if i]
            deadline = time.monotonic() + 10
            while sum(t.done() for t in rest) < 6 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            refused_early = [t.result() for t in rest if t.done()]  # answered while the model is still held
            health = (await http.get("/healthz")).json()
            gate.set()
            return refused_early, health, [await first] + list(await asyncio.gather(*rest))

    with live_server(app) as base:
        refused_early, health, responses = asyncio.run(scenario(base))
        after = httpx.get(base + "/healthz", timeout=10).json()
        again = httpx.post(base + "/v1/tag", json={"text": "visit Rome"}, timeout=10)

    assert len(refused_early) == 6 and all(r.status_code == 503 for r in refused_early)
    assert health["queue"] == {"pending_posts": 4, "max_pending_posts": 4, "refused": 6}
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 4 and statuses.count(503) == 6 and statuses[0] == 200
    for text, response in zip(texts, responses):
        if response.status_code == 200:
            assert response.json()["text"] == text and len(response.json()["tags"]) == len(response.json()["tokens"])
        else:
            assert int(response.headers["retry-after"]) >= 1
            assert one_line_error(response, 503).startswith("the service is busy: 4 posts are waiting")
    assert after["queue"] == {"pending_posts": 0, "max_pending_posts": 4, "refused": 6}
    assert again.status_code == 200  # the places are free again


def test_the_default_bound_is_shown_and_admits_a_full_batch_request(tagger):
    with TestClient(create_app(tagger)) as client:
        assert client.get("/healthz").json()["queue"] == {"pending_posts": 0, "max_pending_posts": 512, "refused": 0}
        assert client.get("/v1/model").json()["limits"]["max_queue"] == 512
    with TestClient(create_app(tagger, Limits(max_queue=2))) as client:  # a request over the bound, nothing queued
        response = client.post("/v1/tag/batch", json={"posts": ["visit Rome", "meet Obama", "the game"]})
        assert response.status_code == 200 and response.json()["failed"] == 0


# -- 2. graceful shutdown --------------------------------------------------------------------------

SERVER_SCRIPT = """
import pathlib, sys, time
from mmner.api import Tagger
from mmner.cli import main

marker, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
real = Tagger.try_tag_posts

def slow(self, posts, **options):  # a model call that holds a post with the token `hold` until the test releases it
    if any("hold" in p.tokens for p in posts):
        marker.touch()
        deadline = time.monotonic() + 20
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return real(self, posts, **options)

Tagger.try_tag_posts = slow
sys.argv = ["mmner", "serve", *sys.argv[3:]]
main()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_stops_accepting_and_finishes_the_requests_in_flight(run_dir, tmp_path):
    """`mmner serve` in a child process; SIGTERM while one request is in the model call and another is
    queued behind it: new connections are refused, both requests still get their 200, the app's lifespan
    shutdown (which drains the micro-batcher) completes, and the process exits on the signal."""
    script, marker, release = tmp_path / "serve.py", tmp_path / "in-model", tmp_path / "release"
    script.write_text(SERVER_SCRIPT)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w+")
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    import os

    proc = subprocess.Popen([sys.executable, str(script), str(marker), str(release), str(run_dir), "--port", str(port),
                             "--max-wait-ms", "1", "--threads", "1", "--shutdown-timeout", "20"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=tmp_path)
    answers: dict[str, httpx.Response | BaseException] = {}

    def post(key: str, text: str) -> None:
        try:
            answers[key] = httpx.post(base + "/v1/tag", json={"id": key, "text": text}, timeout=30)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            answers[key] = exc

    def up() -> bool:
        assert proc.poll() is None, log.seek(0) or log.read()
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def refused() -> bool:
        try:
            httpx.get(base + "/healthz", timeout=1)
            return False
        except httpx.ConnectError:
            return True
        except (httpx.ReadError, httpx.RemoteProtocolError):
            # a connection the kernel completed just before the listening socket closed is reset, never
            # served: not yet the refusal waited for, so probe again
            return False

    try:
        wait_until(up, 60, "the server to start")
        first = threading.Thread(target=post, args=("a", "hold visit Rome today"))
        first.start()
        wait_until(marker.exists, 10, "the first request to reach the model")
        second = threading.Thread(target=post, args=("b", "meet Obama in Paris"))
        second.start()
        wait_until(lambda: httpx.get(base + "/healthz", timeout=2).json()["queue"]["pending_posts"] == 2, 10,
                   "the second request to be queued")
        proc.send_signal(signal.SIGTERM)
        wait_until(refused, 10, "the listening socket to close")
        assert proc.poll() is None and not answers  # still running: the requests are in flight
        release.touch()
        first.join(20)
        second.join(20)
        returncode = proc.wait(20)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log.seek(0)
    output = log.read()
    for key, text in (("a", "hold visit Rome today"), ("b", "meet Obama in Paris")):
        response = answers[key]
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200, response.text
        assert response.json()["id"] == key and response.json()["text"] == text
    assert "Application shutdown complete" in output, output
    assert returncode == -signal.SIGTERM, output  # uvicorn re-raises the signal once the shutdown is done


# -- 3. failure paths ------------------------------------------------------------------------------

def test_an_unexpected_model_failure_is_a_one_line_500_and_the_posts_batched_with_it_are_answered(tagger, gated):
    """A post whose model call raises (not a MmnerError) shares a model call with four others: it gets a
    500 in the documented shape, they get their records."""
    gate, entered = gated
    real = tagger.tag_posts
    calls: list[list[str]] = []

    def tag_posts(posts, batch_size=None, attention=None):
        calls.append([p.id for p in posts])
        if any("crash" in p.tokens for p in posts):
            raise RuntimeError("CUDA error: device-side assert triggered\nTraceback (most recent call last):\n  ...")
        return real(posts, batch_size, attention)

    tagger.tag_posts = tag_posts
    try:
        app = create_app(tagger, Limits(max_batch=32, max_wait_ms=1))
        texts = {"h": "hold visit Rome", "x": "crash the game",
                 **{str(i): f"meet Obama in Paris {i}" for i in range(4)}}

        async def scenario(base: str):
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                held = asyncio.ensure_future(http.post("/v1/tag", json={"id": "h", "text": texts["h"]}))
                await asyncio.to_thread(entered.wait, 10)
                others = {k: asyncio.ensure_future(http.post("/v1/tag", json={"id": k, "text": t}))
                          for k, t in texts.items() if k != "h"}
                deadline = time.monotonic() + 10
                while (await http.get("/healthz")).json()["queue"]["pending_posts"] < 6:
                    assert time.monotonic() < deadline, "the requests were not queued"
                    await asyncio.sleep(0.01)
                gate.set()  # all five are queued: they form the next model call together
                return {"h": await held, **{k: await f for k, f in others.items()}}

        with live_server(app) as base:
            responses = asyncio.run(scenario(base))
    finally:
        del tagger.tag_posts
    error = one_line_error(responses["x"], 500)
    assert error == "internal error: RuntimeError: CUDA error: device-side assert triggered"
    for key, response in responses.items():
        if key != "x":
            assert response.status_code == 200 and response.json()["id"] == key, response.text
    assert sorted(calls[1]) == ["0", "1", "2", "3", "x"]  # one model call held all five


def test_a_model_call_that_fails_for_its_whole_batch_fails_that_batch_only():
    """In the micro-batcher: a call that raises fails the requests of its group; the worker goes on, the
    groups before and after are answered; a call returning too few results is an error, not a hang."""
    gate = threading.Event()
    calls: list[list[str]] = []

    def tag(posts, attention=False):
        calls.append([p.id for p in posts])
        if any(p.id == "hold" for p in posts):
            gate.wait(10)
        if any(p.id.startswith("boom") for p in posts):
            raise MemoryError("out of memory")
        if any(p.id == "short" for p in posts):
            return [{"id": p.id} for p in posts[1:]]
        return [{"id": p.id} for p in posts]

    batcher = MicroBatcher(tag, max_batch=8, max_wait_ms=0)
    try:
        held = batcher.submit([Post(id="hold", tokens=["x"])])
        wait_until(lambda: calls, what="the first model call")
        doomed = [batcher.submit([Post(id=f"boom{i}" if i == 0 else f"d{i}", tokens=["x"])]) for i in range(3)]
        gate.set()
        assert held.result(5) == [{"id": "hold"}]
        for f in doomed:
            with pytest.raises(MemoryError, match="out of memory"):
                f.result(5)
        assert calls[1] == ["boom0", "d1", "d2"]
        with pytest.raises(RuntimeError, match="returned 1 results for 2 posts"):
            batcher.submit([Post(id="short", tokens=["x"]), Post(id="y", tokens=["x"])]).result(5)
        assert batcher.submit([Post(id="after", tokens=["x"])]).result(5) == [{"id": "after"}]
        assert batcher.pending == 0
    finally:
        gate.set()
        batcher.close()


def test_a_whole_model_call_failing_is_a_500_and_the_next_requests_are_answered(tagger):
    real = tagger.try_tag_posts

    def try_tag_posts(posts, **options):
        if any("crash" in p.tokens for p in posts):
            raise RuntimeError("the model call failed")
        return real(posts, **options)

    tagger.try_tag_posts = try_tag_posts
    try:
        with TestClient(create_app(tagger)) as client:
            crashed = client.post("/v1/tag/batch", json={"posts": ["visit Rome", "crash the game"]})
            assert one_line_error(crashed, 500) == "internal error: RuntimeError: the model call failed"
            ok = client.post("/v1/tag/batch", json={"posts": ["visit Rome", "meet Obama"]})
            assert ok.status_code == 200 and ok.json()["failed"] == 0
    finally:
        del tagger.try_tag_posts


def test_an_exception_outside_the_model_call_is_a_json_500_too(tagger, monkeypatch):
    import mmner.serve.app as serve_app

    def broken(data, where="image"):
        raise ValueError("decoder state corrupt\n  at line 3")

    monkeypatch.setattr(serve_app, "read_image_bytes", broken)
    with TestClient(create_app(tagger), raise_server_exceptions=False) as client:
        image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
        response = client.post("/v1/tag", json={"text": "visit Rome", "image": image})
        assert one_line_error(response, 500) == "internal error: ValueError: decoder state corrupt"
        assert client.post("/v1/tag", json={"text": "visit Rome"}).status_code == 200


def test_a_base64_image_is_measured_after_decoding(tagger):
    """The bound is on the decoded bytes: 2 bytes over it pass the base64-length pre-check and the body
    limit, and are refused with 413 after decoding; exactly at the bound is decoded and checked as an image."""
    limit = 40 * 1024
    limits = Limits(max_body_bytes=64 * 1024, max_image_bytes=limit)
    over = base64.b64encode(b"\xff" * (limit + 2)).decode()
    at = base64.b64encode(b"\xff" * limit).decode()
    assert len(over) <= limit * 4 // 3 + 4 and len(json.dumps({"text": "visit Rome", "image": over})) < 64 * 1024
    with TestClient(create_app(tagger, limits)) as client:
        for image in (over, "data:image/jpeg;base64," + over):
            response = client.post("/v1/tag", json={"text": "visit Rome", "image": image})
            assert one_line_error(response, 413) == ("image: 40962 bytes decoded, over the limit of 40.0 KiB "
                                                     "(40960 bytes)")
        batch = client.post("/v1/tag/batch", json={"posts": ["visit Rome", {"text": "meet Obama", "image": over}]})
        assert one_line_error(batch, 413).startswith("posts.1.image: 40962 bytes decoded")  # refuses the request
        at_limit = client.post("/v1/tag", json={"text": "visit Rome", "image": at})
        assert one_line_error(at_limit, 422).startswith("image: unreadable image")  # decoded, then not an image
