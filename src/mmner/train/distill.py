"""Soft targets for training (`distill` in the config): a teacher's CRF marginals of training posts.

A marginals file (`.marginals.jsonl.gz`, written by `write_marginals`, e.g. by
benchmarks/teacher_marginals.py for an ensemble of runs) is gzip-compressed JSON lines: a header

    {"format": "mmner-marginals/1", "data": "twitter2015:train", "labels": ["O", "B-LOC", ...], ...}

(`data`: the dataset whose posts it covers; `labels`: the column order, IOB2 tags; any other keys describe
the teacher), then one line per post, `{"id": "...", "marginals": [[p(label) for each label] per word]}`.

Training aligns each file to the training posts by id (a file of `data.extra_train`'s dataset to the ids
that training gives those posts, `<data>/<id>`), reorders its columns to the model's labels, and adds to
the CRF loss of every post with a target the KL divergence from the teacher's marginals to the model's
own (forward-backward over the CRF, `CRFHead.log_marginals`), summed over its words:
`(1 - weight) x CRF loss + weight x KL`. With a `temperature` T > 1 both sides are softened first, the
teacher's marginals word by word (q^(1/T), renormalised: the files hold marginals, not scores) and the
model's through its CRF scores divided by T, and the KL is multiplied by T^2 (Hinton et al.'s scaling, which
keeps its gradients the size they have at T = 1).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.tagging.crf import CRFHead
from mmner.tagging.vocab import LabelVocab

FORMAT = "mmner-marginals/1"


def write_marginals(path: str | Path, data: str, labels: Sequence[str], rows: Sequence[tuple[str, torch.Tensor]],
                    **header: Any) -> None:
    """Write a marginals file: `rows` are (post id, [words, labels] probabilities), columns in `labels` order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(json.dumps({"format": FORMAT, "data": data, "labels": list(labels), **header}) + "\n")
        for pid, probs in rows:
            values = [[round(float(p), 4) for p in word] for word in probs.tolist()]
            out.write(json.dumps({"id": pid, "marginals": values}, separators=(",", ":")) + "\n")


def read_marginals(path: str | Path, where: str = "distill.targets") -> tuple[dict[str, Any], Iterator[tuple[int, str, list[list[float]]]]]:
    """The header of a marginals file and an iterator over its posts: (line number, id, marginals)."""
    path = Path(path)
    if not path.is_file():
        raise MmnerError(f"{where}: {path} does not exist")
    bad = (OSError, EOFError, UnicodeDecodeError)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            first = f.readline()
    except bad as exc:
        raise MmnerError(f"{where}: {path} is not a gzip-compressed marginals file ({exc})") from None
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("labels"), list) \
            or not isinstance(header.get("data"), str):
        raise MmnerError(f"{path}:1: not a marginals header (want {{\"format\": \"{FORMAT}\", \"data\": ..., "
                         "\"labels\": [...]}})")

    def rows() -> Iterator[tuple[int, str, list[list[float]]]]:
        n = 1
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                next(f)
                for n, line in enumerate(f, 2):
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                        pid, values = str(item["id"]), item["marginals"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise MmnerError(f"{path}:{n}: not a post's marginals (want {{\"id\": ..., \"marginals\": [[...]]}})") from None
                    if not isinstance(values, list) or any(not isinstance(w, list) or len(w) != len(header["labels"])
                                                           for w in values):
                        raise MmnerError(f"{path}:{n}: post {pid}: every word needs {len(header['labels'])} probabilities")
                    yield n, pid, values
        except bad as exc:
            raise MmnerError(f"{where}: {path} is cut or corrupt after line {n} ({exc})") from None

    return header, rows()


def marginals_row(path: str | Path, n: int, pid: str, values: list[list[float]], words: int, data: str,
                  columns: Sequence[int]) -> torch.Tensor:
    """One post's marginals from line `n` of a marginals file, [words, labels] with the columns in the order
    `columns` picks; a post whose word count differs from its `words` in `data` is a one-line error."""
    if len(values) != words:
        raise MmnerError(f"{path}:{n}: post {pid} has marginals for {len(values)} words, but {words} words in {data}")
    return torch.tensor(values, dtype=torch.float32)[:, columns]


class Teacher:
    """The soft targets of the training posts (`Teacher.from_config`): `targets(index, width)` gives a
    batch's [B, W, L] probabilities and which of its posts have one."""

    def __init__(self, rows: list[torch.Tensor | None], weight: float, record: dict[str, Any],
                 temperature: float = 1.0) -> None:
        self.rows = rows  # by training post position, softened by the temperature; None: no target
        self.labels = next(r.shape[1] for r in rows if r is not None)
        self.weight = weight
        self.temperature = temperature
        self.record = record  # for metrics.json

    @classmethod
    def from_config(cls, targets: Sequence[str], weight: float, train: str, extra: Sequence[str],
                    posts: Sequence[Post], labels: LabelVocab, temperature: float = 1.0) -> "Teacher | None":
        """`targets`: the files; `train`, `extra`: data.train and data.extra_train's datasets; `posts`: the
        training posts (extra posts' ids prefixed with their dataset); `labels`: the model's; `temperature`:
        distill.temperature, which softens each word's marginals (q^(1/T), renormalised)."""
        from mmner.inference import data_sha1

        if not targets:
            return None
        if labels.scheme != "bio":
            raise MmnerError(f"distill: marginals are over IOB2 tags; data.scheme is {labels.scheme} (use bio)")
        position = {p.id: i for i, p in enumerate(posts)}
        rows: list[torch.Tensor | None] = [None] * len(posts)
        files = []
        for k, path in enumerate(targets):
            where = f"distill.targets[{k}]"
            header, items = read_marginals(path, where)
            data = header["data"]
            if data == train:
                prefix = ""
            elif data in extra:
                prefix = f"{data}/"
            else:
                raise MmnerError(f"{where}: {path} holds marginals of {data}, which is neither data.train ({train}) "
                                 f"nor a dataset of data.extra_train ({', '.join(extra) or 'none'})")
            if sorted(header["labels"]) != sorted(labels.tags):
                raise MmnerError(f"{where}: {path} has labels {', '.join(header['labels'])}; the model's are "
                                 f"{', '.join(labels.tags)}")
            columns = [header["labels"].index(tag) for tag in labels.tags]
            matched = 0
            for n, pid, values in items:
                i = position.get(prefix + pid)
                if i is None:
                    continue  # a post left out of training (limit_train, holdout, train_fraction)
                if rows[i] is not None:
                    raise MmnerError(f"{path}:{n}: post {pid} has a target already")
                probs = marginals_row(path, n, pid, values, len(posts[i].tokens), data, columns)
                if temperature != 1.0:
                    probs = probs.clamp_min(0.0).pow(1.0 / temperature)
                rows[i] = probs / probs.sum(-1, keepdim=True).clamp_min(1e-8)  # rounding in the file
                matched += 1
            if not matched:
                raise MmnerError(f"{where}: {path}: none of its posts is a training post")
            files.append({"file": str(path), "data": data, "sha1": data_sha1(Path(path)), "posts": matched,
                          **{key: header[key] for key in ("members", "min_votes") if key in header}})
        record = {"weight": weight, **({"temperature": temperature} if temperature != 1.0 else {}),
                  "targets": files, "posts_with_targets": sum(r is not None for r in rows), "train_posts": len(posts)}
        return cls(rows, weight, record, temperature)

    def targets(self, index: Sequence[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's targets [B, width, L] (zeros where a post has none or beyond its words) and [B] bool."""
        out = torch.zeros(len(index), width, self.labels)
        has = torch.zeros(len(index), dtype=torch.bool)
        for j, i in enumerate(index):
            row = self.rows[i]
            if row is not None:
                out[j, : row.shape[0]] = row
                has[j] = True
        return out, has

    def loss(self, crf: CRFHead, emissions: torch.Tensor, mask: torch.Tensor,
             index: Sequence[int]) -> tuple[torch.Tensor, int] | None:
        """The batch's distillation term and how many of its posts have a target (None: none has):
        KL(softened targets || the model's marginals at the temperature) x T^2. emissions [B, W, L] of
        the posts `index` (training positions), mask [B, W]."""
        q, has = self.targets(index, emissions.shape[1])
        if not bool(has.any()):
            return None
        log_p = crf.log_marginals(emissions, mask, temperature=self.temperature)
        kl = distill_loss(log_p, q.to(log_p.device), mask, has.to(log_p.device))
        return kl * self.temperature ** 2, int(has.sum())


def distill_loss(log_p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """KL(q || p) summed over each post's words, averaged over the posts with a target (`has`).
    log_p: the model's log marginals [B, W, L]; q: the teacher's probabilities [B, W, L]; mask [B, W]."""
    # log_p of a transition the model's constraint forbids is about -1e4: bounded, so that a teacher giving it
    # some mass (one decoding without the constraint) costs a bounded loss
    kl = (torch.special.xlogy(q, q) - q * log_p.clamp_min(-30.0)).sum(-1)  # [B, W]
    per_post = kl.masked_fill(~mask.bool(), 0.0).sum(1)
    return per_post[has].mean()
