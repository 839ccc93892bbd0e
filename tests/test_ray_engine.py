"""`--engine ray`: `mmner predict` and `mmner features extract` on a local Ray cluster (2 CPUs, 2 workers)
write what the local engine writes: the same records, errors files, resume, feature cache entries."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from serving_helpers import tiny_run_dir

TEXTS = ["meet Obama Jr at NASA !", "RT @Messi : visit Paris today", "the Olympics game in New Rome",
         "visit London today 🙌", "meet Adele at Google", "RT @ Merkel : visit Texas", "game in Rome with the UN"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_encoder, tiny_corpus):
    return tiny_run_dir(tmp_path_factory, tiny_encoder, tiny_corpus)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module; `mmner` joins it (a cluster it did not start, it leaves running)."""
    ray = pytest.importorskip("ray")
    from mmner.ray_engine import _restore

    sigterm, environ = signal.getsignal(signal.SIGTERM), dict(os.environ)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
    _restore(sigterm, environ)  # ray.init's SIGTERM handler and variables would outlive the cluster


def bad_line(i: int) -> bytes:
    """Lines that are not posts, each as the local engine reports it."""
    return [b'{"id": "broken", "text": ', b'{"id": "e%d", "text": "   "}' % i, b'{"id": "t%d", "text": 5}' % i,
            b'{"text": "caf\xe9 in Paris"}', b'[1, 2]', b'{"id": "#3", "text": "visit Rome"}'][i % 6]


def write_posts(path, n: int, seed: int) -> None:
    """n lines: mostly posts (with ids or without, text or tokens, an image path, a key of their own),
    every 17th a bad line and every 23rd blank."""
    rng = random.Random(seed)
    lines = []
    for i in range(1, n + 1):
        if i % 17 == 0:
            lines.append(bad_line(i // 17))
            continue
        if i % 23 == 0:
            lines.append(b"")
            continue
        post: dict = {"text": rng.choice(TEXTS), "user": i}
        if i % 5:
            post["id"] = f"p{i}"
        if i % 7 == 0:
            post["tokens"] = post["text"].split()
        if i % 11 == 0:
            post["image"] = f"img/{i}.jpg"
        lines.append(json.dumps(post, ensure_ascii=False).encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture(scope="module")
def posts(tmp_path_factory, run_dir, monkeypatch_module):
    """A folder of two inputs and what `mmner predict` (the local engine) writes for each."""
    root = tmp_path_factory.mktemp("ray-posts")
    monkeypatch_module.chdir(root)  # relative paths, as a user types them
    write_posts(root / "posts" / "a.jsonl", 300, seed=1)
    write_posts(root / "posts" / "sub" / "b.jsonl", 40, seed=2)
    local = {}
    for name in ("a.jsonl", "sub/b.jsonl"):
        out = root / "local" / name
        code = _cli("predict", str(run_dir), "-i", f"posts/{name}", "-o", f"local/{name}", "--batch-size", "8",
                    "--quiet")[0]
        assert code == 2  # each input has bad lines
        local[name] = (out.read_bytes(), out.with_name(out.name + ".errors.jsonl").read_bytes())
    return root, local


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _cli(*args: str) -> tuple[int, str, str]:
    """`mmner ARGS...` in-process, without pytest's per-test fixtures (module fixtures use it too)."""
    import contextlib
    import io

    from mmner.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["mmner", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def test_a_folder_on_ray_gives_the_local_outputs_and_resumes(ray_cluster, run_dir, posts):
    """One run over a folder: a.jsonl resumes an output cut while its 101st record was written (with
    the errors up to line 119, past the cut), sub/b.jsonl starts from nothing; both end as the local ones."""
    root, local = posts
    full, full_errors = local["a.jsonl"]
    lines, error_lines = full.splitlines(keepends=True), full_errors.splitlines(keepends=True)
    (root / "ray-out").mkdir()
    (root / "ray-out" / "a.jsonl").write_bytes(b"".join(lines[:100]) + lines[100][:20])
    (root / "ray-out" / "a.jsonl.errors.jsonl").write_bytes(b"".join(error_lines[:7]))
    code, stdout, stderr = _cli("predict", str(run_dir), "-i", "posts", "-o", "ray-out", "--engine", "ray",
                                "--workers", "2", "--batch-size", "8", "--resume", "--quiet")
    assert code == 2, stderr
    tagged = sum(len(out.splitlines()) for out, _ in local.values())
    failed = sum(len(errs.splitlines()) for _, errs in local.values())
    assert (f"tagged {tagged - 100} posts, {failed - 7} failed, resumed after 100 tagged and 7 failed ({failed} failed "
            "in all) (errors: ray-out/**/*.errors.jsonl) -> ray-out") in stdout
    first = 'posts/a.jsonl:136: post t8: "text" must be a string'
    assert stderr.strip().splitlines()[-1].startswith(f"error: {failed - 7} of {tagged - 100 + failed - 7} posts "
                                                      f"failed, the first at {first}")
    for name, (out, errs) in local.items():
        assert (root / "ray-out" / name).read_bytes() == out, name
        assert (root / "ray-out" / (name + ".errors.jsonl")).read_bytes() == errs, name
    records = [json.loads(line) for line in local["a.jsonl"][0].splitlines()]
    assert records[4]["id"] == "#5" and records[10]["image"] == "posts/img/11.jpg"  # generated ids, relative images
    assert any(r["entities"] for r in records)
    errors = [json.loads(line) for line in local["a.jsonl"][1].splitlines()]
    assert [e["line"] for e in errors[:6]] == [17, 34, 51, 68, 85, 102]
    assert errors[0]["error"] == "post e1: empty post (no tokens)" and errors[2]["error"].startswith("not valid UTF-8")
    assert errors[4]["error"].startswith("id '#3'") and errors[5]["error"].startswith("invalid JSON")


class FlakyTagger:
    """Stands in for `api.Tagger`: fails every post whose user number is a multiple of 3."""

    def group_size(self, batch_size=None):
        from mmner.api import SORT_GROUP

        return (batch_size or 4) * SORT_GROUP

    def try_tag_posts(self, posts, batch_size=None):
        from mmner.errors import MmnerError

        return [MmnerError(f"post {p.id}: unreadable image") if p.meta["user"] % 3 == 0
                else {"id": p.id, "u": p.meta["user"]} for p in posts]


def test_failures_reach_the_errors_file_in_the_local_order(tmp_path, monkeypatch):
    """Model failures are listed at the end of their model batch, bad lines at once: the writer gives the
    local engine's errors file from rows computed chunk by chunk (here without Ray, a stand-in model)."""
    pa = pytest.importorskip("pyarrow")
    from mmner import ray_engine
    from mmner.predict import predict_file

    monkeypatch.chdir(tmp_path)
    write_posts(tmp_path / "in.jsonl", 150, seed=3)
    predict_file(FlakyTagger(), "in.jsonl", "local.jsonl", batch_size=4, progress=False)
    worker = ray_engine._PredictWorker.__new__(ray_engine._PredictWorker)
    worker.tagger, worker.batch_size, worker.fatal = FlakyTagger(), 4, None

    def run(output, resume=False):
        plans, chunks, summary = ray_engine._plan_inputs("in.jsonl", output, None, resume, 4)
        blocks = [worker(pa.Table.from_pylist([chunk])) for chunk in chunks]
        ray_engine._write_results(plans, summary, 4, False, blocks)
        return summary

    summary = run("ray.jsonl")
    local_errors = (tmp_path / "local.jsonl.errors.jsonl").read_text()
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert (tmp_path / "ray.jsonl.errors.jsonl").read_text() == local_errors
    lines = [json.loads(line)["line"] for line in local_errors.splitlines()]
    assert lines != sorted(lines)  # a bad line comes before the model failures of its batch
    assert summary.failed == len(lines)

    # an output cut anywhere: the ray engine resumes it as the local engine does
    out = (tmp_path / "local.jsonl").read_text().splitlines(keepends=True)
    for name in ("ray.jsonl", "again.jsonl"):
        (tmp_path / name).write_text("".join(out[:30]) + out[30][:5])
        (tmp_path / f"{name}.errors.jsonl").write_text("".join(local_errors.splitlines(keepends=True)[:9]))
    summary = run("ray.jsonl", resume=True)
    assert (summary.resumed, summary.resumed_failed) == (30, 9)
    predict_file(FlakyTagger(), "in.jsonl", "again.jsonl", batch_size=4, progress=False, resume=True)
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "again.jsonl").read_text()
    assert (tmp_path / "ray.jsonl.errors.jsonl").read_text() == (tmp_path / "again.jsonl.errors.jsonl").read_text()


def test_a_worker_that_cannot_load_the_run_ends_the_command_on_one_line(tmp_path, monkeypatch, run_dir):
    """Ray passes on a worker's exception only as traceback text: the worker answers with its error instead."""
    import shutil

    from mmner import ray_engine
    from mmner.errors import MmnerError

    monkeypatch.chdir(tmp_path)
    shutil.copytree(run_dir, "run")
    Path("run/labels.json").write_text('{"scheme": "BIO", "types": ["PER"]}')  # config.yaml still reads
    write_posts(tmp_path / "in.jsonl", 5, seed=4)
    worker = ray_engine._PredictWorker("run", 4, "cpu", 1, str(tmp_path))
    plans, chunks, summary = ray_engine._plan_inputs("in.jsonl", "out.jsonl", None, False, 4)
    with pytest.raises(MmnerError, match=r"^on a Ray worker: .*unknown scheme 'BIO'"):
        ray_engine._write_results(plans, summary, 4, False, [worker(pa_table(chunks))])


def pa_table(rows):
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


def test_features_extract_on_ray_fills_the_same_cache(ray_cluster, tiny_grid, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "photos" / "3.jpg").write_bytes((tmp_path / "photos" / "3.png").read_bytes())  # a duplicate id
    args = ["features", "extract", "--images", "photos", "--encoder", "resnet", "--weights", tiny_grid["grid_weights"],
            "--batch-size", "3", "--quiet"]
    code, stdout, _ = _cli(*args, "--output", "local-cache")
    assert code == 0 and "encoded 7 images, 0 from cache, 2 skipped" in stdout
    code, stdout, err = _cli(*args, "--output", "ray-cache", "--engine", "ray", "--workers", "2")
    assert code == 0 and "encoded 7 images, 0 from cache, 2 skipped" in stdout, err
    assert (tmp_path / "ray-cache" / "skipped.txt").read_text() == (tmp_path / "local-cache" / "skipped.txt").read_text()
    local = sorted(p.relative_to(tmp_path / "local-cache") for p in (tmp_path / "local-cache").rglob("*.npy"))
    assert len(local) == 7
    assert local == sorted(p.relative_to(tmp_path / "ray-cache") for p in (tmp_path / "ray-cache").rglob("*.npy"))
    for rel in local:
        a, b = np.load(tmp_path / "local-cache" / rel), np.load(tmp_path / "ray-cache" / rel)
        assert a.dtype == b.dtype == np.float16
        np.testing.assert_allclose(a, b, atol=2e-3)  # batches of other posts: float16 rounding at most
    code, stdout, _ = _cli(*args, "--output", "ray-cache", "--engine", "ray")
    assert code == 0 and "encoded 0 images, 7 from cache, 2 skipped" in stdout


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, capsys, tmp_path, run_dir):
    from mmner.ray_engine import RAY_MISSING

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"text": "visit Rome"}\n')
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run_dir), "-i", str(posts), "-o", str(tmp_path / "o"),
                           "--engine", "ray")
    assert code == 2 and err.strip().splitlines() == [f"error: {RAY_MISSING}"]
    assert 'pip install "mmner[ray]"' in RAY_MISSING
    code, _, err = run_cli(monkeypatch, capsys, "features", "extract", "--images", str(tmp_path), "--output",
                           str(tmp_path / "c"), "--engine", "ray")
    assert code == 2 and err.strip().splitlines() == [f"error: {RAY_MISSING}"]


def test_usage_errors_are_one_line(monkeypatch, capsys, tmp_path, run_dir):
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"text": "visit Rome"}\n')
    base = ["predict", str(run_dir), "-i", str(posts), "-o", str(tmp_path / "o.jsonl")]
    for args, message in [
        (["--workers", "2"], "error: --workers: only with --engine ray"),
        (["--engine", "spark"], "error: --engine spark: choose local or ray"),
    ]:
        code, _, err = run_cli(monkeypatch, capsys, *base, *args)
        assert code == 2 and err.strip().splitlines() == [message]


def test_inputs_are_a_file_a_folder_or_a_pattern(tmp_path, monkeypatch):
    from mmner.errors import MmnerError
    from mmner.ray_engine import _plan_inputs, input_files

    monkeypatch.chdir(tmp_path)
    for name in ("in/a.jsonl", "in/x/b.jsonl", "in/.hidden/c.jsonl", "in/notes.txt", "in/x/d.conll"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert input_files("in/a.jsonl") == ([Path("in/a.jsonl")], None)
    files, root = input_files("in")
    assert [f.as_posix() for f in files] == ["in/a.jsonl", "in/x/b.jsonl"] and root.as_posix() == "in"
    files, root = input_files("in/**/*.jsonl")
    assert [f.relative_to(root).as_posix() for f in files] == ["a.jsonl", "x/b.jsonl"] and root.as_posix() == "in"
    for bad, message in [("in/x/*", "reads JSON lines"), ("in/x/d.conll", "--engine local"),
                         ("in/*.csv", "matches no file"), ("nowhere.jsonl", "no such file"),
                         ("in/x/../notes.txt", "reads JSON lines")]:
        with pytest.raises(MmnerError, match=message):
            input_files(bad)
    for output, errors, message in [("in/tagged", None, "inside the input folder"), ("tagged", "e.jsonl", "--errors"),
                                     ("in/notes.txt", None, "not a folder")]:
        with pytest.raises(MmnerError, match=message):
            _plan_inputs("in", output, errors, False, 4)
    with pytest.raises(MmnerError, match="is an input and would be written"):
        _plan_inputs("in/**/*.jsonl", "in", None, False, 4)
