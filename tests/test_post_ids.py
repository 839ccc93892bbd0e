"""Post ids: one rule in Python, `mmner predict` and HTTP, and a generated id never equals a given one.

Also the HTTP size limits as docs/formats.md states them: base64 makes the body limit bite before the
image limit in JSON requests; an upload reaches the image limit.
"""

from __future__ import annotations

import base64
import json

import pytest

from conftest import run_cli
from mmner.data.post import generated_id, post_id
from mmner.errors import MmnerError
from serving_helpers import tiny_run_dir

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mmner.serve import Limits, create_app  # noqa: E402

# Given ids "1", "#4" (its own number), 2 (a number), and posts without one: plain texts, no key, null.
MIXED = [
    {"id": "1", "text": "meet Obama in Paris"},
    "just a text",
    {"text": "visit Rome today"},
    {"id": "#4", "text": "meet Kevin at NASA"},
    {"id": 2, "tokens": ["visit", "London"]},
    {"id": None, "text": "the game in New York"},
]
EXPECTED = ["1", "#2", "#3", "#4", "2", "#6"]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, tiny_encoder, tiny_corpus):
    from mmner import Tagger

    return Tagger.load(tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus), device="cpu")


@pytest.fixture(scope="module")
def client(tagger):
    with TestClient(create_app(tagger)) as c:  # the default limits, as `mmner serve` starts
        yield c


def _jsonl(path, posts) -> None:
    path.write_text("".join(json.dumps(p if isinstance(p, dict) else {"text": p}) + "\n" for p in posts))


def _predict(monkeypatch, capsys, tagger, src, out) -> tuple[int, list[dict]]:
    code, _, _ = run_cli(monkeypatch, capsys, "predict", str(tagger.run_dir), "-i", str(src), "-o", str(out), "--quiet")
    return code, [json.loads(line) for line in out.read_text().splitlines()]


def test_the_rule():
    assert post_id(None, 3) == generated_id(3) == "#3"
    assert post_id("p7", 3) == "p7" and post_id(7, 3) == "7" and post_id("#3", 3) == "#3"
    assert post_id("#x", 1) == "#x" and post_id("3", 1) == "3" and post_id("#3a", 1) == "#3a"
    with pytest.raises(ValueError, match=r"id '#3': the form #<number> is reserved .* \(this post's would be '#1'\)"):
        post_id("#3", 1)


def test_readme_example_no_longer_repeats_an_id(tagger):
    records = tagger.batch([{"id": "1", "text": "meet Obama in Paris"}, "just a text"])
    assert [r["id"] for r in records] == ["1", "#2"]


def test_python_cli_and_http_give_the_same_ids(tagger, client, tmp_path, monkeypatch, capsys):
    python = [r["id"] for r in tagger.batch(MIXED)]
    streamed = [r["id"] for r in tagger.stream(MIXED, batch_size=2)]  # numbering goes on across model batches
    http = client.post("/v1/tag/batch", json={"posts": MIXED})
    assert http.status_code == 200, http.text
    src = tmp_path / "posts.jsonl"
    _jsonl(src, MIXED)
    code, cli = _predict(monkeypatch, capsys, tagger, src, tmp_path / "out.jsonl")
    assert code == 0
    assert python == streamed == [r["id"] for r in http.json()["results"]] == [r["id"] for r in cli] == EXPECTED
    assert len(set(python)) == len(python)  # no collision
    # an output fed back in keeps its ids: the generated ones are each post's own number
    code, again = _predict(monkeypatch, capsys, tagger, tmp_path / "out.jsonl", tmp_path / "again.jsonl")
    assert code == 0 and [r["id"] for r in again] == EXPECTED
    # one post alone: the id is echoed only when given, in Python and over HTTP
    assert "id" not in tagger("just a text") and "id" not in client.post("/v1/tag", json={"text": "just a text"}).json()
    assert client.post("/v1/tag", json={"id": "#1", "text": "just a text"}).json()["id"] == "#1"


def test_a_given_id_that_could_collide_is_refused_everywhere(tagger, client, tmp_path, monkeypatch, capsys):
    posts = ["just a text", {"id": "#1", "text": "visit Rome"}, {"text": "meet Obama"}]
    with pytest.raises(MmnerError, match="id '#1': the form #<number> is reserved"):
        tagger.batch(posts)
    http = client.post("/v1/tag/batch", json={"posts": posts}).json()
    assert http["failed"] == 1 and [r.get("id") for r in http["results"]] == ["#1", "#1", "#3"]
    assert http["results"][1]["error"].startswith("posts.1.id '#1': the form #<number> is reserved")
    assert "tags" in http["results"][0] and "error" not in http["results"][0]
    src = tmp_path / "posts.jsonl"
    _jsonl(src, posts)
    out = tmp_path / "out.jsonl"
    code, cli = _predict(monkeypatch, capsys, tagger, src, out)
    assert code == 2 and [r["id"] for r in cli] == ["#1", "#3"]
    (error,) = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert error["line"] == 2 and error["id"] == "#1" and "is reserved for posts given without an id" in error["error"]
    single = client.post("/v1/tag", json={"id": "#2", "text": "visit Rome"})
    assert single.status_code == 422 and single.json()["error"].startswith("id '#2': the form #<number>")


def test_base64_makes_the_body_limit_bite_before_the_image_limit(client):
    limits = Limits()
    assert (limits.max_body_bytes, limits.max_image_bytes) == (10 * 2**20, 8 * 2**20)
    # the largest image a JSON body of 10 MiB can carry: 3/4 of it, 7.5 MiB, less the rest of the body
    assert limits.max_body_bytes // 4 * 3 == 7_864_320 and -(-limits.max_image_bytes // 3) * 4 == 11_184_812
    image = b"\xff\xd8\xff" + bytes(7_900_000)  # under the 8 MiB image limit, over 10 MiB as base64
    response = client.post("/v1/tag", json={"text": "visit Rome", "image": base64.b64encode(image).decode()})
    assert response.status_code == 413 and response.json()["error"].startswith("request body too large")
    # a multipart upload carries the file's own bytes: the image limit is what refuses it
    big = bytes(limits.max_image_bytes + 1)
    upload = client.post("/v1/tag/upload", data={"text": "visit Rome"}, files={"image": ("a.jpg", big, "image/jpeg")})
    assert upload.status_code == 413 and upload.json()["error"].startswith("image:")
    assert "8.0 MiB" in upload.json()["error"]
