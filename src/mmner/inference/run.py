"""Inference on a trained run, without a trainer: load a run directory, the visual inputs of its
posts (a dataset's, or new posts'), tag posts in length-sorted batches, score them. Used by the API,
`predict`, `serve`, `evaluate`, the report and training's own valid / test predictions."""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from tqdm.auto import tqdm

from mmner.analysis.artifacts import write_post_files
from mmner.config import Config, load_config
from mmner.data import datadir
from mmner.data.batches import loader
from mmner.data.post import Post
from mmner.data.readers import write_conll
from mmner.errors import MmnerError
from mmner.models import registry
from mmner.models.base import Tagger
from mmner.tagging.scorer import score
from mmner.tagging.vocab import LabelVocab
from mmner.vision.inputs import VisualInputs, VisualReport

log = logging.getLogger("mmner")


def dataset_record(name: str, path: Path) -> dict[str, Any]:
    """What a result must carry about its data: the name, the variant and the file's hash."""
    known = ":" in name and name.split(":")[0] in ("twitter2015", "twitter2017")
    return {
        "dataset": name,
        "variant": "UMT release" if known else str(path),
        "data_sha1": data_sha1(path),
    }


def data_sha1(path: Path) -> str:
    """A data file's hash; for a folder of posts (RiTUAL samples), the hash of its JSON files' names and bytes."""
    digest = hashlib.sha1()
    if path.is_dir():
        for file in sorted(path.glob("*.json")):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    """The device as results record it (metrics.json `device`): the CUDA device's name, or `cpu`."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _sorted_batches(model: Tagger, posts: list[Post], batch_size: int, visual: VisualInputs | None, progress: bool,
                    desc: str) -> Iterator[dict[str, Any]]:
    """The posts' model batches on the model's device, in length order (little padding; each batch's `index`
    says whose rows are whose), the model in eval mode; a progress bar when `progress` and stderr is a terminal."""
    if model.uses_visual and visual is None:
        raise MmnerError(f"{model.name} is a multimodal model: tag posts with the run's visual inputs "
                         "(visual=mmner.inference.visual_inputs(config))")
    if model.training:
        model.eval()
    device = next(model.parameters()).device
    for batch in tqdm(loader(posts, model, batch_size, shuffle=False, visual=visual, gold=False, sort=True), desc=desc,
                      unit="batch", disable=None if progress else True, leave=False):  # None: no bar off a terminal
        yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def predict_tags(model: Tagger, posts: list[Post], batch_size: int = 64, progress: bool = True,
                 extras: list[dict[str, Any]] | None = None, visual: VisualInputs | None = None,
                 attention: bool = True) -> list[list[str]]:
    """IOB2 tags for each post, one per token.

    `visual`: the run's visual inputs (`visual_inputs(config, ...)`), which a multimodal model needs.

    `extras`, a list filled in place with one dict per post: `visual`, the visual input the post was
    tagged with (`vision.inputs.describe`), and for models that compute more than tags (`predict(batch)
    -> {"tags": ids per post, "relation_score": [B], "attention": [B, R], ...}`) the post's row of
    every other key (region `attention` only with `attention`).
    """
    ids: list[list[int] | None] = [None] * len(posts)
    rows: list[dict[str, Any]] = [{} for _ in posts]
    with torch.inference_mode():
        for batch in _sorted_batches(model, posts, batch_size, visual, progress, "tagging"):
            index, used = batch["index"], batch["visual_used"]
            if extras is not None and hasattr(model, "predict"):
                result = dict(model.predict(batch, attention=attention))
                ids_per_post = result.pop("tags")
            else:
                result, ids_per_post = {}, model.decode(batch)
            for j, i in enumerate(index):
                ids[i] = ids_per_post[j]
                rows[i] = {**{k: v[j] for k, v in result.items()}, "visual": used[j]}
    if extras is not None:
        extras.extend(rows)
    out = [model.labels.decode(post_ids or []) for post_ids in ids]
    for post, tags in zip(posts, out):
        assert len(tags) == len(post.tokens), f"post {post.id}: {len(tags)} tags for {len(post.tokens)} tokens"
    return out


def predict_marginals(model: Tagger, posts: list[Post], batch_size: int = 64, progress: bool = True,
                      visual: VisualInputs | None = None) -> list[torch.Tensor]:
    """Each post's CRF marginals, P(label | post) for every word: a [words, labels] tensor per post, labels
    in `model.labels.tags` order (the model's scheme), from the scores that decoding uses."""
    out: list[torch.Tensor | None] = [None] * len(posts)
    with torch.inference_mode():
        for batch in _sorted_batches(model, posts, batch_size, visual, progress, "marginals"):
            index = batch["index"]
            result = model({**batch, "tags": None})
            probs = model.crf.log_marginals(result["emissions"], result["word_mask"]).exp().cpu()
            lengths = result["word_mask"].sum(1).tolist()
            for j, i in enumerate(index):
                out[i] = probs[j, : int(lengths[j])]
    for post, rows in zip(posts, out):
        assert rows is not None and rows.shape[0] == len(post.tokens), f"post {post.id}: marginals of other length"
    return out  # type: ignore[return-value]


def extras_summary(extras: list[dict[str, Any]]) -> dict[str, Any]:
    """Split-level statistics of what a model computes besides tags: its relation scores r (RpBERT:
    mean, share of posts with r > 0.5) and its region attention (S_TV, RpBERT eq. 10: the attention
    of a post's words to all its regions, averaged over the posts with an image)."""
    out: dict[str, Any] = {}
    scores = [float(e["relation_score"]) for e in extras if e.get("relation_score") is not None]
    if scores:
        out["relation"] = {"posts": len(scores), "mean": round(sum(scores) / len(scores), 4),
                           "share_above_0.5": round(sum(r > 0.5 for r in scores) / len(scores), 4)}
    s_tv = [sum(e["attention"]["weights"]) for e in extras if e.get("attention")]
    if s_tv:
        out["attention"] = {"posts": len(s_tv), "s_tv_mean": round(sum(s_tv) / len(s_tv), 4)}
    return out


def score_posts(posts: list[Post], pred: list[list[str]], mode: str = "conlleval") -> dict[str, Any]:
    missing = [p.id for p in posts if p.tags is None]
    if missing:
        raise MmnerError(f"post {missing[0]}: no gold tags to score against ({len(missing)} posts without tags)")
    return score([p.tags for p in posts], pred, mode)  # type: ignore[misc]


def read_run_config(run_dir: str | Path) -> Config:
    """The config of a finished run directory (one that `load_run` can load), without the model."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "labels.json", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise MmnerError(f"{run_dir}: not a finished run directory (no {name})")
    return load_config(run_dir / "config.yaml")


def load_run(run_dir: str | Path, device: torch.device | None = None, int8: bool = False) -> tuple[Config, Tagger]:
    """The config and the trained model of a run directory, ready for inference; `int8`: its transformer
    encoder's linear layers in dynamic int8 (`quantize_int8`, CPU only)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    params = config.model_params()
    labels = LabelVocab.load(run_dir / "labels.json")
    model = registry.get(params.name).load(params, labels, run_dir)
    load_model(model, str(run_dir / "model.safetensors"), strict=True)
    model.to(device or (torch.device("cpu") if int8 else default_device())).eval()
    return config, quantize_int8(model) if int8 else model


def quantize_int8(model: Tagger) -> Tagger:
    """`model` with the linear layers of its transformer encoder(s) in dynamic int8 (PyTorch's
    `quantize_dynamic`: weights int8 per output channel, activations quantised on the fly per call), for
    faster tagging on the CPU. It changes the tags a little: docs/results/speed.md measures its speed and
    F1 beside fp32, and why it is off by default. The CRF, the classifier and non-transformer layers stay fp32."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from transformers import PreTrainedModel

    if next(model.parameters()).device.type != "cpu":
        raise MmnerError(f"{model.name}: int8 tagging runs on the CPU only (load the run with device='cpu')")
    roots = [name for name, module in model.named_modules() if isinstance(module, PreTrainedModel)]
    layers = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
              and any(name.startswith(f"{root}.") for root in roots)}
    if not layers:
        raise MmnerError(f"{model.name}: no transformer encoder to quantise (int8 is for models with one)")
    with warnings.catch_warnings():  # torch.ao's eager quantisation says it moves to torchao; it works as is
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in layers}, inplace=True)
    quantized.int8_layers = len(layers)  # type: ignore[assignment]
    return quantized


def visual_inputs(config: Config, dataset: str | None = None, data_dir: str | None = None) -> VisualInputs:
    """The run's visual inputs for the posts of `dataset` (a data name or file), or for new posts
    (`dataset` None): these bring their own caption, or an image file that grid features or a
    pseudo-caption are computed from. Under `caption`, a new post without its own caption is looked
    up by image id in the run's caption file, when this machine has that file, and else, with
    `visual.caption_fallback: pseudo-caption`, captioned from its image."""
    from mmner.vision.captions import CaptionSource, FallbackCaptions, PseudoCaptionSource

    v = config.visual
    try:
        inputs = VisualInputs.from_config(v, dataset, data_dir or config.data.dir)
    except MmnerError as exc:
        if dataset is not None or v.source != "caption":
            raise
        captions = CaptionSource({}, f"the posts' own captions ({exc})", f"no caption file ({exc})")
        inputs = VisualInputs("caption", v.missing, captions=captions)
    if dataset is None and v.source == "caption" and v.caption_fallback == "pseudo-caption":
        fallback = PseudoCaptionSource(v.pseudo_k, v.grid_encoder, v.grid_weights)
        inputs = VisualInputs("caption", v.missing, captions=FallbackCaptions(inputs.captions, fallback))
    return inputs


def check_visual(config: Config, names: dict[str, str], posts: dict[str, list[Post]],
                 data_dir: str | None = None,
                 inputs: dict[str, VisualInputs] | None = None) -> dict[str, dict[str, Any]]:
    """Per split, the visual input's identity and how many posts have no image (DESIGN §3).

    Applies `visual.missing` to every post up front: with `error` a post without image / caption /
    cached features stops the run here, naming it, not hours into training; with `mask` the count is
    logged and goes into metrics.json (`masked_images`), next to `visual_detail` (which captions /
    which CNN), so no result hides how many of its posts were seen without their image. `inputs`: a
    split's visual inputs when they are not those of its name (training posts from several datasets).
    """
    out: dict[str, dict[str, Any]] = {}
    for split, items in posts.items():
        given = (inputs or {}).get(split)
        used = given or VisualInputs.from_config(config.visual, names[split], data_dir or config.data.dir)
        report = used.scan(items)
        detail = used_visual_detail(used, report, names[split], data_dir or config.data.dir)
        if config.visual.source != "none":
            log.info("visual input (%s) %s: %s", detail, split, report.summary())
        out[split] = {"visual_detail": detail, "visual_missing": config.visual.missing,
                      "masked_images": report.n_masked}
    return out


def used_visual_detail(inputs: VisualInputs, report: VisualReport, data: str, data_dir: str | None = None) -> str:
    """`visual_detail` named after the captions the posts were actually given: a post's own caption
    (a RiTUAL folder's captions.json, a JSON-lines post's `caption`) wins over the run's caption file,
    so a split whose posts all bring one never read that file; a split that used both names both."""
    if inputs.source not in ("caption", "pseudo-caption"):
        return inputs.detail
    own = report.origins.get("post", 0)
    other = sum(n for origin, n in report.origins.items() if origin != "post")
    if not own:
        return inputs.detail
    own_detail = f"the posts' own captions ({_own_captions_file(data, data_dir)})"
    return own_detail if not other else f"{own_detail} for {own} posts; {inputs.detail} for {other}"


def _own_captions_file(data: str, data_dir: str | None) -> str:
    """Where a split's own captions are: a RiTUAL folder's captions.json (with its hash), else the data file."""
    try:
        path = datadir.resolve(data, data_dir)
    except MmnerError:
        return data
    folder = path if path.is_dir() else path.parent
    captions = folder / "captions.json"
    if (path.is_dir() or path.name == "texts.json") and captions.is_file():
        return f"caption file {captions.resolve()}, sha1 {hashlib.sha1(captions.read_bytes()).hexdigest()[:12]}"
    return str(path.resolve())


def evaluate(run_dir: str | Path, data: str, mode: str = "conlleval", batch_size: int = 64,
             output: str | Path | None = None, data_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Score a run on a labelled split (a file or a data name); `progress`: a tagging bar on a terminal."""
    config, model = load_run(run_dir)
    path = datadir.resolve(data, data_dir or config.data.dir)
    posts = datadir.load_dataset(str(path))
    model.labels.check_types(posts, str(path))
    visual = check_visual(config, {"eval": data}, {"eval": posts}, data_dir)["eval"]
    extras: list[dict[str, Any]] = []
    if progress:
        log.info("tagging %d posts of %s", len(posts), data)
    pred = predict_tags(model, posts, batch_size, visual=visual_inputs(config, data, data_dir), extras=extras,
                        progress=progress)
    if output:
        write_conll(Path(output), posts, pred)
        write_post_files(Path(output).with_suffix(""), posts, extras, pred)
    params = config.model_params()
    return {
        **score_posts(posts, pred, mode),
        **extras_summary(extras),
        **dataset_record(data, path),
        "encoder": getattr(params, "encoder", None) or getattr(params, "vectors", None),
        "model": params.name,
        "visual_source": config.visual.source,
        **visual,
        "seed": config.seed,
    }
