"""biLSTM-CRF (the RpBERT paper's text baseline, after Lample et al. 2016).

Word vector + char-CNN vector per token -> dropout -> 2-layer biLSTM -> dropout -> linear -> CRF.
Paper settings (RpBERT, Table 2): LSTM hidden 256, 2 layers, char embedding 25, dropout 0.5,
Adam lr 1e-4, batch 8 (the paper uses 300d fastText; here `glove-50d` or `spacy-md`, see
`mmner.text.vectors`). `hidden` is the size of each direction (the LSTM outputs 2 * hidden).

Run artifacts: `vocab.json` (word and char vocabularies, the vectors spec and the pretrained
table's shape). The pretrained table itself is never written to the run: it is a non-persistent
buffer reloaded from the package or file at load time.

Image at t = 0 (`image: true`; RpBERT Table 4, "biLSTM-CRF w/ image at t = 0", after Vinyals et al.
2015): one image vector, projected to the width E of the word inputs, is step 0 of the biLSTM, before
the words; its output row is dropped before the classifier. The image vector is the mean of the post's
grid regions (`visual.source: grid`, the global CNN feature the paper takes from ResNet) or, for caption
sources, the mean word vector of the caption's words (the caption stands in for the image, as in every
caption-based model of this package). A post without image (masked) has no step 0: its words start the
sequence, exactly as in the text-only model. `forward` is split into `inputs` (per-word input vectors
[B, W, E]) and `contextualize` (biLSTM over them, with the optional step 0).
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
from mmner.data.readers import tokenize
from mmner.errors import MmnerError
from mmner.models.base import ModelParams, Tagger
from mmner.models.blocks import checked_regions, pad_tags, resolve_region_params
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
    from mmner.vision.inputs import VisualInput, VisualInputs

VOCAB_FILE = "vocab.json"


def word_features(words: WordVocab, table: VectorTable | None, tokens: list[str]) -> dict[str, list[int]]:
    """Ids of `tokens` in the trainable vocabulary and in the pretrained table (-1: not in it)."""
    return {"word_ids": words.encode(tokens),
            "vector_ids": [table.find(t) for t in tokens] if table is not None else [-1] * len(tokens)}


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`lstm` over the first `lengths` [B] steps of each row of x [B, T, E]; zeros after. [B, T, out]"""
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out
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
    image: bool = False  # true: the image vector is step 0 of the biLSTM (needs a visual source)
    visual_dim: int | None = Field(None, ge=1)  # grid regions' width (filled in by `train`); unset for captions
    caption_tokens: int = Field(64, ge=1)  # most caption words read for a caption's vector


@register("bilstm-crf")
class BiLSTMCRF(Tagger):
    Params = BiLSTMCRFParams
    params: BiLSTMCRFParams

    @property
    def uses_visual(self) -> bool:  # type: ignore[override]
        """Only with `image: true` (`resolve_params` refuses a visual source otherwise); the class-level
        value is truthy, so `train` leaves the check to `resolve_params`."""
        return self.params.image

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
        if params.image:  # the image vector -> step 0: grid features or a caption's mean word vector
            self.image_in = nn.Linear(params.visual_dim or dim, self.input_dim)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        if not getattr(params, "image", False):
            if visual.source != "none":
                raise MmnerError(f"visual.source: {params.name} is a text-only model and would ignore "
                                 f"{visual.source!r} input; set visual.source: none (or model.image: true for the "
                                 "image at t = 0)")
            if getattr(params, "visual_dim", None) is not None:
                raise MmnerError("model.visual_dim: bilstm-crf without model.image takes no regions; leave it unset")
            return params
        return resolve_region_params(params, visual)

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
        item = self.text_features(post)
        if self.params.image:
            item["image"] = self._image_features(post, visual)
        return item

    def text_features(self, post: Post) -> dict[str, Any]:
        """The words' features (also rpbert's biLSTM-CRF head's): word, vector and char ids, gold tags."""
        tokens = post.tokens
        return {
            **word_features(self.words, self.table, tokens),
            "char_ids": [self.chars.encode(t, MAX_WORD_CHARS) for t in tokens],
            "n_words": len(tokens),
            "tags": self.labels.encode(post) if post.tags is not None else None,
        }

    def _image_features(self, post: Post, visual: VisualInput | None) -> dict[str, Any] | None:
        """What step 0 is made of: the mean grid region [D], or the caption's word and vector ids; None
        for a post without image."""
        if visual is None or visual.masked:
            return None
        if visual.regions is not None:
            return {"regions": checked_regions(post, visual.regions, self.params.visual_dim).float().mean(0)}  # type: ignore[arg-type]
        if visual.caption is not None:
            words = tokenize(visual.caption)[: self.params.caption_tokens]
            return word_features(self.words, self.table, words) if words else None
        return None

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate_text(items)
        if self.params.image:
            batch.update(self._collate_images([item["image"] for item in items]))
        return batch

    def collate_text(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch of `text_features`: word / vector / char ids, word mask, gold tags."""
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

    def _collate_images(self, images: list[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        """`image_mask` [B] (the post has an image), and `image_regions` [B, D] (grid) or the captions'
        `caption_word_ids` / `caption_vector_ids` [B, C] (0 / -1 padding)."""
        b = len(images)
        out = {"image_mask": torch.tensor([x is not None for x in images], dtype=torch.bool)}
        if self.params.visual_dim is not None:
            regions = torch.zeros((b, self.params.visual_dim))
            for i, x in enumerate(images):
                if x is not None:
                    regions[i] = x["regions"]
            return {**out, "image_regions": regions}
        c = max([1, *(len(x["word_ids"]) for x in images if x is not None)])
        word_ids = torch.full((b, c), PAD_ID, dtype=torch.long)
        vector_ids = torch.full((b, c), -1, dtype=torch.long)
        for i, x in enumerate(images):
            if x is not None:
                word_ids[i, : len(x["word_ids"])] = torch.tensor(x["word_ids"])
                vector_ids[i, : len(x["vector_ids"])] = torch.tensor(x["vector_ids"])
        return {**out, "caption_word_ids": word_ids, "caption_vector_ids": vector_ids}

    # -- compute --------------------------------------------------------------------------------
    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """Per-word input vectors [B, W, input_dim]: word vector ++ char-CNN vector."""
        words = self.embed(batch["word_ids"], batch["vector_ids"])
        chars = self.char_cnn(batch["char_ids"])
        return self.dropout(torch.cat([words, chars.to(words.dtype)], dim=-1))

    def image_vector(self, batch: dict[str, Any]) -> torch.Tensor:
        """Step 0 of each post [B, E]: its image vector projected to the word inputs' width (zeros, and
        unused, for a post without image)."""
        if "image_regions" in batch:
            vector = batch["image_regions"]
        else:
            ids = batch["caption_word_ids"]
            words = self.embed(ids, batch["caption_vector_ids"])  # [B, C, dim]
            present = (ids != PAD_ID).unsqueeze(-1).to(words.dtype)
            vector = (words * present).sum(1) / present.sum(1).clamp(min=1)
        return self.dropout(self.image_in(vector.to(self.image_in.weight.dtype)))

    def contextualize(self, x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor | None = None,
                      first_mask: torch.Tensor | None = None) -> torch.Tensor:
        """biLSTM over the unmasked (left-aligned) steps. [B, W, E] -> [B, W, 2 * hidden]. With `first`
        [B, E], the rows of `first_mask` [B] start with it as step 0, whose output is dropped."""
        if first is not None and first_mask is not None:
            b, w, e = x.shape
            shift = first_mask.long()  # 1: the row starts with its image
            full = torch.cat([first.unsqueeze(1).to(x.dtype), x], 1)  # [B, W + 1, E]
            index = (torch.arange(w + 1, device=x.device) + 1 - shift.unsqueeze(1)).clamp(max=w)  # left-aligned
            x = full.gather(1, index.unsqueeze(-1).expand(-1, -1, e))
            out = run_lstm(self.lstm, x, mask.sum(1) + shift)
            words = torch.arange(w, device=x.device) + shift.unsqueeze(1)  # each word's step
            return out.gather(1, words.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        return run_lstm(self.lstm, x, mask.sum(1))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        mask = batch["word_mask"]
        first = self.image_vector(batch) if self.params.image else None
        hidden = self.contextualize(self.inputs(batch), mask, first, batch.get("image_mask"))
        emissions = self.classifier(self.dropout(hidden))  # [B, W, L]
        out = {"emissions": emissions, "word_mask": mask}
        if batch.get("tags") is not None:
            out["loss"] = self.crf.loss(emissions, batch["tags"], mask)
        return out

    def decode(self, batch: dict[str, Any]) -> list[list[int]]:
        out = self.forward({**batch, "tags": None})
        return self.crf.decode(out["emissions"], out["word_mask"])
