"""ctx-crf, mmner's own system: the post's text, its image caption and retrieved training posts in one
encoder window, then a CRF over the text tokens.

    [CLS] text [SEP] caption [SEP] neighbour_1 [SEP] ... neighbour_k [SEP]

What it takes from which idea:
- The caption as the image (Chen et al. 2021, Exp 4.1; `bert-crf-caption`): a post's image enters as text,
  which a small text encoder reads best. A post without image has no caption segment.
- In-domain retrieval (R-GCN's index over the training posts, Zhao et al.; external-context retrieval for
  NER, Wang et al. 2021): the `neighbors` training posts whose text is closest to the post's (cosine of the
  mean-pooled states of the *pretrained* encoder, kept frozen, so queries at predict time are embedded as
  the index was) are appended as extra context, `context_tokens` sub-tokens each. With `context_labels`
  their gold entities are marked in the appended text ("Messi ( person )"), a nearest-neighbour
  demonstration of how such words are tagged. Only training posts are indexed; a post never retrieves
  itself nor a post with the same words (a retweet), in training and at test alike, so the context never
  holds the answer to the post it is appended to.
- Agreement between views (`agreement`, R-Drop / cross-view alignment, as in Wang et al. 2022, ITA): each
  training batch is also tagged with the caption withheld, and the loss adds `agreement` x the symmetric KL
  between the two views' per-word label distributions (softmax of the emissions), so the model stays right
  when the image is missing or says nothing.

Segments: text ids 0, caption and contexts 1 (encoders with segment ids). A post longer than one window is
split as in bert-crf, every window carrying the same caption and contexts, which are cut to half a window
in all, never the text. Region attention (the page's caption bars) covers the caption tokens only.

Run artifacts: `ctx_index/` (the training posts' embeddings, fingerprints and words, and with
`context_labels` their tags). The frozen encoder is the pretrained `model.encoder`, loaded again by `load`
and checked against the digest the index was built with.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.bert_crf_caption import BertCRFCaption, BertCRFCaptionParams
from mmner.models.blocks import weights_digest
from mmner.models.registry import register
from mmner.tagging.alignment import SpecialTokens, make_windows, word_pieces
from mmner.tagging.vocab import LabelVocab
from mmner.text.encoders import load_encoder, resolve_encoder

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput, VisualInputs

log = logging.getLogger("mmner")

INDEX_DIR = "ctx_index"
TYPE_WORDS = {"PER": "person", "LOC": "location", "ORG": "organization", "OTHER": "other", "MISC": "other"}


class ContextCRFParams(BertCRFCaptionParams):
    neighbors: int = Field(2, ge=0)  # training posts appended as context
    context_tokens: int = Field(32, ge=1)  # most sub-tokens per appended post
    context_labels: bool = False  # mark the appended posts' gold entities with their type
    agreement: float = Field(0.0, ge=0.0)  # weight of the text-only / text+caption agreement loss
    index_batch_size: int = Field(64, ge=1)


def post_key(tokens: list[str]) -> str:
    """Identity of a post's words (ids repeat across splits; a retweet repeats the words)."""
    return hashlib.sha1("\t".join(tokens).encode()).hexdigest()[:16]


def marked(tokens: list[str], tags: list[str] | None) -> str:
    """The words as text, each gold entity followed by its type in words: "Lionel Messi ( person ) scores"."""
    if not tags:
        return " ".join(tokens)
    out: list[str] = []
    for i, (word, tag) in enumerate(zip(tokens, tags)):
        out.append(word)
        inside = tag != "O"
        ends = inside and (i + 1 == len(tags) or not tags[i + 1].startswith("I-"))
        if ends:
            kind = tag.split("-", 1)[-1]
            out += ["(", TYPE_WORDS.get(kind, kind.lower()), ")"]
    return " ".join(out)


@register("ctx-crf")
class ContextCRF(BertCRFCaption):
    Params = ContextCRFParams
    params: ContextCRFParams

    def __init__(self, params: ContextCRFParams, labels: LabelVocab, encoder, tokenizer, frozen=None) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        # the pretrained encoder that embeds index and queries: not a submodule, so neither the weights
        # file nor the optimiser sees it
        self.__dict__["_frozen"] = frozen
        self.keys = torch.zeros(0, encoder.config.hidden_size)  # [N, H] L2-normalised
        self.index_keys: list[str] = []  # post_key of each row
        self.contexts: list[str] = []  # each row's text as appended
        self.index_meta: dict[str, Any] = {}
        self._rows: dict[str, list[int]] | None = None  # post_key -> index rows with those words
        self._queries: dict[str, torch.Tensor] = {}  # post_key -> query embedding

    @classmethod
    def resolve_params(cls, params, visual: VisualInputs):
        if visual.source == "none":  # the ablation without the image: contexts only
            return params
        return super().resolve_params(params, visual)

    @classmethod
    def create(cls, params: ContextCRFParams, labels: LabelVocab, train_posts: list[Post]) -> ContextCRF:
        model: ContextCRF = super().create(params, labels, train_posts)  # type: ignore[assignment]
        model.__dict__["_frozen"] = copy.deepcopy(model.encoder).eval().requires_grad_(False)
        return model

    @property
    def frozen(self):
        if self._frozen is None:
            name = self.params.encoder
            try:
                self.__dict__["_frozen"] = load_encoder(resolve_encoder(name), pretrained=True).eval().requires_grad_(False)
            except MmnerError as exc:
                raise MmnerError(f"ctx-crf embeds posts with the pretrained encoder model.encoder = {name!r}, which "
                                 f"cannot be loaded here: {str(exc).splitlines()[0]}") from exc
            built = self.index_meta.get("encoder_digest")
            if built is not None and built != self.encoder_digest():
                raise MmnerError(f"model.encoder = {name!r} here has other weights than the encoder the ctx-crf index "
                                 "was built with; use the same encoder files")
        return self._frozen

    def encoder_digest(self) -> str:
        """Identifies the frozen encoder's weights (`blocks.weights_digest`)."""
        return weights_digest(self.frozen)

    # -- the index ------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, posts: list[Post]) -> torch.Tensor:
        """Mean-pooled frozen-encoder states of each post's words (one window, special tokens included, as
        sentence encoders pool), L2-normalised. [B, H]"""
        texts = [" ".join(p.tokens) for p in posts]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=min(self.max_length, 128),
                             return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        states = self.frozen(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-8)

    def build_index(self, posts: list[Post], visual: VisualInputs | None = None, device: torch.device | None = None) -> None:
        """Index the training posts (only these: valid, test and new posts only query)."""
        started = time.perf_counter()
        self.index_meta = {"encoder_digest": self.encoder_digest()}
        keys = [self.embed(posts[i : i + self.params.index_batch_size])
                for i in range(0, len(posts), self.params.index_batch_size)]
        self.keys = torch.cat(keys) if keys else torch.zeros(0, self.encoder.config.hidden_size)
        self.index_keys = [post_key(p.tokens) for p in posts]
        labelled = self.params.context_labels
        self.contexts = [marked(p.tokens, p.tags if labelled else None) for p in posts]
        self._rows, self._queries = None, {}
        self.index_meta.update(posts=len(posts), context_labels=labelled,
                               build_seconds=round(time.perf_counter() - started, 3))
        log.info("ctx-crf index: %d training posts in %.1f s", len(posts), time.perf_counter() - started)

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        folder = Path(run_dir) / INDEX_DIR
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"keys": self.keys.contiguous()}, str(folder / "vectors.safetensors"))
        (folder / "index.json").write_text(json.dumps({**self.index_meta, "keys": self.index_keys,
                                                       "contexts": self.contexts}, ensure_ascii=False) + "\n",
                                           encoding="utf-8")

    @classmethod
    def load(cls, params: ContextCRFParams, labels: LabelVocab, run_dir: Path) -> ContextCRF:
        model: ContextCRF = super().load(params, labels, run_dir)  # type: ignore[assignment]
        folder = Path(run_dir) / INDEX_DIR
        try:
            meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            model.keys = load_file(str(folder / "vectors.safetensors"))["keys"]
            model.index_keys, model.contexts = meta.pop("keys"), meta.pop("contexts")
        except (OSError, ValueError, KeyError) as exc:
            raise MmnerError(f"{folder}: no readable ctx-crf index ({exc}); the run directory is incomplete") from exc
        if not (len(model.keys) == len(model.index_keys) == len(model.contexts)):
            raise MmnerError(f"{folder}: the ctx-crf index's vectors and posts differ in length")
        model.index_meta = meta
        return model

    def neighbours(self, post: Post) -> list[int]:
        """Index rows of the post's `neighbors` nearest training posts, best first; never a post with the
        same words (the post itself, a retweet)."""
        k = self.params.neighbors
        if k == 0 or not len(self.keys):
            return []
        key = post_key(post.tokens)
        if self._rows is None:
            self._rows = {}
            for row, words in enumerate(self.index_keys):
                self._rows.setdefault(words, []).append(row)
        same = self._rows.get(key, [])
        if key not in self._queries:  # an indexed post's words were embedded when the index was built
            self._queries[key] = self.keys[same[0]] if same else self.embed([post])[0]
        sims = self.keys @ self._queries[key]  # [N]
        if same:
            sims = sims.clone()
            sims[same] = float("-inf")
        top = sims.topk(min(k, len(sims)))
        return [int(r) for r, s in zip(top.indices, top.values) if torch.isfinite(s)]

    # -- data -----------------------------------------------------------------------------------
    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        item = self._featurize(post, visual)
        if self.params.agreement > 0 and post.tags is not None:  # the other view: the caption withheld
            item["text_only"] = self._featurize(post, None) if item["caption"] else dict(item)
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        if items and all("text_only" in item for item in items):
            batch["text_only"] = super().collate([item["text_only"] for item in items])
        return batch

    def _featurize(self, post: Post, visual: VisualInput | None) -> dict[str, Any]:
        s = self.special
        caption: list[int] = []
        if visual is not None and visual.caption is not None:
            caption = self.tokenizer(visual.caption, add_special_tokens=False)["input_ids"][: self.caption_budget()]
        room = self.max_length // 2 - len(s.middle) - len(caption)  # the extra segments take half a window at most
        context: list[int] = []
        rows = self.neighbours(post)
        for row in rows:
            ids = self.tokenizer(self.contexts[row], add_special_tokens=False)["input_ids"][: self.params.context_tokens]
            piece = (s.middle if context or caption else []) + ids
            if len(piece) > room - len(context):
                break
            context += piece
        extra = caption + context
        if not extra:
            return {**super(BertCRFCaption, self).featurize(post), "segment_b": None, "caption": [], "neighbours": []}
        frame = SpecialTokens(prefix=s.prefix, suffix=s.middle + extra + s.suffix, middle=[])
        budget = self.max_length - len(frame.prefix) - len(frame.suffix)
        windows = make_windows(frame, word_pieces(self.tokenizer, post.tokens, budget), self.max_length)
        tail = len(extra) + len(s.suffix)
        return {
            "windows": windows,
            "segment_b": [len(w.input_ids) - tail for w in windows],
            "caption": caption,
            "neighbours": rows,
            "n_words": len(post.tokens),
            "tags": self.labels.encode(post) if post.tags is not None else None,
        }

    # -- compute --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = super().forward(batch)
        if self.training and self.params.agreement > 0 and batch.get("tags") is not None and "text_only" in batch:
            other = super().forward({**batch["text_only"], "tags": batch["tags"]})
            p = F.log_softmax(out["emissions"].float(), -1)
            q = F.log_softmax(other["emissions"].float(), -1)
            mask = batch["word_mask"].unsqueeze(-1).float()
            kl = ((p.exp() * (p - q) + q.exp() * (q - p)) * mask).sum() / mask.sum().clamp(min=1.0) / 2
            out["loss"] = (out["loss"] + other["loss"]) / 2 + self.params.agreement * kl
        return out
