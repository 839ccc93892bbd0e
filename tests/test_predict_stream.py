"""`mmner predict`: streaming, bad lines reported and skipped (never dropped), --resume."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from serving_helpers import tiny_run_dir

GOOD = ["meet Obama Jr at NASA !", "RT @Messi : visit Paris today", "the Olympics game in New Rome",
        "visit London today 🙌", "meet Adele at Google", "RT @ Merkel : visit Texas"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_encoder, tiny_corpus):
    return tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus)


def write_posts(path, n_good: int = 12):
    """JSON lines with a bad JSON line (line 4), an empty post (line 8) and a blank line (line 10)."""
    lines, ids = [], []
    for i in range(n_good):
        if len(lines) + 1 == 4:
            lines.append('{"id": "broken", "text": ')
        if len(lines) + 1 == 8:
            lines.append('{"id": "empty", "text": "   "}')
        if len(lines) + 1 == 10:
            lines.append("")
        lines.append(json.dumps({"id": f"p{i}", "text": GOOD[i % len(GOOD)], "user": i}, ensure_ascii=False))
        ids.append(f"p{i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bad_lines_go_to_the_errors_file_and_the_rest_is_tagged(monkeypatch, capsys, tmp_path, run_dir):
    posts = tmp_path / "posts.jsonl"
    ids = write_posts(posts)
    out = tmp_path / "out" / "preds.jsonl"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(out),
                                   "--batch-size", "4")
    assert code == 2  # not every post was tagged
    assert "tagged 12 posts, 2 failed" in stdout
    assert f"{posts}:4: invalid JSON" in stderr and f"{posts}:8: post empty: empty post (no tokens)" in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 14 posts failed") and f"{posts}:4:" in last
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ids
    for r in records:
        assert r["user"] == int(r["id"][1:])  # the input's own keys are kept
        for ent in r["entities"]:
            assert r["text"][ent["char_start"] : ent["char_end"]] == ent["text"]
    assert any(r["entities"] for r in records)  # the loop above checked at least one entity
    errors = read_jsonl(out.with_name("preds.jsonl.errors.jsonl"))
    assert [(e["line"], e["id"]) for e in errors] == [(4, None), (8, "empty")]
    assert errors[0]["error"].startswith("invalid JSON") and errors[1]["error"] == "post empty: empty post (no tokens)"


def test_resume_continues_a_half_written_output(monkeypatch, capsys, tmp_path, run_dir):
    posts = tmp_path / "posts.jsonl"
    write_posts(posts)
    full = tmp_path / "full.jsonl"
    run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(full), "--quiet")
    full_lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    full_errors = full.with_name("full.jsonl.errors.jsonl").read_text()

    # interrupted after 5 tagged posts and the first bad line, in the middle of writing the 6th post
    part = tmp_path / "part.jsonl"
    part.write_text("".join(full_lines[:5]) + full_lines[5][:17], encoding="utf-8")
    part.with_name("part.jsonl.errors.jsonl").write_text(full_errors.splitlines(keepends=True)[0])
    code, stdout, _ = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(part),
                              "--resume", "--quiet")
    assert code == 2 and "tagged 7 posts, 1 failed, resumed after 5 tagged and 1 failed" in stdout
    assert part.read_text(encoding="utf-8") == "".join(full_lines)
    assert part.with_name("part.jsonl.errors.jsonl").read_text() == full_errors

    # resuming a finished output tags nothing more, and still says that two posts are not in it
    code, stdout, err = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(part),
                                "--resume", "--quiet")
    assert "tagged 0 posts, 0 failed, resumed after 12 tagged and 2 failed (2 failed in all)" in stdout
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: 2 posts failed in earlier runs")
    assert part.read_text(encoding="utf-8") == "".join(full_lines)


def test_resume_refuses_an_output_longer_than_the_input(monkeypatch, capsys, tmp_path, run_dir):
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"text": "visit Rome"}\n')
    out = tmp_path / "out.jsonl"
    out.write_text("{}\n{}\n")
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(out),
                           "--resume", "--quiet")
    assert code == 2 and "more lines than" in err


class RecordingTagger:
    """Stands in for `api.Tagger`: records what reaches the model side, fails posts that ask for it."""

    def __init__(self) -> None:
        self.seen: list = []
        self.calls = 0

    def group_size(self, batch_size=None):
        return batch_size

    def try_tag_posts(self, posts, batch_size=None):
        from mmner.errors import MmnerError

        self.calls += 1
        self.seen.extend((p.id, p.image_path, p.image_id, p.caption) for p in posts[:2] if len(self.seen) < 4)
        return [MmnerError(f"post {p.id}: unreadable image") if p.caption == "fail" else {"id": p.id} for p in posts]


def test_images_and_captions_reach_the_model_and_model_failures_are_isolated(tmp_path):
    from mmner.predict import predict_file

    (tmp_path / "img").mkdir()
    posts = tmp_path / "posts.jsonl"
    posts.write_text(
        '{"id": "a", "text": "x", "image": "img/1.jpg", "caption": "a dog"}\n'
        '{"id": "b", "text": "y", "image": "/abs/2.png"}\n'
        '{"id": "c", "text": "z", "caption": "fail"}\n'
        '{"id": "d", "tokens": ["w"]}\n'
    )
    fake = RecordingTagger()
    summary = predict_file(fake, posts, tmp_path / "o.jsonl", batch_size=8, progress=False)
    assert fake.seen == [("a", str(tmp_path / "img" / "1.jpg"), "1", "a dog"), ("b", "/abs/2.png", "2", None)]
    assert (summary.tagged, summary.failed) == (3, 1)
    assert [r["id"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["a", "b", "d"]
    assert read_jsonl(tmp_path / "o.jsonl.errors.jsonl") == [{"line": 3, "id": "c", "error": "post c: unreadable image"}]


def test_streaming_keeps_memory_flat(tmp_path):
    """20,000 posts through predict_file: memory does not grow with the file (a stub model)."""
    import tracemalloc

    from mmner.predict import predict_file

    posts = tmp_path / "many.jsonl"
    with open(posts, "w") as fh:
        for i in range(20_000):
            fh.write(f'{{"id": "{i}", "text": "post number {i} about Paris and NASA"}}\n')
    fake = RecordingTagger()
    tracemalloc.start()
    summary = predict_file(fake, posts, tmp_path / "o.jsonl", batch_size=64, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.tagged == 20_000 and fake.calls == -(-20_000 // 64)
    assert peak < 2 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the posts held at once would take ~13 MiB


def test_a_fresh_run_drops_a_stale_errors_file(monkeypatch, capsys, tmp_path, run_dir):
    """An errors file left by an earlier run would make a later --resume skip the lines it lists."""
    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(json.dumps({"id": f"p{i}", "text": GOOD[i]}) + "\n" for i in range(4)))
    out = tmp_path / "out.jsonl"
    stale = out.with_name("out.jsonl.errors.jsonl")
    stale.write_text(json.dumps({"line": 2, "id": "p1", "error": "from an older input"}) + "\n")
    code, stdout, _ = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(out), "--quiet")
    assert code == 0 and "tagged 4 posts, 0 failed" in stdout
    assert not stale.exists()
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:1]))  # interrupted after the first post
    code, stdout, _ = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(out),
                              "--resume", "--quiet")
    assert code == 0 and "tagged 3 posts" in stdout
    assert [r["id"] for r in read_jsonl(out)] == ["p0", "p1", "p2", "p3"]  # line 2 is tagged, not skipped
