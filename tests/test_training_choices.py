"""What training chooses: the best epoch on valid F1 (not the last), early stopping, the optimiser's
parameter groups, warm-up and gradient clipping as configured, and test scores that `evaluate` reproduces
exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from mmner.config import load_config
from mmner.inference import evaluate
from mmner.train import module
from mmner.train.run import train


def _scripted_valid_f1(monkeypatch, values: list[float]) -> list[float]:
    """Validation scores as scripted, one per epoch, whatever the model predicts."""
    real = module.score
    seen: list[float] = []

    def scripted(gold, pred, mode="conlleval"):
        result = dict(real(gold, pred, mode))
        result["f1"] = values[len(seen)]
        seen.append(result["f1"])
        return result

    monkeypatch.setattr(module, "score", scripted)
    return seen


def _config(tiny_model_params, tiny_corpus, **trainer):
    return load_config(None, base=tiny_config(tiny_model_params["bert-crf"], tiny_corpus, **trainer))


def test_the_saved_model_is_the_best_epoch_not_the_last(monkeypatch, tmp_path, tiny_model_params, tiny_corpus):
    seen = _scripted_valid_f1(monkeypatch, [50.0, 90.0, 60.0])
    run = tmp_path / "run"
    metrics = train(_config(tiny_model_params, tiny_corpus, max_epochs=3, patience=10), run, quiet=True)
    assert seen == [50.0, 90.0, 60.0]
    assert metrics["test"]["best_epoch"] == 2 and metrics["test"]["epochs"] == 3
    saved = load_file(run / "model.safetensors")
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] == 1 and last["epoch"] == 2  # 0-based: last.ckpt is the last epoch, also when it is not the best
    best_state = {k.removeprefix("model."): v for k, v in best["state_dict"].items()}
    last_state = {k.removeprefix("model."): v for k, v in last["state_dict"].items()}
    assert all(torch.equal(saved[k], best_state[k]) for k in saved)
    assert any(not torch.equal(saved[k], last_state[k]) for k in saved)  # the third epoch moved the weights


def test_early_stopping_ends_training_after_patience_epochs_without_gain(monkeypatch, tmp_path, tiny_model_params,
                                                                          tiny_corpus):
    seen = _scripted_valid_f1(monkeypatch, [90.0, 50.0, 40.0, 30.0, 20.0, 10.0])
    metrics = train(_config(tiny_model_params, tiny_corpus, max_epochs=6, patience=2), tmp_path / "run", quiet=True)
    assert seen == [90.0, 50.0, 40.0] and metrics["test"]["epochs"] == 3 and metrics["test"]["best_epoch"] == 1


def _trained_groups(config, run) -> tuple[list[dict], torch.nn.Module]:
    """One epoch of `config`: its optimizer's parameter groups (last.ckpt) and the trained model, its word
    embeddings frozen as in training (freeze_embeddings)."""
    from mmner.inference import load_run

    train(config, run, quiet=True)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    _, model = load_run(run)
    model.encoder.get_input_embeddings().weight.requires_grad_(False)
    return state["optimizer_states"][0]["param_groups"], model


def test_parameter_groups_get_their_learning_rates_and_weight_decay(tmp_path, tiny_model_params, tiny_corpus):
    config = _config(tiny_model_params, tiny_corpus, max_epochs=1)
    groups, model = _trained_groups(config, tmp_path / "run")
    o = config.optim
    got = sorted((g["initial_lr"], g["weight_decay"], len(g["params"])) for g in groups)
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    head = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    expected = sorted([
        (o.encoder_lr, o.weight_decay, sum(p.ndim > 1 for p in encoder)),
        (o.encoder_lr, 0.0, sum(p.ndim <= 1 for p in encoder)),
        (o.lr, o.weight_decay, sum(p.ndim > 1 for p in head)),
        (o.lr, 0.0, sum(p.ndim <= 1 for p in head)),
    ])
    assert got == expected
    assert o.encoder_lr != o.lr  # the test tells the groups apart
    assert all(g["fused"] for g in groups)


def test_layer_decay_gives_each_encoder_layer_its_rate(tmp_path, tiny_model_params, tiny_corpus):
    base = tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=1)
    base["optim"]["layer_decay"] = 0.5
    config = load_config(None, base=base)
    groups, model = _trained_groups(config, tmp_path / "run")
    o = config.optim
    # the tiny encoder has 2 layers: layer 1 (0-based) at the full rate, layer 0 at half, the rest (embeddings,
    # the unused pooler) at a quarter
    expected: dict[float, int] = {o.lr: sum(1 for n, p in model.named_parameters()
                                            if p.requires_grad and not n.startswith("encoder."))}
    for n, p in model.encoder.named_parameters():
        if p.requires_grad:
            rate = o.encoder_lr / 2 if "layer.0." in n else o.encoder_lr if "layer.1." in n else o.encoder_lr / 4
            expected[rate] = expected.get(rate, 0) + 1
    got: dict[float, int] = {}
    for g in groups:
        got[g["initial_lr"]] = got.get(g["initial_lr"], 0) + len(g["params"])
    assert got == expected and len(expected) == 4
    assert module.layer_depths(["encoder.embeddings.x", "encoder.encoder.layer.0.a.weight",
                                "encoder.encoder.layer.11.b", "encoder.encoder.relative_attention_bias.weight"]) == [
        0, 1, 12, 0]


@pytest.mark.parametrize("name", ["bert-crf", "bert-crf-caption"])
def test_evaluate_reproduces_the_test_score_of_training(name, tmp_path, tiny_model_params, tiny_corpus, tiny_visual):
    visual = tiny_visual["caption" if name != "bert-crf" else "none"]
    config = load_config(None, base=tiny_config(tiny_model_params[name], tiny_corpus, visual, max_epochs=2))
    run = tmp_path / "run"
    trained = train(config, run, quiet=True)["test"]
    again = evaluate(run, str(tiny_corpus["test"]), progress=False)
    keys = ("precision", "recall", "f1", "gold_entities", "pred_entities", "correct_entities", "per_type")
    assert {k: again[k] for k in keys} == {k: trained[k] for k in keys}
    assert json.loads((run / "metrics.json").read_text())["test"]["f1"] == again["f1"]


def test_a_short_run_logs_its_training_loss(tmp_path, tiny_model_params, tiny_corpus):
    import csv

    run = tmp_path / "run"
    train(_config(tiny_model_params, tiny_corpus, max_epochs=2), run, quiet=True)  # 3 batches an epoch, interval 20
    with open(run / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert len(losses) >= 2 and all(loss > 0 for loss in losses)


@pytest.mark.parametrize("fused", [True, False])
def test_warmup_and_clipping_as_configured(fused, monkeypatch, tmp_path, tiny_model_params, tiny_corpus):
    """The learning rate rises linearly over `optim.warmup` of the steps, then falls linearly to 0; every
    step clips the gradients' global norm at `optim.grad_clip`, and the clipped norm is within it: by
    `clip_grad_norm_` for the per-tensor AdamW, inside the update (`clip_in_fused_update`) for the fused one."""
    lrs: list[float] = []
    clips: list[tuple[float, float]] = []
    real_clip = torch.nn.utils.clip_grad_norm_
    real_fused_clip = module.clip_in_fused_update

    def record_lr(self, batch, batch_idx):
        lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def record_clip(params, max_norm, *args, **kwargs):
        params = list(params)
        total = real_clip(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]))
        clips.append((float(max_norm), float(after)))
        return total

    def record_fused_clip(optimizer, max_norm):
        norm = real_fused_clip(optimizer, max_norm)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        assert float(norm) == pytest.approx(float(torch.nn.utils.get_total_norm(grads)))
        assert float(optimizer.grad_scale) == pytest.approx(max(1.0, (float(norm) + 1e-6) / max_norm))
        clips.append((float(max_norm), float(norm / optimizer.grad_scale)))  # the norm the update sees
        return norm

    monkeypatch.setattr(module.TaggerModule, "on_train_batch_start", record_lr, raising=False)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record_clip)
    monkeypatch.setattr(module, "clip_in_fused_update", record_fused_clip)
    base = tiny_config(tiny_model_params["bert-crf"], tiny_corpus, max_epochs=2, precision="32-true")
    base["optim"].update(warmup=0.5, grad_clip=0.05, fused=fused)  # a small bound, so that clipping does act
    train(load_config(None, base=base), tmp_path / "run", quiet=True)
    peak = base["optim"]["encoder_lr"]
    steps = len(lrs)  # 24 posts in batches of 8, 2 epochs
    assert steps == 6
    warm = int(0.5 * steps)
    expected = [peak * k / warm for k in range(warm)] + [peak * (steps - k) / (steps - warm) for k in range(warm, steps)]
    assert lrs == pytest.approx(expected)
    assert len(clips) == steps and all(bound == 0.05 and norm <= 0.05 + 1e-4 for bound, norm in clips)


def test_clipping_in_the_fused_update_is_clip_grad_norm():
    """Two steps, gradients far above the bound and then within it (Adam's moments mix them, so the
    clipping shows in the parameters): the same parameters as clip_grad_norm_ before each step."""
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 7)]
    start = [torch.randn(s) for s in shapes]
    steps = [[scale * torch.randn(s) for s in shapes] for scale in (100.0, 0.01)]

    def trained(clip: str) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(x.clone()) for x in start]
        optimizer = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01, fused=True)
        for grads in steps:
            for p, g in zip(params, grads):
                p.grad = g.clone()
            if clip == "fused":
                module.clip_in_fused_update(optimizer, 1.0)
            elif clip == "torch":
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        return [p.detach() for p in params]

    fused, reference, unclipped = trained("fused"), trained("torch"), trained("none")
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(fused, reference))
    assert not all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(unclipped, reference))  # clipping shows


def test_ema_validates_saves_and_resumes_the_moving_average(monkeypatch, tmp_path, tiny_model_params, tiny_corpus):
    """trainer.ema: validation runs on the weights' moving average, the saved model is the best epoch's
    average, the trained weights stay beside it in the checkpoint, and --resume carries both on."""
    _scripted_valid_f1(monkeypatch, [50.0, 60.0, 70.0])
    validated: list[dict] = []
    real_step = module.TaggerModule.validation_step

    def spy(self, batch, batch_idx):
        if batch_idx == 0:
            validated.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(module.TaggerModule, "validation_step", spy)
    run = tmp_path / "run"
    config = _config(tiny_model_params, tiny_corpus, max_epochs=2, patience=10, ema=0.5)
    metrics = train(config, run, quiet=True)
    assert metrics["test"]["ema"] == 0.5 and metrics["test"]["best_epoch"] == 2
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    average = {k.removeprefix("model."): v for k, v in last["state_dict"].items()}
    trained = {k.removeprefix("model."): v for k, v in last["current_model_state"].items()}
    saved = load_file(run / "model.safetensors")
    moved = [k for k in saved if not torch.equal(average[k], trained[k])]
    assert moved  # the average lags the trained weights
    assert all(torch.equal(saved[k], average[k]) and torch.equal(validated[-1][k], average[k]) for k in saved)

    _scripted_valid_f1(monkeypatch, [80.0])
    more = load_config(None, base={**config.model_dump(mode="json"), "trainer": {**config.trainer.model_dump(),
                                                                                 "max_epochs": 3}})
    train(more, run, quiet=True, resume=True)
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == 2
    k = moved[0]  # one more epoch of averaging, from the restored average, not from the trained weights
    assert not torch.equal(resumed["state_dict"]["model." + k], last["state_dict"]["model." + k])
    assert not torch.equal(resumed["state_dict"]["model." + k], resumed["current_model_state"]["model." + k])


def test_ema_step_leaves_frozen_parameters_out(monkeypatch):
    """The average's per-step lerp covers the trained tensors only: a frozen parameter's average is never
    touched after the first copy (here a sentinel shows it), a trained one moves by (1 - decay)."""
    net = torch.nn.Module()
    net.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    net.trained = torch.nn.Parameter(torch.full((3,), 2.0))
    monkeypatch.setattr(module.WeightAveraging, "setup", lambda self, trainer, pl_module, stage: None)
    ema = module.WeightEMA(0.75)
    ema.setup(None, net, "fit")
    sentinel, average = torch.full((3,), -1.0), torch.zeros(3)
    ema._update([sentinel, average], [net.frozen.detach(), net.trained.detach()], torch.tensor(1))
    assert torch.equal(sentinel, torch.full((3,), -1.0))
    assert torch.allclose(average, torch.full((3,), 0.5))  # 0.75 x 0 + 0.25 x 2
