"""`mmner serve`: the HTTP API and web page over one trained run (see `serve.app`)."""

from __future__ import annotations

from pathlib import Path

from mmner.serve.app import Limits, create_app

__all__ = ["Limits", "create_app", "run_server"]


def check_port(host: str, port: int) -> None:
    """Bind `host:port` once, as uvicorn will (SO_REUSEADDR), so that a port in use is one clear error."""
    import socket

    from mmner.errors import MmnerError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise MmnerError(f"cannot serve at {host}:{port}: {exc.strerror or exc}; "
                             "is another server running there? Choose another --port") from None


def run_server(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
               shutdown_timeout: float = 30.0, attention: bool = False, int8: bool = False) -> None:
    """Load the run once and serve it with uvicorn until interrupted.

    On SIGTERM or Ctrl-C (SIGINT) the shutdown is graceful: uvicorn stops accepting connections, lets the
    requests in flight finish (for at most `shutdown_timeout` seconds, then cancels them), and the app's
    lifespan shutdown drains the micro-batcher's queue before the process exits. A second Ctrl-C forces it.
    """
    import uvicorn

    from mmner.api import Tagger
    from mmner.serve.batcher import MicroBatcher

    check_port(host, port)  # before loading the model: a busy port is known at once
    limits = limits or Limits()
    # The model is loaded, and later called, in the micro-batcher's worker thread: one OpenMP team in the
    # process (see mmner.serve.batcher).
    batcher = MicroBatcher(None, limits.max_batch, limits.max_wait_ms, max_pending=limits.max_queue)
    tagger = batcher.run_in_worker(lambda: Tagger.load(run_dir, batch_size=limits.max_batch, attention=attention,
                                                       int8=int8)).result()
    app = create_app(tagger, limits, batcher)
    print(f"mmner: serving {tagger.name} from {run_dir} at http://{host}:{port}/ "
          "(API: /v1/tag, schema: /openapi.json)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=shutdown_timeout)
