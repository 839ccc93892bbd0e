"""biLSTM-CRF (the RpBERT paper's text baseline, after Lample et al. 2016).

Word vector + char-CNN vector per token -> dropout -> 2-layer biLSTM -> dropout -> linear -> CRF.
Paper settings (RpBERT, Table 2): LSTM hidden 256, 2 layers, char embedding 25, dropout 0.5,
Adam lr 1e-4, batch 8 (the paper uses 300d fastText; here `glove-50d` or `spacy-md`, see
`mmner.text.vectors`). `hidden` is the size of each direction (the LSTM outputs 2 * hidden).

Run artifacts: `vocab.json` (word and char vocabularies, the vectors spec and the pretrained
table's shape). The pretrained table itself is never written to the run: it is a non-persistent
buffer reloaded from the package or file at load time.

Extension point (DESIGN §4, "optional image vector at t=0"): `forward` is split into `inputs`
(per-word input vectors [B, W, E]) and `contextualize` (biLSTM over them); an image vector can be
projected to E and prepended as step 0 there, with its output row dropped before the classifier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import ModelParams, Tagger
from mmner.models.blocks import pad_tags
from mmner.models.registry import register
from mmner.tagging.crf import CRFHead
from mmner.tagging.vocab import LabelVocab
from mmner.text.vectors import (
    MAX_WORD_CHARS,
    NO_VECTORS,
    PAD_ID,
    CharCNN,
    CharVocab,
    VectorTable,
    WordEmbedding,
    WordVocab,
    load_table,
    vocab_json,
)

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput

VOCAB_FILE = "vocab.json"
RANDOM_DIM = 50  # word vector size with `vectors: none`


class BiLSTMCRFParams(ModelParams):
    vectors: str = "glove-50d"
    freeze_vectors: bool = False
    char_dim: int = Field(25, ge=1)
    char_filters: int = Field(50, ge=1)
    hidden: int = Field(256, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    constrained: bool = True


@register("bilstm-crf")
class BiLSTMCRF(Tagger):
    Params = BiLSTMCRFParams
    params: BiLSTMCRFParams

    def __init__(
        self,
        params: BiLSTMCRFParams,
        labels: LabelVocab,
        words: WordVocab,
        chars: CharVocab,
        table: VectorTable | None,
    ) -> None:
        super().__init__(params, labels)
        self.words = words
        self.chars = chars
        self.table = table  # plain attribute: the module keeps only its matrix, as a buffer
        dim = table.dim if table is not None else RANDOM_DIM
        self.embed = WordEmbedding(len(words), dim, table.matrix if table is not None else None, params.freeze_vectors)
        self.char_cnn = CharCNN(len(chars), params.char_dim, params.char_filters, dropout=params.dropout)
        self.dropout = nn.Dropout(params.dropout)
        self.input_dim = dim + params.char_filters
        self.lstm = nn.LSTM(
            self.input_dim,
            params.hidden,
            num_layers=params.layers,
            bidirectional=True,
            batch_first=True,
            dropout=params.dropout if params.layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(2 * params.hidden, len(labels))
        self.crf = CRFHead(labels, params.constrained)

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def _table(params: BiLSTMCRFParams) -> VectorTable | None:
        return None if params.vectors == NO_VECTORS else load_table(params.vectors)

    @classmethod
    def create(cls, params: BiLSTMCRFParams, labels: LabelVocab, train_posts: list[Post]) -> "BiLSTMCRF":
        table = cls._table(params)
        tokens = [t for post in train_posts for t in post.tokens]
        skip = (lambda w: table.find(w) >= 0) if (table is not None and params.freeze_vectors) else None
        model = cls(params, labels, WordVocab.build(tokens, skip), CharVocab.build(tokens), table)
        model.embed.init_from(model.words, table)
        return model

    def save_artifacts(self, run_dir: Path) -> None:
        extra = {
            "vectors": self.params.vectors,
            "vector_rows": len(self.table) if self.table is not None else 0,
            "vector_dim": self.embed.dim,
        }
        data = vocab_json(self.words, self.chars, **extra)
        (Path(run_dir) / VOCAB_FILE).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, params: BiLSTMCRFParams, labels: LabelVocab, run_dir: Path) -> "BiLSTMCRF":
        path = Path(run_dir) / VOCAB_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            words, chars = WordVocab(data["words"]), CharVocab(data["chars"])
            rows, dim = int(data["vector_rows"]), int(data["vector_dim"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MmnerError(f"{path}: not a readable bilstm-crf vocabulary ({exc})") from exc
        table = cls._table(params)
        got = (len(table), table.dim) if table is not None else (0, RANDOM_DIM)
        if got != (rows, dim):
            raise MmnerError(
                f"{path}: the run was trained with vectors {data.get('vectors')!r} of {rows} x {dim}, "
                f"but {params.vectors!r} now gives {got[0]} x {got[1]}; point model.vectors at the same table"
            )
        return cls(params, labels, words, chars, table)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"head": [p for p in self.parameters() if p.requires_grad]}

    # -- data -----------------------------------------------------------------------------------
    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        tokens = post.tokens
        table = self.table
        return {
            "word_ids": self.words.encode(tokens),
            "vector_ids": [table.find(t) for t in tokens] if table is not None else [-1] * len(tokens),
            "char_ids": [self.chars.encode(t, MAX_WORD_CHARS) for t in tokens],
            "n_words": len(tokens),
            "tags": self.labels.encode(post) if post.tags is not None else None,
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        b = len(items)
        w = max([1, *(item["n_words"] for item in items)])
        c = max([1, *(len(ch) for item in items for ch in item["char_ids"])])
        word_ids = torch.full((b, w), PAD_ID, dtype=torch.long)
        vector_ids = torch.full((b, w), -1, dtype=torch.long)
        char_ids = torch.full((b, w, c), PAD_ID, dtype=torch.long)
        word_mask = torch.zeros((b, w), dtype=torch.bool)
        for i, item in enumerate(items):
            n = item["n_words"]
            if n == 0:
                continue
            word_ids[i, :n] = torch.tensor(item["word_ids"])
            vector_ids[i, :n] = torch.tensor(item["vector_ids"])
            word_mask[i, :n] = True
            for j, ch in enumerate(item["char_ids"]):
                char_ids[i, j, : len(ch)] = torch.tensor(ch)
        batch: dict[str, Any] = {
            "word_ids": word_ids, "vector_ids": vector_ids, "char_ids": char_ids, "word_mask": word_mask,
        }
        tags = pad_tags(items, w)
        if tags is not None:
            batch["tags"] = tags
        return batch

    # -- compute --------------------------------------------------------------------------------
    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """Per-word input vectors [B, W, input_dim]: word vector ++ char-CNN vector."""
        words = self.embed(batch["word_ids"], batch["vector_ids"])
        chars = self.char_cnn(batch["char_ids"])
        return self.dropout(torch.cat([words, chars.to(words.dtype)], dim=-1))

    def contextualize(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """biLSTM over the unmasked (left-aligned) steps. [B, W, E] -> [B, W, 2 * hidden]"""
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        mask = batch["word_mask"]
        hidden = self.contextualize(self.inputs(batch), mask)
        emissions = self.classifier(self.dropout(hidden))  # [B, W, L]
        out = {"emissions": emissions, "word_mask": mask}
        if batch.get("tags") is not None:
            out["loss"] = self.crf.loss(emissions, batch["tags"], mask)
        return out

    def decode(self, batch: dict[str, Any]) -> list[list[int]]:
        out = self.forward({**batch, "tags": None})
        return self.crf.decode(out["emissions"], out["word_mask"])
