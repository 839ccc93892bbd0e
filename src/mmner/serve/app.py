"""The HTTP service (`mmner serve`): FastAPI app over one loaded `Tagger`.

Endpoints
- `GET /` the web page (static/index.html); `GET /healthz`; `GET /v1/model` (name, encoder, visual
  source, the inputs it reads (`inputs`, for the page), labels, limits, the run's metrics.json).
- `POST /v1/tag` JSON `{"text" | "tokens", "image": base64 (or a data: URL), "caption", "id"}`
  -> one output record (DESIGN §1 plus character offsets, `relation_score` where the model has one).
- `POST /v1/tag/batch` `{"posts": [post or text, ...]}` -> `{"results": [record, ...], "failed": n}`; a post
  that cannot be tagged is `{"id"?, "error"}` in its place (a size limit still refuses the request, 413).
  Every record has an id: its own, or `#<n>` for the n-th post (1-based) when it gave none, the rule of
  `Tagger.batch` and `predict` (`mmner.data.post.post_id`); `/v1/tag` and the upload echo a given id only.
- `POST /v1/tag/upload` multipart form: `text`, optional `caption`, `id`, and an `image` file.

Errors are JSON `{"error": one line, "detail": ...}`: 400 malformed JSON; 413 a body over
`max_body_bytes`, an image over `max_image_bytes` or a batch over `max_posts`; 415 an uploaded file
that is not an image; 422 wrong types, unknown keys, an empty text, a text over `max_chars`, bad
base64 or a base64 image that is not one, or a post the model cannot tag (e.g. no image for a model
whose `visual.missing` is `error`); 500 anything else (one line naming the exception; the traceback goes
to the server log only); 503 the service is busy: `max_queue` posts are already waiting for the model,
with a Retry-After header (seconds), at once rather than after an unbounded wait.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmner.api import StagedImages, Tagger, make_post, read_image_bytes
from mmner.data.post import post_id
from mmner.errors import MmnerError
from mmner.serve.batcher import MicroBatcher, QueueFull

log = logging.getLogger("mmner")


# `?attention=true`: region attention in the records of a model that computes it (default: `mmner serve
# --attention`, off); without it the encoder runs its fastest attention kernel.
ATTENTION = Query(None, description="Region attention in each record (models that compute it); default: the "
                  "service's --attention, off.")


@dataclass
class Limits:
    """What one request may hold; over a limit is a 413 (bytes, posts) or a 422 (text length)."""

    max_chars: int = 2000  # characters of one post's text (a tweet has at most 280)
    max_body_bytes: int = 10 * 2**20  # a whole request body
    max_image_bytes: int = 8 * 2**20  # one image file (decoded, for base64)
    max_posts: int = 64  # posts in one /v1/tag/batch request
    max_batch: int = 32  # posts in one model call (micro-batching)
    max_wait_ms: float = 5.0  # how long a request waits for others to share its model call
    max_queue: int = 512  # posts waiting for or in a model call; a request beyond it is a 503 with Retry-After


class PostIn(BaseModel):
    """One post of a JSON request. Keys of its own (`lang`, `user`, ...) are copied into its record, as
    `predict` and `Tagger` do; a post without "text" or "tokens" is refused, so a misspelt key is not
    silently ignored."""

    model_config = ConfigDict(extra="allow")
    id: str | int | None = None
    text: str | None = None
    tokens: list[str] | None = None
    image: str | None = None  # base64 image file, optionally as a data: URL
    caption: str | None = None


class BatchIn(BaseModel):
    """Posts as `Tagger.batch` takes them: mappings or plain texts; each is checked on its own, so one
    bad post is reported in its place in the results rather than failing the request."""

    model_config = ConfigDict(extra="forbid")
    posts: list[Any]


class ApiError(HTTPException):
    """An HTTP error whose JSON says what is wrong in one line."""


def _mib(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} bytes"


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413, by its Content-Length
    header before reading it, or while reading it when the length is not announced."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send, int(declared) if declared.isdigit() else None)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send, None)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int | None) -> None:
        got = f" ({_mib(size)})" if size is not None else ""
        message = f"request body too large{got}: the limit is {_mib(self.max_bytes)}"
        await JSONResponse({"error": message, "detail": message}, status_code=413)(scope, receive, send)


def _describe_validation(errors: list[dict[str, Any]]) -> tuple[int, str]:
    """FastAPI's validation errors as a status and one line naming the field."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return 400, f"malformed JSON{': ' + str(reason) if reason else ''}"
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if loc == "body" and first.get("type") in ("model_attributes_type", "dict_type"):
        return 422, "body: expected a JSON object (send it with Content-Type: application/json)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, f"{loc}: {first.get('msg', 'invalid')}{more}"


def _failed(raw: Any, message: str) -> dict[str, Any]:
    """A batch post that could not be tagged, in its place in the results: its id (if it gave one) and why."""
    given = raw.get("id") if isinstance(raw, dict) else None
    return {**({"id": str(given)} if given is not None else {}), "error": message}


def _internal(exc: BaseException) -> str:
    """A 500's message: one line naming the exception, never a traceback."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"internal error: {type(exc).__name__}" + (f": {first[:300]}" if first else "")


def _error(status: int, message: str) -> ApiError:
    return ApiError(status_code=status, detail=message)


def model_inputs(tagger: Tagger) -> dict[str, Any]:
    """What of a post the model reads besides its text, for the web page: `image` and `caption` (whether
    each is used) and a `note` saying so in words."""
    visual = tagger.config.visual
    source = visual.source if getattr(tagger.model, "uses_visual", False) else "none"
    name = tagger.name
    if source == "grid":
        return {"image": True, "caption": False,
                "note": f"{name} reads the image ({visual.grid_encoder} grid features); a caption is not used."}
    if source == "pseudo-caption":
        return {"image": True, "caption": True,
                "note": f"{name} reads a caption: the one typed here, else the top-{visual.pseudo_k} "
                        "ImageNet classes of the image."}
    if source == "caption":
        if visual.caption_fallback == "none":
            return {"image": False, "caption": True,
                    "note": f"{name} reads the caption typed here; an image alone is not used "
                            "(visual.caption_fallback: none)."}
        return {"image": True, "caption": True,
                "note": f"{name} reads a caption: the one typed here, else one made from the image "
                        f"(its top-{visual.pseudo_k} ImageNet classes)."}
    return {"image": False, "caption": False,
            "note": f"{name} reads the text only: images and captions would not change its tags."}


def create_app(tagger: Tagger, limits: Limits | None = None, batcher: MicroBatcher | None = None) -> FastAPI:
    """The service for one loaded model; the model is used by one micro-batching worker thread (`batcher`,
    made from `limits` when not given; `run_server` gives the one whose worker loaded the model)."""
    limits = limits or Limits()
    if batcher is None:
        batcher = MicroBatcher(None, limits.max_batch, limits.max_wait_ms, max_pending=limits.max_queue)
    batcher.tag = tagger.try_tag_posts

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(batcher.close)  # finishes the queued requests; a later one restarts it

    # No /docs: Swagger UI loads from a CDN; the schema is at /openapi.json.
    app = FastAPI(title="mmner", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.tagger, app.state.batcher, app.state.limits = tagger, batcher, limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        status, message = _describe_validation(errors)
        return JSONResponse({"error": message, "detail": json.loads(json.dumps(errors, default=str))},
                            status_code=status)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this (the server log); the client gets one line, no traceback.
        message = _internal(exc)
        return JSONResponse({"error": message, "detail": message}, status_code=500)

    # -- helpers --------------------------------------------------------------------------------
    def check_text(post: PostIn, where: str) -> None:
        if post.text is None and post.tokens is None:
            raise _error(422, f"{where.rstrip('.') or 'post'}: needs \"text\" (or \"tokens\")")
        if post.text is not None:
            if not post.text.strip():
                raise _error(422, f"{where}text: empty text")
            if len(post.text) > limits.max_chars:
                raise _error(422, f"{where}text: {len(post.text)} characters, over the limit of {limits.max_chars}")
        if post.tokens is not None:
            if not post.tokens:
                raise _error(422, f"{where}tokens: empty list")
            if sum(len(t) for t in post.tokens) > limits.max_chars:
                raise _error(422, f"{where}tokens: over the limit of {limits.max_chars} characters")
        if post.caption is not None and len(post.caption) > limits.max_chars:
            raise _error(422, f"{where}caption: {len(post.caption)} characters, over the limit of {limits.max_chars}")

    def decode_image(data: str, where: str) -> bytes:
        if data.startswith("data:"):
            header, _, data = data.partition(",")
            if ";base64" not in header:
                raise _error(422, f"{where}image: a data: URL must be base64 (data:image/...;base64,...)")
        if len(data) > limits.max_image_bytes * 4 // 3 + 4:
            raise _error(413, f"{where}image: larger than the limit of {_mib(limits.max_image_bytes)}")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _error(422, f"{where}image: not valid base64") from None
        if not raw:
            raise _error(422, f"{where}image: empty")
        if len(raw) > limits.max_image_bytes:
            raise _error(413, f"{where}image: {len(raw)} bytes decoded, over the limit of "
                              f"{_mib(limits.max_image_bytes)} ({limits.max_image_bytes} bytes)")
        return raw

    async def check_image(raw: bytes, name: str, status: int, note: str = "") -> None:
        """Decode the image as the visual pipeline would: a file that is not one is refused now."""
        try:
            await asyncio.to_thread(read_image_bytes, raw, name)
        except MmnerError as exc:
            raise _error(status, f"{exc}{note}") from None

    async def tag(items: list[dict[str, Any]], positions: list[int] | None = None,
                  attention: bool | None = None) -> list[dict[str, Any]]:
        """Posts (mappings for `make_post`) through the micro-batcher; temporary images removed after.
        `positions`: each post's 0-based place in the request, which names a post given without an id."""
        staged = StagedImages()
        try:
            try:
                posts = [make_post(item, positions[i] if positions else i, staged) for i, item in enumerate(items)]
            except MmnerError as exc:
                raise _error(422, str(exc)) from None
            try:
                want = tagger.attention if attention is None else attention
                return await asyncio.wrap_future(batcher.submit(posts, want))
            except MmnerError as exc:
                raise _error(422, str(exc)) from None
            except QueueFull as exc:  # busy: refused at once, with when to come back
                raise ApiError(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
            except Exception as exc:  # noqa: BLE001 - a model failure is the server's fault
                log.exception("tagging failed")
                raise _error(500, _internal(exc)) from None
        finally:
            staged.close()

    async def json_item(post: PostIn, index: int, where: str) -> dict[str, Any]:
        check_text(post, where)
        try:
            post_id(post.id, index + 1)  # a post without an id is `#<index + 1>` (make_post), as in predict
        except ValueError as exc:
            raise _error(422, f"{where}{exc}") from None
        item: dict[str, Any] = {k: v for k, v in post.model_dump().items() if v is not None and k != "image"}
        if post.image is not None:
            raw = decode_image(post.image, where)
            await check_image(raw, f"{where}image", 422)
            item["image"] = raw
        return item

    def public(record: dict[str, Any], had_id: bool) -> dict[str, Any]:
        if not had_id:
            record.pop("id", None)
        return record

    # -- endpoints ------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("mmner.serve").joinpath("static/index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": tagger.name, "batching": asdict(batcher.stats), "queue": batcher.queue_state()}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        info = tagger.info()
        info["relation_score"] = tagger.has_relation_score
        info["region_attention"] = tagger.has_region_attention
        info["inputs"] = model_inputs(tagger)
        info["limits"] = asdict(limits)
        return info

    @app.post("/v1/tag")
    async def tag_one(post: PostIn, attention: bool | None = ATTENTION) -> dict[str, Any]:
        item = await json_item(post, 0, "")
        return public((await tag([item], attention=attention))[0], post.id is not None)

    @app.post("/v1/tag/batch")
    async def tag_batch(body: BatchIn, attention: bool | None = ATTENTION) -> dict[str, Any]:
        if not body.posts:
            raise _error(422, "posts: empty list")
        if len(body.posts) > limits.max_posts:
            raise _error(413, f"posts: {len(body.posts)} posts, over the limit of {limits.max_posts} per request")
        out: list[dict[str, Any] | None] = [None] * len(body.posts)  # a failed post's entry, else its record
        good: list[tuple[int, dict[str, Any]]] = []  # position, item
        for i, raw in enumerate(body.posts):
            try:
                post = PostIn(text=raw) if isinstance(raw, str) else PostIn.model_validate(raw)
                good.append((i, await json_item(post, i, f"posts.{i}.")))
            except ValidationError as exc:
                _, message = _describe_validation([{**e, "loc": ("posts", i, *e["loc"])} for e in exc.errors()])
                out[i] = _failed(raw, message)
            except ApiError as exc:
                if exc.status_code == 413:  # a size limit refuses the request, as for a single post
                    raise
                out[i] = _failed(raw, str(exc.detail))
        records = await tag([item for _, item in good], [i for i, _ in good], attention) if good else []
        for (i, _), record in zip(good, records):
            out[i] = record  # with its id: given, or `#<position>` as Tagger.batch and predict name it
        return {"results": out, "failed": len(body.posts) - len(good)}

    @app.post("/v1/tag/upload")
    async def tag_upload(
        text: str = Form(...),
        caption: str | None = Form(None),
        id: str | None = Form(None),
        image: UploadFile | None = File(None),
        attention: bool | None = ATTENTION,
    ) -> dict[str, Any]:
        post = PostIn(text=text, caption=caption or None, id=id or None)
        check_text(post, "")
        try:
            post_id(post.id, 1)
        except ValueError as exc:
            raise _error(422, str(exc)) from None
        item: dict[str, Any] = {k: v for k, v in post.model_dump().items() if v is not None and k != "image"}
        if image is not None and (image.filename or image.size):
            raw = await image.read(limits.max_image_bytes + 1)
            if len(raw) > limits.max_image_bytes:
                raise _error(413, f"image: over the limit of {_mib(limits.max_image_bytes)}")
            if not raw:
                raise _error(415, f"image: {image.filename!r} is an empty file")
            note = f" (uploaded as {image.content_type})" if image.content_type else ""
            await check_image(raw, f"image {image.filename!r}" if image.filename else "image", 415, note)
            item["image"] = raw
        return public((await tag([item], attention=attention))[0], id is not None and id != "")

    return app
