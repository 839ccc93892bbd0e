"""The HTTP service: every endpoint, every refusal with its status and message, micro-batching.

In-process tests use FastAPI's TestClient; the concurrency test runs a real uvicorn server on a free
loopback port in a thread and sends 200 concurrent requests with httpx.AsyncClient.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
import time

import pytest

from conftest import SHARED_DATA
from mmner.data.readers import tokenize_post
from serving_helpers import live_server, tiny_run_dir

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mmner.serve import Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, tiny_encoder, tiny_corpus):
    from mmner import Tagger

    return Tagger.load(tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus), device="cpu")


@pytest.fixture(scope="module")
def client(tagger):
    limits = Limits(max_chars=300, max_body_bytes=64 * 1024, max_image_bytes=40 * 1024, max_posts=8)
    with TestClient(create_app(tagger, limits)) as c:
        yield c


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    sample = next((SHARED_DATA / "images" / "twitter2017_samples").rglob("*.jpg"), None)
    from PIL import Image

    im = Image.open(sample) if sample is not None else Image.new("RGB", (64, 48), (10, 120, 200))
    im.thumbnail((160, 160))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def check_record(text: str, record: dict) -> None:
    assert record["text"] == text and record["tokens"] == tokenize_post(text)
    assert len(record["tags"]) == len(record["tokens"])
    for ent in record["entities"]:
        assert text[ent["char_start"] : ent["char_end"]] == ent["text"]


def test_health_model_and_page(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["model"] == "bert-crf" and info["visual_source"] == "none" and info["relation_score"] is False
    assert info["labels"]["types"] == ["LOC", "ORG", "OTHER", "PER"] and info["limits"]["max_chars"] == 300
    assert info["metrics"]["test"]["gold_entities"] > 0 and "encoder" in info
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="tagged"' in page.text and "attention" in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)  # nothing from a CDN


def test_tag_one_batch_and_upload(client, jpeg):
    text = "RT @Messi:  visit #Paris today 🙌 https://t.co/x"
    one = client.post("/v1/tag", json={"text": text})
    assert one.status_code == 200
    check_record(text, one.json())
    assert "id" not in one.json()

    with_image = client.post("/v1/tag", json={"id": "p", "text": text, "caption": "a man",
                                              "image": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()})
    assert with_image.status_code == 200
    assert with_image.json()["id"] == "p" and with_image.json()["caption"] == "a man"
    assert with_image.json()["tags"] == one.json()["tags"]  # a text-only model

    batch = client.post("/v1/tag/batch", json={"posts": [{"text": text}, {"id": 5, "tokens": ["visit", "Rome"]}]})
    assert batch.status_code == 200
    results = batch.json()["results"]
    check_record(text, results[0])
    assert results[1]["id"] == "5" and results[1]["tokens"] == ["visit", "Rome"]

    upload = client.post("/v1/tag/upload", data={"text": text, "caption": "a man"},
                         files={"image": ("post.jpg", jpeg, "image/jpeg")})
    assert upload.status_code == 200
    check_record(text, upload.json())
    no_image = client.post("/v1/tag/upload", data={"text": text})
    assert no_image.status_code == 200 and no_image.json()["tags"] == one.json()["tags"]


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        ({"content": b'{"text": "visit', "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
        ({"content": b"text=hello", "headers": {"content-type": "text/plain"}}, 422, "expected a JSON object"),
        ({"json": ["visit Rome"]}, 422, "body: expected a JSON object"),
        ({"json": {"text": 5}}, 422, "text: Input should be a valid string"),
        ({"json": {"tokens": "visit Rome"}}, 422, "tokens: Input should be a valid list"),
        ({"json": {"txt": "visit Rome"}}, 422, 'post: needs "text"'),  # a misspelt key is no silent empty post
        ({"json": {}}, 422, 'post: needs "text"'),
        ({"json": {"text": ""}}, 422, "text: empty text"),
        ({"json": {"text": " \n\t "}}, 422, "text: empty text"),
        ({"json": {"tokens": []}}, 422, "tokens: empty list"),
        ({"json": {"text": "x" * 301}}, 422, "text: 301 characters, over the limit of 300"),
        ({"json": {"text": "visit Rome", "image": "not base64!"}}, 422, "image: not valid base64"),
        ({"json": {"text": "visit Rome", "image": base64.b64encode(b"GIF89a nope").decode()}}, 422,
         "image: unreadable image"),
        ({"json": {"text": "visit Rome", "image": base64.b64encode(b"\xff" * 45_000).decode()}}, 413,
         "image: larger than the limit of 40.0 KiB"),
        ({"json": {"text": "visit Rome " * 7000}}, 413, "request body too large"),
    ],
)
def test_tag_refusals(client, kwargs, status, message):
    response = client.post("/v1/tag", **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_batch_refusals(client):
    too_many = client.post("/v1/tag/batch", json={"posts": [{"text": "a"}] * 9})
    assert too_many.status_code == 413 and "9 posts, over the limit of 8" in too_many.json()["error"]
    empty = client.post("/v1/tag/batch", json={"posts": []})
    assert empty.status_code == 422 and "posts: empty list" in empty.json()["error"]
    # one bad post is reported in its place; the others are tagged (as `predict` does)
    bad = client.post("/v1/tag/batch", json={"posts": [{"text": "a"}, {"id": "b", "text": "  "}, {"text": 1}]})
    assert bad.status_code == 200, bad.text
    results = bad.json()["results"]
    assert bad.json()["failed"] == 2 and results[0]["tokens"] == ["a"]
    assert results[1] == {"id": "b", "error": "posts.1.text: empty text"}
    assert results[2]["error"].startswith("posts.2.text: Input should be a valid string") and "id" not in results[2]


def test_oversize_body_without_a_length_header(client):
    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    response = client.post("/v1/tag", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "request body too large: the limit is 64.0 KiB"


def test_upload_refusals(client, jpeg):
    text_file = client.post("/v1/tag/upload", data={"text": "visit Rome"},
                            files={"image": ("notes.txt", b"just some text", "text/plain")})
    assert text_file.status_code == 415
    assert text_file.json()["error"] == ("image 'notes.txt': unreadable image (not an image file Pillow can identify) "
                                         "(uploaded as text/plain)")
    truncated = client.post("/v1/tag/upload", data={"text": "visit Rome"},
                            files={"image": ("cut.jpg", jpeg[: len(jpeg) // 3], "image/jpeg")})
    assert truncated.status_code == 415 and "cut.jpg" in truncated.json()["error"]
    empty_file = client.post("/v1/tag/upload", data={"text": "visit Rome"}, files={"image": ("e.jpg", b"", "image/jpeg")})
    assert empty_file.status_code == 415 and "empty file" in empty_file.json()["error"]
    no_text = client.post("/v1/tag/upload", files={"image": ("post.jpg", jpeg, "image/jpeg")})
    assert no_text.status_code == 422 and no_text.json()["error"] == "text: Field required"
    blank = client.post("/v1/tag/upload", data={"text": "  "}, files={"image": ("post.jpg", jpeg, "image/jpeg")})
    assert blank.status_code == 422 and blank.json()["error"] == "text: empty text"
    huge = client.post("/v1/tag/upload", data={"text": "visit Rome"},
                       files={"image": ("big.jpg", b"\xff" * 50_000, "image/jpeg")})
    assert huge.status_code == 413 and "over the limit" in huge.json()["error"]


def test_a_post_the_model_cannot_tag_is_a_422_and_others_are_unaffected(tagger):
    from mmner.errors import MmnerError

    real = tagger.tag_posts

    def tag_posts(posts, batch_size=None, attention=None):
        if any("boom" in p.tokens for p in posts):
            raise MmnerError("post 0: no visual input for visual.source=grid: the post has no image file")
        return real(posts, batch_size, attention)

    tagger.tag_posts = tag_posts
    try:
        with TestClient(create_app(tagger)) as c:
            bad = c.post("/v1/tag", json={"text": "boom"})
            assert bad.status_code == 422 and "no visual input" in bad.json()["error"]
            assert c.post("/v1/tag", json={"text": "visit Rome"}).status_code == 200
    finally:
        del tagger.tag_posts


def test_micro_batcher_groups_concurrent_requests_and_isolates_failures():
    from mmner.data.post import Post
    from mmner.errors import MmnerError
    from mmner.serve.batcher import MicroBatcher

    calls: list[int] = []

    def tag(posts, attention=False):
        calls.append(len(posts))
        time.sleep(0.01)
        return [MmnerError(f"post {p.id}: bad") if p.id == "bad" else {"id": p.id} for p in posts]

    batcher = MicroBatcher(tag, max_batch=16, max_wait_ms=20)
    futures = {}

    def submit(i):
        futures[i] = batcher.submit([Post(id=str(i) if i != 13 else "bad", tokens=["x"])])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, f in futures.items():
        if i == 13:
            with pytest.raises(MmnerError, match="post bad: bad"):
                f.result(5)
        else:
            assert f.result(5) == [{"id": str(i)}]
    assert sum(calls) == 40 and max(calls) <= 16 and len(calls) < 40 and batcher.stats.largest > 1
    batcher.close()
    assert batcher.submit([Post(id="again", tokens=["x"])]).result(5) == [{"id": "again"}]  # restarts
    batcher.close()


def test_a_lone_request_waits_for_no_one_while_company_is_still_awaited():
    """One request at a time: each is tagged at once, not after max_wait_ms; after a call that served
    several requests, the next one waits for company again (up to max_wait_ms)."""
    from mmner.data.post import Post
    from mmner.serve.batcher import MicroBatcher

    calls: list[int] = []
    release = threading.Event()

    def tag(posts, attention=False):
        calls.append(len(posts))
        release.wait(5)
        return [{"id": p.id} for p in posts]

    batcher = MicroBatcher(tag, max_batch=16, max_wait_ms=400)
    release.set()
    started = time.perf_counter()
    for i in range(5):
        assert batcher.submit([Post(id=str(i), tokens=["x"])]).result(5) == [{"id": str(i)}]
    assert (time.perf_counter() - started) < 5 * 0.4 / 2, "lone requests waited for company"
    assert calls == [1] * 5
    # Hold the worker in a call; three requests queue behind it and share the next call.
    release.clear()
    first = batcher.submit([Post(id="a", tokens=["x"])])
    while not calls[5:]:
        time.sleep(0.001)
    queued = [batcher.submit([Post(id=f"q{i}", tokens=["x"])]) for i in range(3)]
    release.set()
    assert first.result(5) == [{"id": "a"}] and [f.result(5)[0]["id"] for f in queued] == ["q0", "q1", "q2"]
    assert calls[5:] == [1, 3]
    # The previous call grouped three: the next lone request waits for company for max_wait_ms.
    started = time.perf_counter()
    batcher.submit([Post(id="late", tokens=["x"])]).result(5)
    assert time.perf_counter() - started >= 0.4 * 0.9
    batcher.close()


def test_a_group_computes_attention_once_for_those_who_asked():
    """Requests that share a model call: attention is computed when any asked, and only they get it."""
    from mmner.data.post import Post
    from mmner.serve.batcher import MicroBatcher

    calls: list[tuple[int, bool]] = []
    release = threading.Event()

    def tag(posts, attention=False):
        calls.append((len(posts), attention))
        release.wait(5)
        extra = {"attention": {"weights": [1.0]}} if attention else {}
        return [{"id": p.id, "entities": [{"type": "PER", **extra}], **extra} for p in posts]

    batcher = MicroBatcher(tag, max_batch=16, max_wait_ms=50)
    first = batcher.submit([Post(id="first", tokens=["x"])])
    while not calls:
        time.sleep(0.001)
    plain = batcher.submit([Post(id="plain", tokens=["x"])])
    asked = batcher.submit([Post(id="asked", tokens=["x"])], attention=True)
    release.set()
    assert first.result(5) == [{"id": "first", "entities": [{"type": "PER"}]}]
    assert plain.result(5) == [{"id": "plain", "entities": [{"type": "PER"}]}]
    assert asked.result(5)[0]["attention"] == {"weights": [1.0]} and "attention" in asked.result(5)[0]["entities"][0]
    assert calls == [(1, False), (2, True)]
    batcher.close()


def test_the_model_is_loaded_and_called_in_one_worker_thread():
    """run_in_worker: a function runs in the thread that later makes the model calls (so torch has one
    OpenMP team in the process); its error reaches the caller and the worker goes on."""
    from mmner.data.post import Post
    from mmner.errors import MmnerError
    from mmner.serve.batcher import MicroBatcher

    seen: list[str] = []

    def tag(posts, attention=False):
        seen.append(threading.current_thread().name)
        return [{"id": p.id} for p in posts]

    batcher = MicroBatcher(None, max_batch=4, max_wait_ms=0)
    loader = batcher.run_in_worker(lambda: threading.current_thread().name).result(5)

    def fails():
        raise MmnerError("run/: no model.safetensors")

    with pytest.raises(MmnerError, match="no model.safetensors"):
        batcher.run_in_worker(fails).result(5)
    batcher.tag = tag
    assert batcher.submit([Post(id="a", tokens=["x"])]).result(5) == [{"id": "a"}]
    assert seen == [loader] and loader != threading.current_thread().name
    batcher.close()


def test_200_concurrent_requests_on_the_loopback(tagger):
    """A real uvicorn server (thread, free port); 200 concurrent requests from httpx.AsyncClient."""
    import httpx

    app = create_app(tagger, Limits(max_batch=32, max_wait_ms=5))
    texts = [f"RT @Messi : visit Paris today {i} #{'x' * (i % 5 + 1)}" if i % 2 else f"meet Obama at NASA ! {i} 🙌"
             for i in range(200)]

    async def hammer(base: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
            return await asyncio.gather(*(http.post("/v1/tag", json={"id": str(i), "text": t})
                                          for i, t in enumerate(texts)))

    with live_server(app) as base:
        responses = asyncio.run(hammer(base))
        stats = httpx.get(base + "/healthz").json()["batching"]
    assert [r.status_code for r in responses] == [200] * 200
    for i, (text, response) in enumerate(zip(texts, responses)):
        record = response.json()
        assert record["id"] == str(i)
        check_record(text, record)
    assert stats["posts"] == 200 and stats["calls"] < 200 and stats["largest"] > 1, stats
    assert 0 < stats["seconds"] < 60, stats  # time spent in the model calls


def test_the_same_posts_mean_the_same_in_python_on_the_command_line_and_over_http(tagger, client, tmp_path,
                                                                                  monkeypatch, capsys):
    """Extra keys, plain texts and a bad post among good ones: one outcome in all three."""
    import json

    from conftest import run_cli

    posts = [{"id": "p1", "text": "meet Kevin in Rome today", "lang": "en", "user": 7},
             "visit the game",
             {"id": "p3", "text": "   "},
             {"id": "p4", "tokens": ["meet", "Kevin"], "caption": "a man"}]
    # Python: a bad post raises for the whole call, so the good ones go alone; plain texts get their position
    good = [posts[0], posts[1], posts[3]]
    python = tagger.batch(good)
    # HTTP: one request, the bad post reported in its place
    http = client.post("/v1/tag/batch", json={"posts": posts}).json()
    assert http["failed"] == 1 and http["results"][2] == {"id": "p3", "error": "posts.2.text: empty text"}
    # CLI: JSON lines, the bad line to the errors file
    src = tmp_path / "posts.jsonl"
    src.write_text("".join(json.dumps(p if isinstance(p, dict) else {"text": p}) + "\n" for p in posts))
    out = tmp_path / "out.jsonl"
    code, _, _ = run_cli(monkeypatch, capsys, "predict", str(tagger.run_dir), "-i", str(src), "-o", str(out), "--quiet")
    assert code == 2  # a post failed
    cli = [json.loads(line) for line in out.read_text().splitlines()]

    def same(record: dict) -> dict:
        return {k: record.get(k) for k in ("tokens", "tags", "entities", "lang", "user", "caption")}

    assert [same(r) for r in python] == [same(r) for i, r in enumerate(http["results"]) if i != 2]
    assert [same(r) for r in python] == [same(r) for r in cli]
    assert python[0]["lang"] == "en" and python[0]["user"] == 7  # the input's own keys, kept everywhere
    assert [r["id"] for r in (python[0], http["results"][0], cli[0])] == ["p1"] * 3
