"""R-GCN after Zhao et al. (2022), built from their slides, which name the modules and give the results but
no equations and no hyper-parameters. What mmner implements is retrieval-based graphs over caption/text
embeddings: a post is tagged with the help of *other* posts' captions (standing in for their images), found
by cosine similarity in an index over the training posts, linked to the post in small star graphs, passed
through graph convolutions and gated into every word. Every choice below the module level is mmner's; the
ones that shape the graphs are config keys (defaults in brackets, those every run so far was trained with),
the rest are fixed. docs/fidelity.md (R-GCN) lists each with the slides' and the released code's side.

- Index (`RelationIndex`), built once per run over the training posts (`build_index`, called by
  `train` right after `create`: the visual inputs are the run's, which `create` does not see) and saved
  in the run directory (`rgcn_index/`), so `load` needs nothing else; runs on the same training posts,
  visual inputs and encoder (seeds, ablations) share one build through `$MMNER_CACHE/rgcn-index/`
  (`index_cache`). Per training post: its image
  embedding (caption sources: the mean-pooled states of a frozen copy of the pretrained text encoder
  over the caption; grid: the mean of its grid regions), its text embedding (the frozen encoder,
  mean-pooled over the text) and whether it has an image. No labels are stored. (Fixed: mean pooling,
  the frozen pretrained encoder, training posts only.)
- Queries are embedded the same way, by the same frozen encoder, in `forward`, so a new post at
  predict time is embedded exactly as the index was. The frozen encoder is the pretrained one, so it is
  stored by reference, not copied into model.safetensors or the checkpoints: `load` brings it back from
  `model.encoder` (a packaged name or local directory) and checks it against the digest the index was
  built with. Nearest neighbours (`nearest`): exact cosine
  search, one batched matrix product per chunk of the index, top-k merged across chunks.
- Inter-modal relation graph, per post: the text node and the captions of the `neighbors` [5] training
  posts whose captions match the text best (text-to-caption similarity; with grid regions, which are not
  in the text's space, the similarity of the text to the texts paired with those images stands in for it).
- Intra-modal relation graph, per post: its own caption and the `neighbors` most similar training captions
  (caption-to-caption similarity).
- Graph construction (`star_adjacency`): edges join the centre (text / own caption) to each neighbour and
  are kept when the similarity is at least the graph's threshold: `inter_threshold` / `intra_threshold`,
  each by default (null) `threshold` [0.0: every positively similar neighbour among the top k; -1.0 keeps
  all k]. `edge_weights` [cosine]: an edge weighs its similarity clamped at 0, or 1 (`binary`). Fixed:
  star topology (no neighbour-neighbour edges), self loops on every node, symmetric normalisation
  D^-1/2 A D^-1/2; node features: the mean fine-tuned word state (text node), the projected caption
  embedding (`image_proj`, caption nodes).
- `gcn_layers` [2] graph convolutions per graph (the depth), X' = ReLU(Â X W) with dropout; one GCN per graph.
- Each word attends over the nodes of both graphs; a gate g = sigmoid(W [h ; c]) in [0, 1]^H decides
  how much of the visual context c each word takes; [h ; g * c] -> emissions -> CRF. (Fixed: scaled
  dot-product attention, the gate's form.)

A post never retrieves itself: a training post knows its row in the index (`index_row`, matched by post
id and tokens) and that row is left out of its search. Only training posts are ever indexed; valid and
test posts, and new posts, only query. A post without image (masked) has no own-image node and no
intra-modal graph; its text still retrieves images.

Ablations (Zhao et al., Table 2) are switches: `inter: false` (w/o InterRG, i.e. intra-only),
`intra: false` (w/o IntraRG, inter-only); `gate: false` is Table 1's "w/o Gate".
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from safetensors.torch import load_file, save_file
from torch import nn

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import ModelParams
from mmner.models.bert_crf import BertCRF, BertCRFParams
from mmner.models.blocks import (
    RegionParams,
    collate_visual,
    featurize_visual,
    masked_mean,
    masked_softmax,
    resolve_region_params,
    weights_digest,
)
from mmner.models.registry import register
from mmner.tagging.vocab import LabelVocab
from mmner.text.encoders import cache_dir, load_encoder, resolve_encoder

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput, VisualInputs

INDEX_DIR = "rgcn_index"
_INDEX_VERSION = 1  # of how index vectors are computed; part of the shared cache's key
FROZEN = "frozen."  # state-dict prefix of the frozen encoder, kept out of saved weights


class RGCNParams(BertCRFParams, RegionParams):
    inter: bool = True  # inter-modal relation graph (text -> other posts' images)
    intra: bool = True  # intra-modal relation graph (image -> other posts' images)
    gate: bool = True  # false: [h ; c] without the gate (Table 1, "w/o Gate")
    # How the graphs are built and how deep they are. The slides give none of these: the defaults are
    # mmner's, except `neighbors`, the authors' released `top_k`. They are what every run was trained with
    # before its config had the key, so a run directory whose config.yaml lacks one (loading it, and
    # benchmarks/rgcn.py stating its settings) reads that default: never change a default.
    neighbors: int = Field(5, ge=1)  # k: training posts retrieved per graph (exact top k by cosine)
    # An edge to a retrieved post is kept when its cosine similarity to the centre is >= the threshold:
    # 0.0 keeps the positively similar ones among the top k, -1.0 all k (as the released code's graphs).
    threshold: float = Field(0.0, ge=-1.0, le=1.0)
    # Each graph's own threshold (null: `threshold`): text-to-caption and caption-to-caption cosines are
    # not on the same scale.
    inter_threshold: float | None = Field(None, ge=-1.0, le=1.0)
    intra_threshold: float | None = Field(None, ge=-1.0, le=1.0)
    edge_weights: Literal["cosine", "binary"] = "cosine"  # an edge's weight in A: its cosine (clamped at 0), or 1
    gcn_layers: int = Field(2, ge=1)  # graph convolutions per graph (the released code has one)
    index_batch_size: int = Field(64, ge=1)  # posts per batch when the index is built
    # Share built indexes between runs ($MMNER_CACHE/rgcn-index/<key>): the seeds and ablations of one
    # dataset, encoder and visual input build it once. The key covers the frozen weights, the posts
    # and their visual inputs, so a changed caption file or encoder builds a new one.
    index_cache: bool = True

    @field_validator("inter_threshold", "intra_threshold")
    @classmethod
    def _graph_is_on(cls, value: float | None, info: ValidationInfo) -> float | None:
        graph = info.field_name.removesuffix("_threshold")
        if value is not None and info.data.get(graph) is False:
            raise PydanticCustomError("graph_off", "set, but model.{graph}: false builds no {graph}-modal graph "
                                      "(leave it unset)", {"graph": graph})
        return value

    def threshold_of(self, graph: str) -> float:
        """The similarity an edge of `graph` ("inter" or "intra") needs at least."""
        own = getattr(self, f"{graph}_threshold")
        return self.threshold if own is None else own


def _drop_frozen(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state if k.startswith(prefix + FROZEN)]:
        del state[key]


def _frozen_not_missing(module: nn.Module, incompatible: Any) -> None:
    """Weights without the frozen encoder load strictly (the encoder comes from `model.encoder`)."""
    missing = incompatible.missing_keys
    missing[:] = [k for k in missing if not (k.startswith(FROZEN) or f".{FROZEN}" in k)]


def _has_frozen_weights(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any(k.startswith(FROZEN) for k in f.keys())


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def fingerprint(post: Post) -> str:
    """Identity of a post in the index: its id and its tokens (ids alone repeat across splits)."""
    return hashlib.sha1(f"{post.id}\t{' '.join(post.tokens)}".encode()).hexdigest()[:16]


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def nearest(queries: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, exclude: torch.Tensor, k: int,
            chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by cosine: queries [B, D], keys [N, D] (both L2-normalised), `valid` [N] (rows that may
    be retrieved), `exclude` [B] (a row each query must not retrieve, -1 for none).

    Returns (`rows` [B, k'], `sims` [B, k']), k' = min(k, N), best first; a slot without a retrievable
    row has sim -inf. The index is scanned in chunks of `chunk` rows, so memory stays [B, chunk]
    however large the collection grows.
    """
    k = min(k, keys.shape[0])
    with torch.autocast(queries.device.type, enabled=False):  # full precision: bf16 would reorder near ties
        return _nearest(queries.float(), keys.float(), valid, exclude, k, chunk)


def _nearest(queries: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, exclude: torch.Tensor, k: int,
             chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, n = queries.shape[0], keys.shape[0]
    best_rows = torch.zeros(b, 0, dtype=torch.long, device=queries.device)
    best_sims = queries.new_zeros(b, 0)
    for start in range(0, n, chunk):
        sims = queries @ keys[start : start + chunk].T  # [B, C]
        sims = sims.masked_fill(~valid[start : start + chunk], float("-inf"))
        local = exclude - start
        hit = (local >= 0) & (local < sims.shape[1])
        sims[hit.nonzero(as_tuple=True)[0], local[hit]] = float("-inf")
        top_sims, top_rows = sims.topk(min(k, sims.shape[1]), dim=-1)  # [B, k]
        best_sims = torch.cat([best_sims, top_sims], 1)
        best_rows = torch.cat([best_rows, top_rows + start], 1)
        best_sims, order = best_sims.topk(min(k, best_sims.shape[1]), dim=-1)
        best_rows = best_rows.gather(1, order)
    return best_rows, best_sims


def star_adjacency(sims: torch.Tensor, edges: torch.Tensor, centre: torch.Tensor, binary: bool = False) -> torch.Tensor:
    """Normalised adjacency of per-post star graphs: node 0 the centre, nodes 1..k the neighbours.

    sims [B, k] similarities, `edges` [B, k] (True = the neighbour is in the graph), `centre` [B] (True =
    the centre node exists). A = self loops on existing nodes + centre<->neighbour edges of weight sim
    clamped at 0 (`binary`: weight 1); returns D^-1/2 A D^-1/2 [B, 1+k, 1+k] (rows and columns of absent
    nodes are 0).
    """
    edges = edges & centre[:, None]
    nodes = torch.cat([centre[:, None], edges], 1).to(sims.dtype)  # [B, 1+k]
    adj = torch.diag_embed(nodes)  # [B, 1+k, 1+k]
    weights = torch.where(edges, torch.ones_like(sims) if binary else sims.clamp(min=0.0), torch.zeros_like(sims))
    adj[:, 0, 1:] = weights
    adj[:, 1:, 0] = weights
    degree = adj.sum(-1)  # [B, 1+k]
    scale = torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))
    return scale[:, :, None] * adj * scale[:, None, :]


class GCN(nn.Module):
    """`layers` graph convolutions over batched dense graphs: X' = ReLU(Â X W). Each post's graph has
    at most 1 + k nodes, so one batched matmul [B, n, n] x [B, n, H] is all it takes (sparse kernels
    would only add overhead at this size)."""

    def __init__(self, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, nodes: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """nodes [B, n, H], adj [B, n, n] -> [B, n, H] (absent nodes stay 0)."""
        for layer in self.layers:
            nodes = torch.relu(adj @ layer(self.dropout(nodes)))
        return nodes


class RelationIndex:
    """The training posts' embeddings: `images` [N, Dv], `texts` [N, H], `valid` [N] (has an image), with
    L2-normalised copies for search, and the posts' `fingerprints` in row order (`rows`: fingerprint ->
    row). Kept out of the module's state (it lives in `rgcn_index/`, not model.safetensors, and DDP has
    nothing to broadcast); `on(device)` moves it next to the model when first searched there."""

    def __init__(self, image_dim: int, text_dim: int) -> None:
        self.meta: dict[str, Any] = {}
        self.rows: dict[str, int] = {}
        self.set(torch.zeros(0, image_dim), torch.zeros(0, text_dim), torch.zeros(0, dtype=torch.bool), [])

    def set(self, images: torch.Tensor, texts: torch.Tensor, valid: torch.Tensor, fingerprints: list[str],
            **meta: Any) -> None:
        if not (len(images) == len(texts) == len(valid) == len(fingerprints)):
            raise MmnerError("rgcn index: images, texts, valid and fingerprints differ in length")
        self.images, self.texts, self.valid = images.float().cpu(), texts.float().cpu(), valid.bool().cpu()
        self.image_keys, self.text_keys = normalize(self.images), normalize(self.texts)
        self.fingerprints = list(fingerprints)
        self.rows = {f: i for i, f in enumerate(fingerprints)}
        self.meta = {**meta, "posts": len(fingerprints), "with_image": int(self.valid.sum())}

    def on(self, device: torch.device) -> RelationIndex:
        if self.images.device != device:
            with torch.inference_mode(False):  # first search may be under inference mode; later ones train
                for name in ("images", "texts", "valid", "image_keys", "text_keys"):
                    setattr(self, name, getattr(self, name).to(device))
        return self

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"images": self.images.cpu().contiguous(), "texts": self.texts.cpu().contiguous(),
                   "valid": self.valid.cpu().to(torch.uint8)}, str(folder / "vectors.safetensors"))
        (folder / "index.json").write_text(json.dumps({**self.meta, "fingerprints": self.fingerprints}, indent=1) + "\n")

    def load(self, folder: Path) -> None:
        if not (folder / "index.json").is_file():
            raise MmnerError(f"{folder}: no rgcn index (index.json); the run directory is incomplete")
        meta = json.loads((folder / "index.json").read_text())
        vectors = load_file(str(folder / "vectors.safetensors"))
        fingerprints = meta.pop("fingerprints")
        for key in ("posts", "with_image"):
            meta.pop(key, None)
        self.set(vectors["images"], vectors["texts"], vectors["valid"].bool(), fingerprints, **meta)


@register("rgcn")
class RGCN(BertCRF):
    Params = RGCNParams
    params: RGCNParams
    uses_visual = True

    def __init__(self, params: RGCNParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        if not (params.inter or params.intra):
            raise MmnerError("model.inter, model.intra: rgcn needs at least one relation graph "
                             "(both off is the text-only bert-crf)")
        h = self.hidden = encoder.config.hidden_size
        self.region_dim = params.visual_dim or h
        # A frozen copy of the pretrained encoder embeds index and queries alike; the tagger's own encoder
        # is fine-tuned and would drift away from the index built before training.
        self.frozen = copy.deepcopy(encoder).eval()
        self.frozen.requires_grad_(False)
        # It is the pretrained encoder, so weights files and checkpoints leave it out (`load` restores it).
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_post_hook(_frozen_not_missing)
        self.index = RelationIndex(self.region_dim, h)
        self.image_proj = nn.Linear(self.region_dim, h)  # image embeddings -> node features
        if params.inter:
            self.inter_gcn = GCN(h, params.gcn_layers, params.dropout)
        if params.intra:
            self.intra_gcn = GCN(h, params.gcn_layers, params.dropout)
        self.query = nn.Linear(h, h)
        if params.gate:
            self.gate = nn.Linear(2 * h, h)
        self.classifier = nn.Linear(2 * h, len(labels))

    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        return resolve_region_params(params, visual)

    def train(self, mode: bool = True) -> RGCN:
        super().train(mode)
        self.frozen.eval()  # no dropout in the embeddings the index is searched with
        return self

    # -- the index ------------------------------------------------------------------------------
    def build_index(self, posts: list[Post], visual: VisualInputs, device: torch.device | None = None) -> None:
        """Index the training posts (only these: never valid, test or new posts) with their visual inputs,
        or load the same index from the shared cache (`index_cache`)."""
        started = time.perf_counter()
        fingerprints = [fingerprint(p) for p in posts]
        shared = cache_dir() / "rgcn-index" / self._index_key(posts, visual) if self.params.index_cache else None
        if shared is not None and (shared / "index.json").is_file():
            self.index.load(shared)
            if self.index.fingerprints == fingerprints:
                self.index.meta.update(cache_hit=True, load_seconds=round(time.perf_counter() - started, 3))
                return
        device = device or torch.device("cpu")
        home = next(self.frozen.parameters()).device
        self.frozen.to(device)
        images, texts, valid = [], [], []
        for chunk in _chunks(posts, self.params.index_batch_size):
            items = [self.featurize(p, v) for p, v in zip(chunk, visual.get_many(chunk))]
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.collate(items).items()}
            emb = self.embed(batch, fresh=True)
            images.append(emb["image"].cpu())
            texts.append(emb["text"].cpu())
            valid.append(emb["image_valid"].cpu())
        self.frozen.to(home)
        self.index.set(torch.cat(images) if images else torch.zeros(0, self.region_dim),
                       torch.cat(texts) if texts else torch.zeros(0, self.hidden),
                       torch.cat(valid) if valid else torch.zeros(0, dtype=torch.bool),
                       fingerprints, source=visual.source, detail=visual.detail, encoder=self.params.encoder,
                       encoder_digest=self.encoder_digest(), build_seconds=round(time.perf_counter() - started, 3))
        if shared is not None:
            partial = shared.with_name(f"{shared.name}.{os.getpid()}.partial")
            self.index.save(partial)
            try:
                partial.rename(shared)  # whole or not at all
            except OSError:  # a concurrent run (another seed, another DDP rank) stored it first
                shutil.rmtree(partial, ignore_errors=True)
        self.index.meta["cache_hit"] = False

    def _index_key(self, posts: list[Post], visual: VisualInputs) -> str:
        """What the index is a function of: frozen weights, featurisation, the posts and their visual inputs."""
        digest = hashlib.sha1()
        digest.update(self.encoder_digest().encode())
        digest.update(json.dumps([_INDEX_VERSION, self.params.encoder, self.max_length, self.params.caption_tokens,
                                  self.region_dim, visual.source, visual.detail]).encode())
        for chunk in _chunks(posts, self.params.index_batch_size):
            for post, v in zip(chunk, visual.get_many(chunk)):
                digest.update(fingerprint(post).encode())
                if v.regions is not None:
                    digest.update(v.regions.float().numpy().tobytes())
                else:
                    digest.update(repr((v.caption, v.masked)).encode())
        return digest.hexdigest()[:20]

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        self.index.save(run_dir / INDEX_DIR)

    def encoder_digest(self) -> str:
        """Identifies the frozen encoder's weights (`blocks.weights_digest`)."""
        return weights_digest(self.frozen)

    @classmethod
    def load(cls, params: RGCNParams, labels: LabelVocab, run_dir: Path) -> RGCN:
        model: RGCN = super().load(params, labels, run_dir)  # type: ignore[assignment]
        model.index.load(run_dir / INDEX_DIR)
        weights = run_dir / "model.safetensors"  # absent when an interrupted training resumes
        if not (weights.is_file() and _has_frozen_weights(weights)):  # (earlier runs carry a copy)
            model._restore_frozen(run_dir)
        return model

    def _restore_frozen(self, run_dir: Path) -> None:
        """The pretrained encoder the index was built with, from `model.encoder`, checked by its digest."""
        name = self.params.encoder
        try:
            pretrained = load_encoder(resolve_encoder(name), pretrained=True)
            self.frozen.load_state_dict(pretrained.state_dict(), strict=True)
        except (MmnerError, RuntimeError) as exc:
            raise MmnerError(f"{run_dir}: rgcn embeds posts with the pretrained encoder model.encoder = {name!r}, "
                             f"which cannot be loaded here: {str(exc).splitlines()[0]}") from exc
        built_with = self.index.meta.get("encoder_digest")
        if built_with is not None and built_with != self.encoder_digest():
            raise MmnerError(f"{run_dir}: model.encoder = {name!r} here has other weights than the encoder its "
                             "rgcn index was built with; use the same encoder files")

    # -- data -----------------------------------------------------------------------------------
    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        framing = len(self.special.prefix) + len(self.special.suffix)  # a caption is encoded on its own
        limit = min(self.params.caption_tokens, self.max_length - framing)
        return {**super().featurize(post), **featurize_visual(post, visual, self.tokenizer, self.region_dim, limit),
                "index_row": self.index.rows.get(fingerprint(post), -1)}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        batch.update(collate_visual(items, self.region_dim, self.special, self.tokenizer.pad_token_id or 0))
        batch["window_post"] = torch.tensor([b for b, item in enumerate(items) for _ in item["windows"]])
        batch["index_row"] = torch.tensor([item["index_row"] for item in items], dtype=torch.long)  # [B]
        return batch

    # -- compute --------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, batch: dict[str, Any], fresh: bool = False) -> dict[str, torch.Tensor]:
        """The frozen embeddings of a batch's posts: `text` [B, H] (mean over every token of every
        window, special tokens included, as sentence encoders pool), `image` [B, Dv], `image_valid` [B].

        In training every post is an indexed training post, whose embeddings the index holds: they are
        read from it rather than recomputed by the frozen encoder each epoch (unless `fresh`)."""
        rows = batch.get("index_row")
        if self.training and not fresh and rows is not None and len(rows) and bool((rows >= 0).all()):
            index = self.index.on(rows.device)
            return {"text": index.texts[rows], "image": index.images[rows], "image_valid": index.valid[rows]}
        attention = batch["attention_mask"]
        states = self.frozen(input_ids=batch["input_ids"], attention_mask=attention).last_hidden_state  # [N, T, H]
        weights = attention.to(states.dtype)
        sums = (states * weights.unsqueeze(-1)).sum(1)  # [N, H]
        b = batch["word_mask"].shape[0]
        post_sums = sums.new_zeros(b, sums.shape[-1]).index_add_(0, batch["window_post"], sums)
        counts = weights.new_zeros(b).index_add_(0, batch["window_post"], weights.sum(1))
        text = post_sums / counts.clamp(min=1.0)[:, None]
        if "caption_ids" in batch:
            cap = self.frozen(input_ids=batch["caption_ids"], attention_mask=batch["caption_attention"]).last_hidden_state
            image = masked_mean(cap, batch["caption_attention"].bool())  # [B, H]
            image_valid = batch["caption_tokens"].any(-1)
        else:
            image = masked_mean(batch["regions"], batch["region_mask"])  # [B, D]
            image_valid = batch["region_mask"].any(-1)
        image = image * image_valid[:, None].to(image.dtype)
        return {"text": text.float(), "image": image.float(), "image_valid": image_valid}

    def relations(self, emb: dict[str, torch.Tensor], index_row: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per graph, `(rows [B, k], sims [B, k], edges [B, k], centre [B])`: the retrieved training posts,
        their similarity to the centre, which are kept (top k, at least the graph's threshold), whether the
        centre exists."""
        index, k, out = self.index.on(emb["text"].device), self.params.neighbors, {}
        if self.params.inter:
            # text-to-image: caption embeddings live in the text's space; grid features do not, so there
            # the texts paired with the images stand in for them
            keys = index.text_keys if self.params.visual_dim is not None else index.image_keys
            rows, sims = nearest(normalize(emb["text"]), keys, index.valid, index_row, k)
            centre = torch.ones_like(emb["image_valid"])
            out["inter"] = (rows, sims, torch.isfinite(sims) & (sims >= self.params.threshold_of("inter")), centre)
        if self.params.intra:
            rows, sims = nearest(normalize(emb["image"]), index.image_keys, index.valid, index_row, k)
            centre = emb["image_valid"]
            out["intra"] = (rows, sims, torch.isfinite(sims) & (sims >= self.params.threshold_of("intra"))
                            & centre[:, None], centre)
        return out

    def compute(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        words = self.dropout(self.word_states(batch))  # [B, W, H]
        emb = self.embed(batch)
        image_nodes = self.image_proj(emb["image"])  # [B, H] (own image)
        out: dict[str, torch.Tensor] = {}
        nodes, masks = [], []
        for name, (rows, sims, edges, centre) in self.relations(emb, batch["index_row"]).items():
            neighbours = self.image_proj(self.index.on(rows.device).images[rows])  # [B, k, H]
            if name == "inter":
                centre_node = masked_mean(words, batch["word_mask"])  # the text node [B, H]
                gcn = self.inter_gcn
            else:
                centre_node = image_nodes
                gcn = self.intra_gcn
            x = torch.cat([centre_node[:, None], neighbours], 1)  # [B, 1+k, H]
            adj = star_adjacency(sims, edges, centre.bool(), binary=self.params.edge_weights == "binary")
            nodes.append(gcn(x, adj))
            masks.append(torch.cat([centre.bool()[:, None], edges & centre.bool()[:, None]], 1))
            out[f"{name}_rows"], out[f"{name}_edges"], out[f"{name}_adjacency"] = rows, edges, adj
        memory, memory_mask = torch.cat(nodes, 1), torch.cat(masks, 1)  # [B, n, H], [B, n]
        scores = self.query(words) @ memory.transpose(1, 2) / math.sqrt(self.hidden)  # [B, W, n]
        context = masked_softmax(scores, memory_mask[:, None, :]) @ memory  # [B, W, H]
        if self.params.gate:
            gate = torch.sigmoid(self.gate(torch.cat([words, context], -1)))  # [B, W, H]
            context = gate * context
            out["gate"] = gate
        out["emissions"] = self.classifier(self.dropout(torch.cat([words, context], -1)))  # [B, W, L]
        return out

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {**self.compute(batch), "word_mask": batch["word_mask"]}
        if batch.get("tags") is not None:
            out["loss"] = self.crf.loss(out["emissions"], batch["tags"], batch["word_mask"])
        return out
