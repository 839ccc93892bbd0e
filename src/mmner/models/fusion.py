"""Fusion heads of Chen et al. (§3.3) on a text encoder, each followed by the CRF.

The text encoder gives one state per word (first sub-token, windows as in BERT-CRF), the visual
regions are projected to the same width (`blocks.VisualRegions`: grid features, or caption regions
encoded by the same encoder), and a head fuses the two per word before the emission layer:

- `fusion-cm`, concatenation module: per word, its state, its character vector (a char CNN, as the
  paper's CM) and the pooled image vector, each projected to the same width and concatenated.
- `fusion-vam`, visual attention module (Lu et al. 2018): a biLSTM over the words gives a text query
  that attends over the regions; a gated fusion per word decides how much of the attended image it
  takes (visual modulation gate). `query: token` lets every word be its own query instead.
- `fusion-cam`, co-attention module (Zhang et al. 2018): word-guided visual attention, image-guided
  textual attention, gated multimodal fusion and a filtration gate; the word and the filtered
  multimodal vector are concatenated.
- `fusion-tam`, transformer attention module: `layers` transformer cross-attention layers in which
  the words attend over the regions.

A post without image (all regions masked) has a zero attended / pooled image vector, so its tags are
a function of its text alone; padding regions are left out of every attention and pooling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import ModelParams
from mmner.models.bert_crf import BertCRF, BertCRFParams
from mmner.models.blocks import (
    AttentionRecord,
    CrossAttentionLayer,
    RegionParams,
    VisualRegions,
    collate_visual,
    featurize_visual,
    masked_mean,
    masked_softmax,
    resolve_region_params,
)
from mmner.models.registry import register
from mmner.tagging.vocab import LabelVocab
from mmner.text.encoders import load_encoder, load_tokenizer, resolve_encoder
from mmner.text.vectors import MAX_WORD_CHARS, PAD_ID, CharCNN, CharVocab

VOCAB_FILE = "vocab.json"

if TYPE_CHECKING:
    from mmner.vision.inputs import VisualInput, VisualInputs


class FusionParams(BertCRFParams, RegionParams):
    pass


class CMParams(FusionParams):
    # The character vector of 2.1 (a char CNN over the word, Lample et al.); false: [h_t ; v] only.
    chars: bool = True
    char_dim: int = Field(25, ge=1)
    char_filters: int = Field(50, ge=1)


class AttentionFusionParams(FusionParams):
    attention_dim: int = Field(256, ge=1)  # width of the additive attention's hidden layer


class VAMParams(AttentionFusionParams):
    query: Literal["sentence", "token"] = "sentence"  # Lu et al.: one biLSTM query per post


class TAMParams(FusionParams):
    layers: int = Field(1, ge=1)
    heads: int | None = Field(None, ge=1)  # default: the text encoder's number of heads


class FusionTagger(BertCRF):
    """Text encoder + projected regions + a fusion head (`fuse`) + CRF; one subclass per head."""

    Params = FusionParams
    uses_visual = True

    def __init__(self, params: FusionParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        self.hidden = encoder.config.hidden_size
        self.region_dim = params.visual_dim or self.hidden
        self.visual = VisualRegions(self.region_dim, self.hidden)
        self.classifier = nn.Linear(self.fused_width(), len(labels))

    def fused_width(self) -> int:
        return self.hidden

    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        return resolve_region_params(params, visual)

    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        framing = len(self.special.prefix) + len(self.special.suffix)  # a caption is encoded on its own
        limit = min(self.params.caption_tokens, self.max_length - framing)
        return {**super().featurize(post), **featurize_visual(post, visual, self.tokenizer, self.region_dim, limit)}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        batch.update(collate_visual(items, self.region_dim, self.special, self.tokenizer.pad_token_id or 0))
        return batch

    def fuse(self, words: torch.Tensor, word_mask: torch.Tensor, regions: torch.Tensor,
             region_mask: torch.Tensor, record: AttentionRecord | None = None,
             batch: dict[str, Any] | None = None) -> torch.Tensor:
        """words [B, W, H], regions [B, R, H] (masks [B, W], [B, R]) -> fused [B, W, fused_width]; a
        head that attends over the regions puts its weights [B, W, R] in `record["word_region"]`; `batch`
        for a head that reads more of the post (fusion-cm's characters)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        words = self.dropout(self.word_states(batch))  # [B, W, H]
        regions, region_mask = self.visual(batch, self.encoder)  # [B, R, H], [B, R]
        record = batch.get("_record") if self.region_attention else None
        fused = self.fuse(words, batch["word_mask"], self.dropout(regions), region_mask, record, batch)
        if record is not None:
            record["region_mask"] = region_mask
        emissions = self.classifier(self.dropout(fused))  # [B, W, L]
        out = {"emissions": emissions, "word_mask": batch["word_mask"]}
        if batch.get("tags") is not None:
            out["loss"] = self.crf.loss(emissions, batch["tags"], batch["word_mask"])
        return out


class AdditiveAttention(nn.Module):
    """score(q, k) = w . tanh(W_q q + W_k k): queries [B, Q, Hq] over keys [B, K, Hk] -> weights [B, Q, K]."""

    def __init__(self, query_dim: int, key_dim: int, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, dim)
        self.key = nn.Linear(key_dim, dim, bias=False)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(self.query(queries).unsqueeze(2) + self.key(keys).unsqueeze(1))  # [B, Q, K, dim]
        return masked_softmax(self.score(z).squeeze(-1), key_mask.unsqueeze(1))  # [B, Q, K]


@register("fusion-cm")
class FusionCM(FusionTagger):
    """Concatenation module (Chen et al. 2.1): word, character and image vectors of each word projected
    to the same width and concatenated, [W_w h_t ; W_c c_t ; W_v v] -> 3H, with h_t the encoder state, c_t
    the char-CNN vector of the word (`chars`) and v the mean of the projected regions (the global image
    vector). With `chars: false`, [h_t ; v] (2H) as before the character vector was added.

    Run artifact with `chars`: `vocab.json`, the character vocabulary of the training words."""

    Params = CMParams
    params: CMParams

    def __init__(self, params: CMParams, labels: LabelVocab, encoder, tokenizer, chars: CharVocab | None = None) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        h = self.hidden
        if params.chars:
            if chars is None:
                raise ValueError("fusion-cm with chars needs a character vocabulary")
            self.chars = chars
            self.char_cnn = CharCNN(len(chars), params.char_dim, params.char_filters, dropout=params.dropout)
            self.word_in = nn.Linear(h, h)  # W_w, W_c, W_v: the three vectors to one width
            self.char_in = nn.Linear(params.char_filters, h)
            self.image_in = nn.Linear(h, h)

    def fused_width(self) -> int:
        return (3 if self.params.chars else 2) * self.hidden

    @classmethod
    def create(cls, params: CMParams, labels: LabelVocab, train_posts: list[Post]) -> "FusionCM":
        path = resolve_encoder(params.encoder)
        chars = CharVocab.build(t for post in train_posts for t in post.tokens) if params.chars else None
        return cls(params, labels, load_encoder(path, pretrained=True), load_tokenizer(path), chars)

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        if self.params.chars:
            data = {"format": 1, "chars": self.chars.chars}
            (Path(run_dir) / VOCAB_FILE).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, params: CMParams, labels: LabelVocab, run_dir: Path) -> "FusionCM":
        path = Path(run_dir) / "encoder"
        chars = None
        if params.chars:
            vocab = Path(run_dir) / VOCAB_FILE
            try:
                chars = CharVocab(json.loads(vocab.read_text(encoding="utf-8"))["chars"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise MmnerError(f"{vocab}: not a readable fusion-cm character vocabulary ({exc})") from exc
        return cls(params, labels, load_encoder(path, pretrained=False), load_tokenizer(path), chars)

    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        item = super().featurize(post, visual)
        if self.params.chars:
            item["char_ids"] = [self.chars.encode(t, MAX_WORD_CHARS) for t in post.tokens]
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        if self.params.chars:
            w = batch["word_mask"].shape[1]
            c = max([1, *(len(ch) for item in items for ch in item["char_ids"])])
            char_ids = torch.full((len(items), w, c), PAD_ID, dtype=torch.long)
            for i, item in enumerate(items):
                for j, ch in enumerate(item["char_ids"]):
                    char_ids[i, j, : len(ch)] = torch.tensor(ch)
            batch["char_ids"] = char_ids
        return batch

    def fuse(self, words, word_mask, regions, region_mask, record=None, batch=None):
        image = masked_mean(regions, region_mask).unsqueeze(1).expand_as(words)  # [B, W, H]; 0 without image
        if not self.params.chars:
            return torch.cat([words, image], dim=-1)  # [B, W, 2H]
        chars = self.dropout(self.char_cnn(batch["char_ids"]).to(words.dtype))  # [B, W, F]
        return torch.cat([self.word_in(words), self.char_in(chars), self.image_in(image)], dim=-1)  # [B, W, 3H]


@register("fusion-vam")
class FusionVAM(FusionTagger):
    """Visual attention module with the visual modulation gate of Lu et al. (2018):
    a = softmax(w . tanh(W_q q + W_v v_i)), c = sum_i a_i v_i;
    b_v = sigmoid(W_v [h_t ; c]), b_w = sigmoid(W_w [h_t ; c]), m = tanh(W_m [h_t ; c]);
    out_t = b_w * h_t + b_v * m."""

    Params = VAMParams
    params: VAMParams
    region_attention = True

    def __init__(self, params: VAMParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        h = self.hidden
        if params.query == "sentence":
            self.query_lstm = nn.LSTM(h, h // 2, batch_first=True, bidirectional=True)
        self.attention = AdditiveAttention(2 * (h // 2) if params.query == "sentence" else h, h, params.attention_dim)
        self.visual_gate = nn.Linear(2 * h, h)
        self.text_gate = nn.Linear(2 * h, h)
        self.modulation = nn.Linear(2 * h, h)

    def sentence_query(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """The biLSTM's last forward and first backward states over the words. [B, W, H] -> [B, 1, H']"""
        lengths = word_mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
        _, (last, _) = self.query_lstm(packed)  # [2, B, H/2]
        return torch.cat([last[0], last[1]], dim=-1).unsqueeze(1)

    def fuse(self, words, word_mask, regions, region_mask, record=None, batch=None):
        query = self.sentence_query(words, word_mask) if self.params.query == "sentence" else words
        weights = self.attention(query, regions, region_mask)  # [B, 1 | W, R]
        if record is not None:  # a sentence query's attention is every word's
            record["word_region"] = weights.expand(-1, words.shape[1], -1) * word_mask.unsqueeze(-1).to(weights.dtype)
        context = (weights @ regions).expand_as(words)  # [B, W, H]; 0 without image
        both = torch.cat([words, context], dim=-1)
        visual_gate = torch.sigmoid(self.visual_gate(both))
        text_gate = torch.sigmoid(self.text_gate(both))
        return text_gate * words + visual_gate * torch.tanh(self.modulation(both))


@register("fusion-cam")
class FusionCAM(FusionTagger):
    """Co-attention module of Zhang et al. (2018), per word h_t:
    word-guided visual attention  v_t = sum_i a_ti v_i, a_t = attention(h_t over regions);
    image-guided textual attention  g_t = sum_j b_tj h_j, b_t = attention(v_t over words);
    gated multimodal fusion  m_t = z * tanh(W_v v_t) + (1 - z) * tanh(W_h g_t), z = sigmoid(W_z [..]);
    filtration gate  u_t = s * tanh(W_m m_t), s = sigmoid(W_s [h_t ; m_t]);  out_t = [h_t ; u_t]."""

    Params = AttentionFusionParams
    params: AttentionFusionParams
    region_attention = True

    def __init__(self, params: AttentionFusionParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        h = self.hidden
        self.visual_attention = AdditiveAttention(h, h, params.attention_dim)
        self.text_attention = AdditiveAttention(h, h, params.attention_dim)
        self.visual_in = nn.Linear(h, h)
        self.text_in = nn.Linear(h, h)
        self.fusion_gate = nn.Linear(2 * h, h)
        self.filter_gate = nn.Linear(2 * h, h)
        self.filter_out = nn.Linear(h, h)

    def fused_width(self) -> int:
        return 2 * self.hidden

    def fuse(self, words, word_mask, regions, region_mask, record=None, batch=None):
        weights = self.visual_attention(words, regions, region_mask)  # [B, W, R], word-guided visual attention
        if record is not None:
            record["word_region"] = weights
        visual = weights @ regions  # [B, W, H]; 0 without image
        text = self.text_attention(visual, words, word_mask) @ words  # [B, W, H]
        hv, hw = torch.tanh(self.visual_in(visual)), torch.tanh(self.text_in(text))
        z = torch.sigmoid(self.fusion_gate(torch.cat([hv, hw], dim=-1)))
        multimodal = z * hv + (1 - z) * hw
        s = torch.sigmoid(self.filter_gate(torch.cat([words, multimodal], dim=-1)))
        return torch.cat([words, s * torch.tanh(self.filter_out(multimodal))], dim=-1)  # [B, W, 2H]


@register("fusion-tam")
class FusionTAM(FusionTagger):
    """Transformer attention module: `layers` cross-attention layers (words attend over regions,
    residual + layer norm, feed-forward + layer norm), `heads` heads, the encoder's FFN width."""

    Params = TAMParams
    params: TAMParams
    region_attention = True

    def __init__(self, params: TAMParams, labels: LabelVocab, encoder, tokenizer) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        h = self.hidden
        heads = params.heads or encoder.config.num_attention_heads
        if h % heads:
            raise MmnerError(f"model.heads: {heads} heads do not divide the encoder width {h}")
        ffn = getattr(encoder.config, "intermediate_size", 4 * h)
        self.layers = nn.ModuleList(CrossAttentionLayer(h, heads, ffn, params.dropout) for _ in range(params.layers))

    def fuse(self, words, word_mask, regions, region_mask, record=None, batch=None):
        layers: list[torch.Tensor] | None = [] if record is not None else None
        for layer in self.layers:
            words = layer(words, regions, region_mask, layers)
        if record is not None:
            record["word_region"] = torch.stack(layers).mean(0)  # type: ignore[arg-type]  # mean over layers
        return words
