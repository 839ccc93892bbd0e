"""Helpers for the tests of tagging new posts: one tiny trained run per session, a live server.

The API, predict, service and web page tests each have a session fixture that calls `tiny_run_dir`;
the run is trained once into the session's base temp folder and reused by the others.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import tiny_config


def tiny_run_dir(tmp_path_factory, tiny_encoder: Path, tiny_corpus: dict[str, Path]) -> Path:
    """A bert-crf run trained for a few epochs on the tiny corpus (about 1 s on one CPU thread)."""
    from mmner.config import load_config
    from mmner.train.run import train

    run_dir = tmp_path_factory.getbasetemp() / "tiny-serving-run"
    if not (run_dir / "metrics.json").is_file():
        # a random tiny encoder has nothing pretrained in its word embeddings to keep: train them, so the
        # model learns the names of the corpus templates that the tagging tests look for
        params = {"name": "bert-crf", "encoder": str(tiny_encoder), "max_length": 24, "freeze_embeddings": False}
        config = load_config(None, base=tiny_config(params, tiny_corpus, max_epochs=6, patience=6))
        train(config, run_dir, quiet=True)
    return run_dir


def tiny_caption_run_dir(tmp_path_factory, model_params: dict, corpus: dict[str, Path], visual: dict) -> Path:
    """A bert-crf-caption run (captions file of the tiny corpus) trained for one epoch: a model with caption
    attention, for the web page tests. `model_params`, `visual`: the tiny_model_params / tiny_visual fixtures."""
    from mmner.config import load_config
    from mmner.train.run import train

    run_dir = tmp_path_factory.getbasetemp() / "tiny-caption-serving-run"
    if not (run_dir / "metrics.json").is_file():
        config = load_config(None, base=tiny_config(model_params["bert-crf-caption"], corpus, visual["caption"],
                                                    max_epochs=1))
        train(config, run_dir, quiet=True)
    return run_dir


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """A real uvicorn server for `app` on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
