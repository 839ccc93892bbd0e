"""RpBERT (Sun et al. 2021): text-image relation propagation in a single-stream multimodal BERT.

Input `[CLS] T [SEP] V`: the text tokens, then the post's visual regions projected to the encoder width
as visual tokens, laid out exactly as in `visualbert-crf` (whose machinery this model reuses: region
projection, visual segment and region-position embeddings, windows, gather of each word's first
sub-token). Two passes through the same encoder (Fig. 2, "two RpBERTs share the same structure and
parameters"):

1. relation pass: `[CLS] T [SEP] V`; the [CLS] state (averaged over a long post's windows) goes through
   a linear layer to two logits x; pi = softmax(x) and the relation score r = pi_1, the probability that
   the image adds to the text (Eq. 2). This pass is all the TRC task needs.
2. tagging pass: the visual tokens gated by r (relation propagation, Eq. 3), then the head.

Gates (`gate`): `soft` r = pi_1 (Eq. 4); `hard` r = [pi_1 > 0.5] with a straight-through gradient
(Eq. 5); `gumbel` r = softmax((x + g) / tau)_1 while training (Eq. 6), tau annealed from `tau_start` to
`tau_end` over training (`tau_schedule`), and softmax(x / tau) without noise at inference.

Propagation (`propagation`), i.e. where r acts in pass 2:
- `input` (the paper's R ⊙ V, as in the authors' code): the projected region features are multiplied by
  r before the visual segment and position embeddings are added. At r = 0 no image content reaches the
  text, but the visual tokens still take part in attention with their segment / position embeddings.
- `output`: pass 2 encodes the text alone and the word states are h_T + r * (h_TV - h_T), h_TV being
  pass 1's word states: r = 0 is exactly the model with the post's regions masked, r = 1 exactly the
  ungated multimodal encoding, and the tagging pass is cheaper (no visual tokens).

Heads (`head`): `crf` (linear + CRF over the first sub-token's state) or `bilstm-crf` (Table 4/5's
"biLSTM-CRF + RpBERT": per word [word vector; char-CNN vector; RpBERT state] -> 2-layer biLSTM -> CRF,
Lample et al.), the word's RpBERT state the mean of its sub-tokens' as the paper says (`word_pooling`).

`image: false` (with `visual.source: none`, `propagate: false`, no Task#1) is the encoder over the text
alone: with the biLSTM-CRF head, Table 4's text-only "biLSTM-CRF + BERT" ([e_k; e_k^BERT]).

Multitask training (Algorithm 1): with `trc.enabled`, every epoch first trains the relation classifier
on the TRC corpus (Vempala & Preotiuc-Pietro 2019, `image_adds`; first `trc.train_rows` rows), then MNER,
through `auxiliary_tasks` (see `mmner.models.base.AuxiliaryTask`). The corpus' images are not
distributed with it: give captions keyed by tweet id (`trc.captions`, for `visual.source: caption`) or
a folder of `<tweet_id>.jpg` (`trc.images`, for `grid` / `pseudo-caption`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.models.base import AuxiliaryTask, ModelParams
from mmner.models.bilstm_crf import RANDOM_DIM, VOCAB_FILE, BiLSTMCRF
from mmner.models.blocks import AttentionRecord, attention_rows, pad_word_ids
from mmner.models.registry import register
from mmner.models.relation_labels import weak_relation
from mmner.models.visualbert_crf import VisualBertCRF, VisualBertCRFParams
from mmner.tagging.alignment import word_pieces
from mmner.tagging.vocab import LabelVocab
from mmner.text.encoders import load_encoder, load_tokenizer, resolve_encoder
from mmner.text.vectors import (
    NO_VECTORS,
    CharCNN,
    CharVocab,
    VectorTable,
    WordEmbedding,
    WordVocab,
    load_table,
    vocab_json,
)

if TYPE_CHECKING:
    from mmner.config import Config
    from mmner.vision.captions import CaptionSource
    from mmner.vision.inputs import VisualInput, VisualInputs

log = logging.getLogger("mmner")

TRC_TRAIN_ROWS = 3576  # RpBERT: the first 3576 rows of textimage-data.csv train TRC, the other 895 test it


class TrcParams(BaseModel):
    """Task#1 of Algorithm 1, relation supervision (`model.trc`): which posts and labels train the relation
    classifier before MNER in every epoch.

    `labels: trc`: the TRC corpus (Vempala & Preotiuc-Pietro 2019, `image_adds`; first `train_rows` rows).
    Its images are not distributed with it, so by default (`visual: masked`) the TRC tweets are seen
    without their image: the classifier learns a text-side prior of whether a tweet's image adds to it.
    With the tweets' images captioned (`visual: captions`, `captions: FILE` keyed by tweet id) or at hand
    (`visual: images`, `images: FOLDER` of <tweet_id>.jpg) they are seen as the paper saw them.
    `labels: weak`: the MNER training posts with their own visual input, labelled by
    `relation_labels.weak_relation` from their gold entities and a caption of their image (`weak_captions`:
    blip2, owl or a file; default the run's `visual.caption`).
    """

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    labels: Literal["trc", "weak"] = "trc"
    data: str = "trc/textimage-data.csv"  # a file, or a path inside the data dir
    train_rows: int = Field(TRC_TRAIN_ROWS, ge=1)
    visual: Literal["masked", "captions", "images"] = "masked"  # the TRC tweets' visual input (labels: trc)
    captions: str | None = None  # captions file keyed by tweet id (JSON / BLIP-2 format), for visual: captions
    images: str | None = None  # folder of <tweet_id>.jpg|.png, for visual: images
    weak_captions: str | None = None  # labels: weak: the captions the rule reads (blip2, owl, a file)
    batch_size: int = Field(8, ge=1)  # Table 2: mini-batch 8


class RpBertParams(VisualBertCRFParams):
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # Table 2
    gate: Literal["soft", "hard", "gumbel"] = "soft"
    propagation: Literal["input", "output"] = "input"
    tau_start: float = Field(1.0, gt=0.0)  # gumbel: temperature at the start of training ...
    tau_end: float = Field(0.1, gt=0.0)  # ... and at its end
    tau_schedule: Literal["exponential", "linear"] = "exponential"
    head: Literal["crf", "bilstm-crf"] = "crf"
    # head bilstm-crf (Table 2: LSTM hidden 1024 with RpBERT, 2 layers, char embedding 25)
    vectors: str = "glove-50d"
    freeze_vectors: bool = False
    char_dim: int = Field(25, ge=1)
    char_filters: int = Field(50, ge=1)
    lstm_hidden: int = Field(1024, ge=1)
    lstm_layers: int = Field(2, ge=1)
    # a word's state for the head: its first sub-token's, or the mean of its sub-tokens' (Sun et al. for
    # the biLSTM-CRF head, "we average the outputs of BERT-tokenized subwords"); default: mean for
    # head bilstm-crf, first for head crf (as bert-crf)
    word_pooling: Literal["first", "mean"] | None = None
    # The paper's settings: "the FC layers ... are a linear neural network followed by ReLU". On the two
    # relation logits a ReLU stops learning wherever both are <= 0 (a synthetic TRC task stays at chance
    # with it, tests/test_rpbert.py), and the authors' released relation classifier has it commented out:
    # off by default, on to follow the text.
    relation_relu: bool = False
    propagate: bool = True  # false: "w/o Rp" (Table 6): r = 1 for every post, the rest unchanged
    trc: TrcParams = TrcParams()

    @model_validator(mode="after")
    def _pooling(self) -> "RpBertParams":
        if self.word_pooling is None:
            self.word_pooling = "mean" if self.head == "bilstm-crf" else "first"
        return self


@register("rpbert")
class RpBert(VisualBertCRF):
    Params = RpBertParams
    params: RpBertParams

    def __init__(self, params: RpBertParams, labels: LabelVocab, encoder, tokenizer,
                 words: WordVocab | None = None, chars: CharVocab | None = None,
                 table: VectorTable | None = None) -> None:
        super().__init__(params, labels, encoder, tokenizer)
        hidden = encoder.config.hidden_size
        if params.image:
            self.relation = nn.Linear(hidden, 2)  # Task#1: does the image add to the text?
        self.register_buffer("progress", torch.zeros(()))  # fraction of training done (gumbel schedule)
        if params.head == "bilstm-crf":
            if words is None or chars is None:
                raise ValueError("head bilstm-crf needs word and char vocabularies")
            self.words, self.chars, self.table = words, chars, table
            dim = table.dim if table is not None else RANDOM_DIM
            self.embed = WordEmbedding(len(words), dim, table.matrix if table is not None else None,
                                       params.freeze_vectors)
            self.char_cnn = CharCNN(len(chars), params.char_dim, params.char_filters, dropout=params.dropout)
            self.lstm = nn.LSTM(dim + params.char_filters + hidden, params.lstm_hidden, num_layers=params.lstm_layers,
                                bidirectional=True, batch_first=True,
                                dropout=params.dropout if params.lstm_layers > 1 else 0.0)
            self.classifier = nn.Linear(2 * params.lstm_hidden, len(labels))

    # -- construction -------------------------------------------------------------------------
    @property
    def relation_score(self) -> bool:  # type: ignore[override]
        return self.params.image

    @classmethod
    def resolve_params(cls, params: ModelParams, visual: VisualInputs) -> ModelParams:
        params = super().resolve_params(params, visual)
        trc = params.trc  # type: ignore[attr-defined]
        if not params.image:  # type: ignore[attr-defined]
            # text only: "biLSTM-CRF + BERT" (Table 4) with head bilstm-crf; no image to relate or gate
            if params.propagate:  # type: ignore[attr-defined]
                raise MmnerError("model.propagate: rpbert with model.image: false has no image to gate; "
                                 "set model.propagate: false")
            if trc.enabled:
                raise MmnerError("model.trc.enabled: rpbert with model.image: false has no image for Task#1; "
                                 "set model.trc.enabled: false")
            return params
        if trc.labels == "trc" and trc.visual == "masked" and (trc.captions or trc.images):
            given = "model.trc.captions" if trc.captions else "model.trc.images"
            raise MmnerError(f"{given}: set model.trc.visual: {'captions' if trc.captions else 'images'} to use it "
                             "(model.trc.visual: masked shows the TRC tweets without their images)")
        if trc.enabled and trc.labels == "trc" and trc.visual != "masked":
            need = trc.visual
            if need == "captions" and visual.source != "caption":
                raise MmnerError(f"model.trc.visual: captions needs visual.source: caption (not {visual.source}); "
                                 "use model.trc.visual: images for grid / pseudo-caption")
            if need == "images" and visual.source == "caption":
                raise MmnerError("model.trc.visual: images needs visual.source grid or pseudo-caption; "
                                 "use model.trc.visual: captions with visual.source: caption")
            where = getattr(trc, need)
            if where is None:
                raise MmnerError(
                    f"model.trc.{need}: model.trc.visual: {need} needs the TRC tweets' {need} "
                    f"({'a captions file keyed by tweet id' if need == 'captions' else 'a folder of <tweet_id>.jpg'}); "
                    "the TRC corpus' images are not in the data dir: set it, or model.trc.visual: masked")
            where = Path(where).expanduser()
            if not (where.is_file() if need == "captions" else where.is_dir()):
                raise MmnerError(f"model.trc.{need}: {where} is not a {'captions file' if need == 'captions' else 'folder'}")
        if trc.enabled and trc.labels == "weak" and trc.weak_captions is None and visual.source != "caption":
            raise MmnerError(f"model.trc.weak_captions: weak relation labels read a caption of each image; with "
                             f"visual.source: {visual.source} name the captions (blip2, owl or a file)")
        return params

    @staticmethod
    def _table(params: RpBertParams) -> VectorTable | None:
        return None if params.vectors == NO_VECTORS else load_table(params.vectors)

    @classmethod
    def create(cls, params: RpBertParams, labels: LabelVocab, train_posts: list[Post]) -> RpBert:
        path = resolve_encoder(params.encoder)
        encoder, tokenizer = load_encoder(path, pretrained=True), load_tokenizer(path)
        if params.head != "bilstm-crf":
            return cls(params, labels, encoder, tokenizer)
        table = cls._table(params)
        tokens = [t for post in train_posts for t in post.tokens]
        skip = (lambda w: table.find(w) >= 0) if (table is not None and params.freeze_vectors) else None
        model = cls(params, labels, encoder, tokenizer, WordVocab.build(tokens, skip), CharVocab.build(tokens), table)
        model.embed.init_from(model.words, table)
        return model

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        if self.params.head == "bilstm-crf":
            data = vocab_json(self.words, self.chars, vectors=self.params.vectors,
                              vector_rows=len(self.table) if self.table is not None else 0, vector_dim=self.embed.dim)
            (Path(run_dir) / VOCAB_FILE).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, params: RpBertParams, labels: LabelVocab, run_dir: Path) -> RpBert:
        path = Path(run_dir) / "encoder"
        encoder, tokenizer = load_encoder(path, pretrained=False), load_tokenizer(path)
        if params.head != "bilstm-crf":
            return cls(params, labels, encoder, tokenizer)
        vocab = Path(run_dir) / VOCAB_FILE
        try:
            data = json.loads(vocab.read_text(encoding="utf-8"))
            words, chars = WordVocab(data["words"]), CharVocab(data["chars"])
            shape = (int(data["vector_rows"]), int(data["vector_dim"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MmnerError(f"{vocab}: not a readable rpbert vocabulary ({exc})") from exc
        table = cls._table(params)
        got = (len(table), table.dim) if table is not None else (0, RANDOM_DIM)
        if got != shape:
            raise MmnerError(f"{vocab}: the run was trained with vectors {data.get('vectors')!r} of {shape[0]} x "
                             f"{shape[1]}, but {params.vectors!r} now gives {got[0]} x {got[1]}; "
                             "point model.vectors at the same table")
        return cls(params, labels, encoder, tokenizer, words, chars, table)

    # -- data -----------------------------------------------------------------------------------
    def featurize(self, post: Post, visual: VisualInput | None = None) -> dict[str, Any]:
        item = super().featurize(post, visual)
        if self.params.word_pooling == "mean":
            item["word_pieces"] = [len(p) for p in word_pieces(self.tokenizer, post.tokens, self.max_length - 2)]
        if self.params.head == "bilstm-crf":
            item.update(BiLSTMCRF.text_features(self, post))  # type: ignore[arg-type]  # word / vector / char ids
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(items)
        if self.params.word_pooling == "mean":
            batch["word_pieces"] = pad_word_ids(items, "word_pieces", batch["word_mask"].shape[1])
        if self.params.head == "bilstm-crf":
            words = BiLSTMCRF.collate_text(self, items)  # type: ignore[arg-type]
            batch.update({k: words[k] for k in ("word_ids", "vector_ids", "char_ids")})
        return batch

    # -- relation -------------------------------------------------------------------------------
    @property
    def tau(self) -> float:
        """The Gumbel temperature at the current point of training."""
        p, start, end = float(self.progress), self.params.tau_start, self.params.tau_end
        if self.params.tau_schedule == "linear":
            return start + (end - start) * p
        return start * (end / start) ** p

    def set_training_progress(self, fraction: float) -> None:
        """Called by the training loop before each step (0 -> 1); saved with the weights, so a loaded
        model uses the final temperature."""
        self.progress.fill_(min(max(fraction, 0.0), 1.0))

    def visual_tokens(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """As in visualbert-crf, from the regions projected once per batch (`_regions`), with the
        projected features scaled by `_gate` [B] when given (relation propagation, `input`)."""
        regions, mask = batch["_regions"] if "_regions" in batch else self.visual(batch, self.encoder)
        gate = batch.get("_gate")
        if gate is not None:
            regions = regions * gate.to(regions.dtype)[:, None, None]  # [B, R, H]
        slots = torch.arange(regions.shape[1], device=regions.device)
        return regions + self.visual_type + self.visual_position(slots), mask

    def relation_pass(self, batch: dict[str, Any], words: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pass 1, `[CLS] T [SEP] V` ungated: relation logits [B, 2] from the posts' [CLS] states (mean
        over a post's windows), and with `words` the word states [B, W, H] of the same pass."""
        n, t = batch["input_ids"].shape
        cls_index = torch.arange(n, device=batch["input_ids"].device) * t  # each window's first token
        gather = batch["gather"]
        index = torch.cat([cls_index, gather.flatten()]) if words else cls_index
        # region attention (predict) is recorded in the pass that gives the word states
        record = {"_record": batch.get("_record"), "_record_gather": gather} if words else {"_record": None}
        pieces = batch.get("word_pieces")
        if pieces is not None:  # the [CLS] state is one token's; the words' as word_pooling says
            pieces = torch.cat([torch.ones_like(cls_index), pieces.flatten()]) if words else torch.ones_like(cls_index)
        states = self.word_states({**batch, "gather": index, "word_pieces": pieces, **record})  # [N (+ B * W), H]
        cls_states = states[:n]
        owner = batch["window_post"]
        b = gather.shape[0]
        pooled = cls_states.new_zeros(b, cls_states.shape[-1]).index_add_(0, owner, cls_states)
        pooled = pooled / torch.bincount(owner, minlength=b).clamp(min=1).unsqueeze(-1).to(pooled.dtype)
        logits = self.relation(self.dropout(pooled))  # [B, 2]
        if self.params.relation_relu:
            logits = F.relu(logits)  # the FC layer: linear, then ReLU (the paper's settings)
        return logits, states[n:].reshape(*gather.shape, -1) if words else None

    def relation_gate(self, logits: torch.Tensor) -> torch.Tensor:
        """The gate r [B] of each post from its relation logits (`gate`)."""
        gate = self.params.gate
        if gate == "gumbel":
            if self.training:
                return F.gumbel_softmax(logits, tau=self.tau, hard=False)[:, 1]
            return torch.softmax(logits / self.tau, -1)[:, 1]
        pi = torch.softmax(logits, -1)[:, 1]
        if gate == "hard":
            return (pi > 0.5).to(pi.dtype) + pi - pi.detach()  # forward 0 / 1, gradient of pi
        return pi

    def score_relation(self, logits: torch.Tensor) -> torch.Tensor:
        """The relation score r reported per post [B]: pi_1 (Eq. 2), except for the Gumbel gate, whose
        inference gate is softmax(x / tau)_1: the score is then the value the gate used."""
        if self.params.gate == "gumbel":
            return torch.softmax(logits.float() / self.tau, -1)[:, 1]
        return torch.softmax(logits.float(), -1)[:, 1]

    @property
    def reports_relation(self) -> bool:
        """Whether r means anything: it gates the visual tokens, or Task#1 trains the classifier."""
        return self.params.propagate or self.params.trc.enabled

    def relation_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Task#1 (Eq. 7): cross entropy of the relation logits against `relation` [B]."""
        logits, _ = self.relation_pass({**batch, "_regions": self.visual(batch, self.encoder)})
        return F.cross_entropy(logits.float(), batch["relation"])  # fp32 under mixed precision too

    # -- compute --------------------------------------------------------------------------------
    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both passes: word states [B, W, H] after relation propagation, the relation logits [B, 2]
        and the gate r [B]. Without propagation ("w/o Rp") r is 1: the visual tokens enter ungated, which
        is pass 1 itself, so its word states are the tagging states."""
        if not self.params.image:  # text only ("biLSTM-CRF + BERT"): one pass, nothing gated
            states = self.text_states(batch)
            return states, states.new_zeros(states.shape[0], 2), states.new_ones(states.shape[0])
        regions = self.visual(batch, self.encoder)  # projected once, used by both passes
        batch = {**batch, "_regions": regions}
        if not self.params.propagate:
            logits, states = self.relation_pass(batch, words=True)
            return states, logits, torch.ones(logits.shape[0], device=logits.device)  # type: ignore[return-value]
        output = self.params.propagation == "output"
        logits, both = self.relation_pass(batch, words=output)
        r = self.relation_gate(logits)
        if output:
            text = self.text_states(batch)  # the text alone: [B, W, H]
            states = text + r[:, None, None].to(text.dtype) * (both - text)
        else:
            states = self.word_states({**batch, "_gate": r})
        return states, logits, r

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        states, logits, r = self.encode(batch)
        mask = batch["word_mask"]
        if self.params.head == "bilstm-crf":
            x = torch.cat([BiLSTMCRF.inputs(self, batch), self.dropout(states)], -1)  # type: ignore[arg-type]
            states = BiLSTMCRF.contextualize(self, x, mask)  # type: ignore[arg-type]  # [B, W, 2 * lstm_hidden]
        emissions = self.classifier(self.dropout(states))  # [B, W, L]
        out = {"emissions": emissions, "word_mask": mask, "relation_logits": logits, "relation_gate": r}
        if batch.get("tags") is not None:
            out["loss"] = self.crf.loss(emissions, batch["tags"], mask)  # Task#2 (Eq. 9)
        return out

    def predict(self, batch: dict[str, Any], attention: bool = True) -> dict[str, Any]:
        """Tags, `relation_score` (pi_1, the probability that the image adds to the text, see
        `score_relation`; None for a post without image, and for "w/o Rp" without Task#1, whose relation
        classifier never trains) and the region `attention` of the tagging pass (for `propagation: input`
        the gated pass: RpBERT's a_j^v and S_TV, eq. 10-11; for `output` the multimodal pass 1)."""
        if not self.params.image:
            return {"tags": self.decode(batch)}
        record = AttentionRecord() if attention else None
        out = self.forward({**batch, "tags": None, "_record": record})
        tags = self.crf.decode(out["emissions"], out["word_mask"])
        score = self.score_relation(out["relation_logits"]).tolist()
        shown = self._has_image(batch).tolist() if self.reports_relation else [False] * len(score)
        result = {"tags": tags, "relation_score": [round(s, 6) if h else None for s, h in zip(score, shown)]}
        if record is not None:
            result["attention"] = attention_rows(record, batch, self.tokenizer)
        return result

    @staticmethod
    def _has_image(batch: dict[str, Any]) -> torch.Tensor:
        if "caption_tokens" in batch:
            return batch["caption_tokens"].any(-1)
        return batch["region_mask"].any(-1)

    # -- multitask (Algorithm 1) --------------------------------------------------------------
    def relation_task(self, config: Config, posts: list[Post] | None, visual: VisualInputs | None,
                      split: Literal["train", "test"]) -> tuple[list[Post], list[int], VisualInputs, str]:
        """Task#1's posts, their relation labels and visual inputs, and a one-line description: the TRC
        rows of `split`, or (`labels: weak`) `posts` (the MNER split's) with `visual` (their inputs)."""
        trc = self.params.trc
        if trc.labels == "trc":
            rows, labels = trc_posts(trc, config, split)
            inputs = trc_visual(trc, config)
            return rows, labels, inputs, f"TRC {split} rows of {trc.data}, visual input: {inputs.detail}"
        if posts is None or visual is None:
            raise MmnerError("model.trc.labels: weak labels the MNER posts themselves; none were given")
        captions, labels = weak_labels(posts, trc, config)
        return posts, labels, visual, f"weak labels from {captions.detail}"

    def auxiliary_tasks(self, config: Config, posts: list[Post] | None = None,
                        visual: VisualInputs | None = None) -> list:
        """Task#1 when `trc.enabled` (trained before MNER in every epoch): on the TRC corpus, or with
        `labels: weak` on the training posts (`posts`, with the run's `visual` inputs for them)."""
        trc = self.params.trc
        if not trc.enabled:
            return []
        from mmner.data.batches import PostDataset

        rows, labels, inputs, what = self.relation_task(config, posts, visual, "train")
        report = inputs.scan(rows)  # visual.missing: error stops here, naming the post
        log.info("relation task: %d posts (%d image adds), %s; %s", len(rows), sum(labels), what, report.summary())

        def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
            batch = self.collate(items)
            batch["index"] = [item["index"] for item in items]
            batch["relation"] = torch.tensor([labels[i] for i in batch["index"]], dtype=torch.long)
            return batch

        return [AuxiliaryTask("trc", PostDataset(rows, self, inputs), collate, self.relation_loss, trc.batch_size)]

    def auxiliary_evaluations(self, config: Config, run_dir: Path, batch_size: int = 64, posts: list[Post] | None = None,
                              visual: VisualInputs | None = None) -> dict[str, Any]:
        """With `trc.enabled`: Task#1 on its held-out labels, the TRC rows after `trc.train_rows` (the
        paper's test split) or, with `labels: weak`, the weak labels of the test `posts`:
        `predictions/relation_task.jsonl` (id, relation_score, label) and, for metrics.json, `trc`:
        accuracy, P / R / F1 of "image adds", the confusion counts (r > 0.5 = image adds) and which labels."""
        trc = self.params.trc
        if not trc.enabled:
            return {}
        from mmner.data.batches import loader

        rows, labels, inputs, what = self.relation_task(config, posts, visual, "test")
        if not rows:
            return {"trc": {"rows": 0, "labels": trc.labels, "held_out": what}}
        inputs.scan(rows)
        device = next(self.parameters()).device
        scored: list[tuple[int, float]] = []
        self.eval()
        with torch.inference_mode():
            for batch in loader(rows, self, batch_size, shuffle=False, visual=inputs, gold=False, sort=True):
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                logits, _ = self.relation_pass({**batch, "_regions": self.visual(batch, self.encoder)})
                scored.extend(zip(batch["index"], self.score_relation(logits).tolist()))
        ordered = [r for _, r in sorted(scored)]  # length-sorted batches back in post order
        out = run_dir / "predictions" / "relation_task.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps({"id": p.id, "relation_score": round(r, 6), "label": y}) + "\n"
                               for p, r, y in zip(rows, ordered, labels)), encoding="utf-8")
        return {"trc": {"labels": trc.labels, "held_out": what, "masked_images": len(inputs.masked),
                        **relation_accuracy(ordered, labels)}}


def relation_accuracy(scores: list[float], labels: list[int]) -> dict[str, Any]:
    """Accuracy, P / R / F1 of "image adds" (r > 0.5) against 0 / 1 labels, the share of positive labels
    and the confusion counts, in percent where a rate."""
    pred = [int(r > 0.5) for r in scores]
    tp = sum(p == y == 1 for p, y in zip(pred, labels))
    fp = sum(p == 1 and y == 0 for p, y in zip(pred, labels))
    fn = sum(p == 0 and y == 1 for p, y in zip(pred, labels))
    tn = len(pred) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"rows": len(pred), "accuracy": round(100 * (tp + tn) / len(pred), 2) if pred else 0.0,
            "precision": round(100 * precision, 2), "recall": round(100 * recall, 2), "f1": round(100 * f1, 2),
            "positive_labels": round(100 * sum(labels) / len(labels), 2) if labels else 0.0,
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}


def weak_labels(posts: list[Post], trc: TrcParams, config: Config) -> tuple[CaptionSource, list[int]]:
    """The weak relation label of each post (`relation_labels.weak_relation`) from its gold tags and the
    caption of its image in `trc.weak_captions` (default: the run's `visual.caption`)."""
    from mmner.vision.captions import CaptionSource

    setting = trc.weak_captions or config.visual.caption
    captions = CaptionSource.from_setting(setting, config.data.train, config.data.dir)
    untagged = [p.id for p in posts if p.tags is None]
    if untagged:
        raise MmnerError(f"post {untagged[0]}: weak relation labels need gold tags ({len(untagged)} posts without)")
    return captions, [weak_relation(p.tokens, p.tags or [], captions.resolve(p).text) for p in posts]


def trc_posts(trc: TrcParams, config: Config, rows: Literal["train", "test"] = "train") -> tuple[list[Post], list[int]]:
    """The TRC tweets as posts (image id = tweet id) and their `image_adds` labels: the first
    `trc.train_rows` rows (`train`) or the rest (`test`, the paper's held-out split)."""
    from mmner.data import datadir
    from mmner.data.readers import read_trc, tokenize_post

    path = Path(trc.data).expanduser()
    if not path.exists():
        path = datadir.data_dir(config.data.dir) / trc.data
    records = read_trc(path)
    records = records[: trc.train_rows] if rows == "train" else records[trc.train_rows :]
    folder = Path(trc.images).expanduser() if trc.images and trc.visual == "images" else None
    if folder is not None and not folder.is_dir():
        raise MmnerError(f"model.trc.images: {folder} is not a folder")
    posts: list[Post] = []
    for rec in records:
        image = None
        if folder is not None:
            found = [folder / f"{rec.tweet_id}{s}" for s in (".jpg", ".jpeg", ".png") if (folder / f"{rec.tweet_id}{s}").is_file()]
            image = str(found[0] if found else folder / f"{rec.tweet_id}.jpg")
        tokens = tokenize_post(rec.text)  # raw tweets, read as new posts are (emoji sequences stay one token)
        if not tokens:
            raise MmnerError(f"{path}: tweet {rec.tweet_id} has no text to relate to its image")
        posts.append(Post(f"trc-{rec.tweet_id}", tokens, image_id=rec.tweet_id, image_path=image))
    return posts, [rec.image_adds for rec in records]


def trc_visual(trc: TrcParams, config: Config) -> VisualInputs:
    """The TRC tweets' visual inputs: none at all (`visual: masked`, the default: the corpus' images
    are not at hand), captions from `trc.captions`, or images from `trc.images` (checked by
    `resolve_params`)."""
    from mmner.vision.captions import CaptionSource
    from mmner.vision.inputs import VisualInputs

    if trc.visual == "masked":
        return VisualInputs("none", detail="none (model.trc.visual: masked, the TRC images are not at hand)")
    if trc.visual == "captions":
        return VisualInputs("caption", config.visual.missing, captions=CaptionSource.from_file(trc.captions))  # type: ignore[arg-type]
    return VisualInputs.from_config(config.visual.model_copy(update={"cache": None}))
