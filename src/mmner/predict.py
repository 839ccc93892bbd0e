"""`mmner predict`: tag a file of posts into JSON lines, streaming, resumable, never dropping a post.

- Streaming: JSON lines input is read one line at a time and written a group of posts at a time
  (`Tagger.group_size`: 16 model batches, sorted by length within the group), so memory stays flat
  on a file of any length (other formats, CoNLL and RiTUAL folders, are datasets
  of known size and are read whole).
- Errors: a line that is not a post (bad JSON, no text, wrong types) or a post the model cannot tag
  (e.g. an unreadable image under `visual.missing: error`) is reported on stderr with its line
  number, recorded in the errors file (`<output>.errors.jsonl`: `{"line", "id", "error"}`), and the
  run goes on. The summary counts tagged and failed posts.
- Resume: `resume=True` keeps the complete lines of an interrupted output (a half-written last line
  is cut off), skips that many of the input posts that had not failed before (failed ones are known
  by their line numbers in the errors file), and appends. Output order is input order, so the count
  is enough to know which posts are done.

`--engine ray` (`mmner.ray_engine`) writes the same files from Ray workers, with the functions below.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mmner.api import Tagger
from mmner.data.post import Post
from mmner.errors import MmnerError

log = logging.getLogger("mmner")

SHOWN_ERRORS = 10  # errors printed on stderr; all of them go to the errors file


@dataclass
class Failure:
    line: int | None
    id: str | None
    error: str


@dataclass
class PredictSummary:
    output: Path
    errors_file: Path
    tagged: int = 0
    failed: int = 0
    resumed: int = 0  # posts already in the output before this run
    resumed_failed: int = 0  # posts that had already failed before this run
    first_failure: str | None = None

    @property
    def failed_total(self) -> int:
        """Posts of the input that are not in the output: failed now or in the runs this one resumed."""
        return self.failed + self.resumed_failed

    def line(self) -> str:
        parts = [f"tagged {_posts(self.tagged)}", f"{self.failed} failed"]
        if self.resumed or self.resumed_failed:
            parts.append(f"resumed after {self.resumed} tagged and {self.resumed_failed} failed "
                         f"({self.failed_total} failed in all)")
        where = f" (errors: {self.errors_file})" if self.failed_total else ""
        return ", ".join(parts) + f"{where} -> {self.output}"


def _posts(n: int) -> str:
    return f"{n} post" if n == 1 else f"{n} posts"


def errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def _cut_partial_line(path: Path) -> None:
    """Remove a last line that has no newline: a write that was interrupted."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, 2)
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos != size:
            fh.truncate(pos)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _failed_lines(path: Path) -> set[int]:
    """Input line numbers recorded in an errors file."""
    out = set()
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                line = json.loads(raw).get("line")
            except (ValueError, AttributeError):
                continue
            if isinstance(line, int):
                out.add(line)
    return out


class _ErrorLog:
    """The errors file, created at the first failure (a clean run leaves none behind)."""

    def __init__(self, path: Path, summary: PredictSummary, src: Path, bar: Any) -> None:
        self.path, self.summary, self.src, self.bar = path, summary, src, bar
        self.fh: IO[str] | None = None

    def add(self, failure: Failure) -> None:
        if self.fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.path, "a", encoding="utf-8")
        record = {"line": failure.line, "id": failure.id, "error": failure.error}
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        summary = self.summary
        summary.failed += 1
        where = f"{self.src}:{failure.line}: {failure.error}"
        if summary.first_failure is None:
            summary.first_failure = where
        if summary.failed <= SHOWN_ERRORS:
            self.bar.write(f"warning: {where}", file=sys.stderr)
            if summary.failed == SHOWN_ERRORS:
                self.bar.write(f"warning: further failures are only written to {self.path}", file=sys.stderr)

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def _strip_location(message: str, path: Path, line: int | None) -> str:
    prefix = f"{path}:{line}: "
    return message[len(prefix):] if line is not None and message.startswith(prefix) else message


def parse_line(raw: bytes, path: Path, lineno: int) -> Post | Failure | None:
    """The post on one JSON-lines input line, or why it is not one; None for a blank line. `path` is
    the input as named on the command line: relative images resolve against its folder."""
    from mmner.data.readers import _post_from_json  # the one JSON-lines post parser (DESIGN §1)

    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        return None
    obj: Any = None
    try:
        obj = json.loads(raw.decode("utf-8"))
        return _post_from_json(obj, path, lineno)
    except UnicodeDecodeError as exc:
        return Failure(lineno, None, f"not valid UTF-8 ({exc.reason})")
    except json.JSONDecodeError as exc:
        return Failure(lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
    except MmnerError as exc:
        pid = obj.get("id") if isinstance(obj, dict) else None
        return Failure(lineno, None if pid is None else str(pid), _strip_location(str(exc), path, lineno))


def _jsonl_items(path: Path) -> Iterator[tuple[int, Post | Failure]]:
    """(line number, post or failure) for each non-blank line, one line at a time."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            item = parse_line(raw, path, lineno)
            if item is not None:
                yield lineno, item


def failure_message(exc: BaseException) -> str:
    """The errors-file message of a post the model could not tag."""
    return str(exc) if isinstance(exc, MmnerError) else f"{type(exc).__name__}: {exc}"


def is_jsonl(path: Path) -> bool:
    """Whether `predict` reads `path` as JSON lines (streamed, bad lines reported) rather than a dataset."""
    return path.suffix.lower() == ".jsonl" or (path.suffix.lower() == ".json" and path.name != "texts.json")


def _items(path: Path) -> Iterator[tuple[int, Post | Failure]]:
    """Posts of any input format with the line each starts on (JSON lines: streamed)."""
    if is_jsonl(path):
        yield from _jsonl_items(path)
        return
    from mmner.data.readers import read_posts

    for i, post in enumerate(read_posts(path), 1):
        yield int(post.meta.get("line", i)), post


def count_posts(path: Path) -> int | None:
    """Number of posts in a JSON lines file (non-blank lines), read in constant memory; None otherwise."""
    if path.suffix.lower() not in (".jsonl", ".json") or path.name == "texts.json":
        return None
    with open(path, "rb") as fh:
        return sum(1 for raw in fh if raw.strip())


def resume_state(out_path: Path, err_path: Path, resume: bool) -> tuple[int, set[int]]:
    """Ready an output for writing: (posts it already holds, input lines that failed before). With
    `resume`, a half-written last line of either file is cut off; without it the errors file goes
    (a stale one would make a later --resume skip posts)."""
    skip_ok, failed_before = 0, set()
    if resume and out_path.exists():
        _cut_partial_line(out_path)
        skip_ok = _count_lines(out_path)
        if err_path.exists():
            _cut_partial_line(err_path)
            failed_before = _failed_lines(err_path)
    else:
        if resume:
            log.info("%s: no output to resume, starting from the first post", out_path)
        err_path.unlink(missing_ok=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return skip_ok, failed_before


def predict_file(tagger: Tagger, input: str | Path, output: str | Path, *, batch_size: int = 32,
                 resume: bool = False, progress: bool = True, errors: str | Path | None = None) -> PredictSummary:
    """Tag every post of `input` into `output` (JSON lines); see the module docstring."""
    from tqdm.auto import tqdm

    src, out_path = Path(input), Path(output)
    if not src.exists():
        raise MmnerError(f"{src}: no such file or folder")
    err_path = Path(errors) if errors is not None else errors_path(out_path)
    summary = PredictSummary(out_path, err_path)
    skip_ok, failed_before = resume_state(out_path, err_path, resume)
    summary.resumed, summary.resumed_failed = skip_ok, len(failed_before)
    total = count_posts(src)
    with open(out_path, "a" if resume else "w", encoding="utf-8") as out, tqdm(
        total=total, initial=skip_ok + len(failed_before), desc="tagging", unit="post", disable=not progress,
        file=sys.stderr,
    ) as bar:
        errs = _ErrorLog(err_path, summary, src, bar)
        batch: list[tuple[int, Post]] = []
        group = tagger.group_size(batch_size)  # posts sorted by length together, then written in order

        def flush() -> None:
            results = tagger.try_tag_posts([post for _, post in batch], batch_size)
            for (lineno, post), result in zip(batch, results):
                if isinstance(result, Exception):
                    errs.add(Failure(lineno, post.id, failure_message(result)))
                else:
                    out.write(json.dumps(result, ensure_ascii=False) + "\n")
                    summary.tagged += 1
            out.flush()
            errs.flush()
            bar.update(len(batch))
            batch.clear()

        try:
            for lineno, item in _items(src):
                if lineno in failed_before:
                    continue
                if isinstance(item, Failure):
                    errs.add(item)
                    bar.update(1)
                    continue
                if skip_ok:
                    skip_ok -= 1
                    continue
                batch.append((lineno, item))
                if len(batch) >= group:
                    flush()
            if batch:
                flush()
        finally:
            errs.close()
    if skip_ok:
        raise MmnerError(f"{out_path}: --resume: the output has {skip_ok} more lines than {src} has posts "
                         "(is it the output of another input?)")
    return summary
