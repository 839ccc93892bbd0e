"""The fast training path: length-bucketed batches, precision `auto`, frozen word embeddings, threads."""

from __future__ import annotations

import json
import random

import pytest
import torch

from conftest import tiny_config
from mmner.config import load_config
from mmner.data.batches import BucketBatchSampler, EpochSampler, bucket_batches, input_length
from mmner.inference import predict_tags
from mmner.train.module import TaskBatchSampler
from mmner.train.run import cpu_flags, cpu_model, resolve_precision, train


def _epoch(sampler: BucketBatchSampler | TaskBatchSampler, epoch: int) -> list[list[int]]:
    sampler.sampler.set_epoch(epoch)
    return list(sampler)


def test_bucketed_batches_cover_every_post_once_per_epoch():
    lengths = [random.Random(i).randint(3, 60) for i in range(203)]
    sampler = BucketBatchSampler(EpochSampler(203), 16, lengths=lengths, seed=13, chunk_batches=4)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(203))
        assert len(batches) == len(sampler) == 13
        assert all(len(b) <= 16 for b in batches)


def test_bucketed_batches_are_seeded_and_change_per_epoch():
    lengths = [random.Random(i).randint(3, 60) for i in range(200)]

    def draw(seed: int, epoch: int) -> list[list[int]]:
        return _epoch(BucketBatchSampler(EpochSampler(200), 16, lengths=lengths, seed=seed, chunk_batches=4), epoch)

    assert draw(13, 0) == draw(13, 0)  # reproducible, also in a fresh sampler (a resumed run)
    assert draw(13, 0) != draw(21, 0)
    assert draw(13, 0) != draw(13, 1)


def test_bucketed_batches_pad_less_than_random_ones():
    rng = random.Random(0)
    lengths = [rng.randint(5, 60) for _ in range(800)]

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    bucketed = bucket_batches(list(range(800)), lengths, 16, random.Random(1), chunk_batches=10)
    order = list(range(800))
    random.Random(1).shuffle(order)
    shuffled = [order[s : s + 16] for s in range(0, 800, 16)]
    assert padded(bucketed) < 0.8 * padded(shuffled)
    # inside a chunk, every batch holds posts of neighbouring lengths
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 20 for b in bucketed)


def test_sorted_pass_without_shuffle():
    lengths = [5, 1, 4, 1, 3]
    batches = bucket_batches(list(range(5)), lengths, 2, None, chunk_batches=1)
    assert batches == [[1, 3], [4, 2], [0]]  # ascending length, ties in index order


def test_task_batches_bucket_within_each_task():
    sizes = [30, 50]
    lengths = [random.Random(i).randint(1, 40) for i in range(80)]
    sampler = TaskBatchSampler(EpochSampler(80), 8, sizes=sizes, batch_sizes=[6, 8], lengths=lengths, seed=3,
                               chunk_batches=2)
    batches = _epoch(sampler, 0)
    tasks = [0 if max(b) < 30 else 1 for b in batches]
    assert all(min(b) >= 30 or max(b) < 30 for b in batches)  # one task per batch
    assert tasks == sorted(tasks)  # auxiliary task first, then tagging (Algorithm 1)
    assert sorted(i for b in batches for i in b) == list(range(80))
    assert batches == _epoch(sampler, 0) and batches != _epoch(sampler, 1)


def test_input_length_counts_what_the_model_reads():
    class W:
        def __init__(self, n: int) -> None:
            self.input_ids = [0] * n

    assert input_length({"windows": [W(10), W(6)], "n_words": 12}) == 16
    assert input_length({"windows": [W(10)], "caption_ids": [1, 2, 3]}) == 13
    assert input_length({"windows": [W(10)], "regions": torch.zeros(49, 8), "caption_ids": None}) == 59
    assert input_length({"word_ids": [1, 2], "n_words": 2}) == 2


@pytest.mark.parametrize("flags, expected", [
    ({"avx512f", "avx512_bf16"}, "bf16-mixed"),
    ({"amx_bf16", "amx_tile"}, "bf16-mixed"),
    ({"avx2", "avx512f"}, "32-true"),
    (set(), "32-true"),
])
def test_precision_auto_on_the_cpu(flags, expected):
    assert resolve_precision("auto", "auto", flags=flags, cuda=False) == expected
    assert resolve_precision("auto", "cpu", flags=flags, cuda=True) == expected  # CPU asked for on a GPU machine


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
"""


def test_cpu_model_and_flags_from_cpuinfo():
    assert cpu_model(CPUINFO) == "AMD EPYC 9R14 96-Core Processor"
    assert cpu_flags(CPUINFO) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_model("processor\t: 0\n") is None and cpu_flags("") == set()


def test_precision_auto_on_a_gpu_and_explicit_values():
    assert resolve_precision("auto", "auto", flags=set(), cuda=True, cuda_bf16=True) == "bf16-mixed"
    assert resolve_precision("auto", "gpu", flags={"avx512_bf16"}, cuda=True, cuda_bf16=False) == "32-true"
    assert resolve_precision("32-true", flags={"avx512_bf16"}, cuda=False) == "32-true"
    assert resolve_precision("bf16-mixed", flags=set(), cuda=False) == "bf16-mixed"


def test_precision_auto_bad_key():
    from mmner.errors import MmnerError

    with pytest.raises(MmnerError, match="trainer.batching"):
        load_config(None, base={"model": {"name": "bert-crf"}, "trainer": {"batching": "sorted"}})


def _model_config(tiny_model_params, tiny_corpus, **trainer):
    base = tiny_config(tiny_model_params["bert-crf"], tiny_corpus, threads=1, **trainer)
    return load_config(None, base=base)


def test_training_records_its_fast_path(tiny_model_params, tiny_corpus, tmp_path):
    config = _model_config(tiny_model_params, tiny_corpus, precision="bf16-mixed")
    metrics = train(config, tmp_path / "run", quiet=True)["test"]
    assert metrics["trainer_precision"] == "bf16-mixed"
    assert metrics["batching"] == "bucket" and metrics["threads"] == 1 and metrics["frozen_embeddings"] is True
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert saved["trainer_precision"] == "bf16-mixed"
    assert torch.get_num_threads() == 1  # the caller's thread count is restored
    assert torch.utils.deterministic.fill_uninitialized_memory is False  # no NaN fill of each new tensor


def test_frozen_word_embeddings_do_not_move(tiny_model_params, tiny_corpus, tmp_path):
    from mmner.models import registry
    from mmner.data.readers import read_conll
    from mmner.tagging.vocab import LabelVocab

    config = _model_config(tiny_model_params, tiny_corpus, precision="32-true")
    params = config.model_params()
    posts = read_conll(tiny_corpus["train"])
    model = registry.get("bert-crf").create(params, LabelVocab.from_posts(posts, "bio"), posts)
    before = model.encoder.get_input_embeddings().weight.detach().clone()
    assert not model.encoder.get_input_embeddings().weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if "word_embeddings" not in n)

    train(config, tmp_path / "run", quiet=True)
    from mmner.inference import load_run

    _, trained = load_run(tmp_path / "run")
    assert torch.equal(trained.encoder.get_input_embeddings().weight.cpu(), before)
    unfrozen = params.model_copy(update={"freeze_embeddings": False})
    assert registry.get("bert-crf").create(unfrozen, model.labels, posts).encoder.get_input_embeddings().weight.requires_grad


def test_sorted_prediction_keeps_post_order(tiny_model_params, tiny_corpus, tmp_path):
    """Tagging in length-sorted batches gives every post the tags it gets alone."""
    from mmner.data.readers import read_conll
    from mmner.inference import load_run

    config = _model_config(tiny_model_params, tiny_corpus, precision="32-true")
    train(config, tmp_path / "run", quiet=True)
    _, model = load_run(tmp_path / "run")
    from dataclasses import replace

    corpus = read_conll(tiny_corpus["train"]) + read_conll(tiny_corpus["test"])
    # posts of many lengths (prefixes, and posts joined), so that sorting reorders them
    posts = [replace(p, tokens=p.tokens[: 1 + i % len(p.tokens)], tags=None) for i, p in enumerate(corpus)]
    posts += [replace(a, id=f"{a.id}+{b.id}", tokens=a.tokens + b.tokens, tags=None) for a, b in zip(corpus, corpus[3:9])]
    assert len({len(p.tokens) for p in posts}) > 5
    together = predict_tags(model, posts, batch_size=5, progress=False)
    alone = [predict_tags(model, [p], batch_size=1, progress=False)[0] for p in posts]
    assert together == alone
    assert [len(t) for t in together] == [len(p.tokens) for p in posts]


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_mask_is_bernoulli_with_torch_scaling(p):
    from mmner.models.dropout import dropout_mask

    torch.manual_seed(0)
    mask = dropout_mask(torch.empty(1000, 1001), p)
    assert set(mask.unique().tolist()) == pytest.approx([0.0, 1 / (1 - p)])
    kept = (mask > 0).float()
    assert abs(float(kept.mean()) - (1 - p)) < 0.003
    lanes = kept.flatten()[: 4 * (kept.numel() // 4)].view(-1, 4).mean(0)  # each 16-bit lane of a draw
    assert torch.allclose(lanes, torch.full((4,), 1 - p), atol=0.006)
    assert dropout_mask(torch.empty(7, 3, dtype=torch.bfloat16), p).dtype == torch.bfloat16
    torch.manual_seed(1)
    first = dropout_mask(torch.empty(50, 50), p)
    torch.manual_seed(1)
    assert torch.equal(dropout_mask(torch.empty(50, 50), p), first)  # seeded by torch's generator
    assert not torch.equal(dropout_mask(torch.empty(50, 50), p), first)


def test_fast_dropout_gradient_is_its_mask_and_eval_is_identity():
    from mmner.models.dropout import FastDropout

    layer = FastDropout(0.3)
    x = torch.randn(40, 30, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert torch.allclose(y, x.detach() * x.grad)  # y = x * mask, d(sum y)/dx = mask
    assert 0.6 < float((x.grad > 0).float().mean()) < 0.8
    layer.eval()
    assert layer(x) is x


def test_fast_dropout_replaces_every_dropout_module(tiny_model_params, tiny_corpus):
    from mmner.data.readers import read_conll
    from mmner.models import registry
    from mmner.models.dropout import FastDropout, use_fast_dropout
    from mmner.tagging.vocab import LabelVocab

    config = _model_config(tiny_model_params, tiny_corpus)
    posts = read_conll(tiny_corpus["train"])
    model = registry.get("bert-crf").create(config.model_params(), LabelVocab.from_posts(posts, "bio"), posts)
    batch = model.collate([model.featurize(p) for p in posts[:4]])
    model.eval()
    with torch.no_grad():
        before = model(batch)["emissions"]
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert use_fast_dropout(model) == len(dropouts) > 1  # the encoder's and the head's
    assert all(type(m) is FastDropout for m in dropouts)
    with torch.no_grad():
        assert torch.equal(model(batch)["emissions"], before)  # evaluation is unchanged
        model.train()
        assert not torch.equal(model(batch)["emissions"], model(batch)["emissions"])  # training drops


def test_training_records_its_dropout_masks(tiny_model_params, tiny_corpus, tmp_path):
    for mask in ("fast", "torch"):
        config = _model_config(tiny_model_params, tiny_corpus, dropout_mask=mask)
        assert train(config, tmp_path / mask, quiet=True)["test"]["dropout_mask"] == mask


def _no_dropout(x, p, training=True):
    return x


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_attention_by_hand_is_sdpa_when_nothing_is_dropped(mask_kind):
    from mmner.models.dropout import attention_by_hand

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 8) for _ in range(3))
    keep = torch.rand(3, 1, 1, 7) > 0.3
    keep[..., 0] = True
    k, v = torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8)
    mask = {"none": None, "bool": keep, "float": torch.zeros(keep.shape).masked_fill(~keep, -1e9)}[mask_kind]
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(attention_by_hand(q, k, v, mask, 0.0), want, atol=1e-5)
    half = attention_by_hand(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 0.0)
    assert half.dtype == torch.bfloat16  # computed in fp32, returned in the inputs' dtype
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the kernel torch's CPU training with attention dropout runs
        sdpa = torch.nn.functional.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                                                attn_mask=mask)
    assert torch.allclose(half.float(), sdpa.float(), atol=1e-2)  # both in fp32 inside, rounded to bf16 once
    torch.manual_seed(1)
    dropped = attention_by_hand(q, k, v, mask, 0.5)
    assert not torch.allclose(dropped, want, atol=1e-3)  # the probabilities are dropped in training


@pytest.mark.parametrize("inputs", ["self", "shared-memory", "distinct"])
def test_fast_multihead_attention_is_torch_attention_but_for_its_mask(inputs, monkeypatch):
    from mmner.models import dropout
    from mmner.models.dropout import FastMultiheadAttention

    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(16, 4, dropout=0.2, batch_first=True)
    x, memory, other = torch.randn(3, 5, 16), torch.randn(3, 6, 16), torch.randn(3, 6, 16)
    query, key, value = {"self": (x, x, x), "shared-memory": (x, memory, memory), "distinct": (x, memory, other)}[inputs]
    width = key.shape[1]
    padding = torch.arange(width)[None, :] >= torch.tensor([width, 3, 1])[:, None]  # True = ignore
    attention.eval()
    want, _ = attention(query, key, value, key_padding_mask=padding, need_weights=False)
    attention.__class__ = FastMultiheadAttention
    attention.train()
    monkeypatch.setattr(dropout, "fast_dropout", _no_dropout)  # the same computation without its random mask
    got, weights = attention(query, key, value, key_padding_mask=padding, need_weights=False)
    assert weights is None and torch.allclose(got, want, atol=1e-5)
    monkeypatch.undo()
    torch.manual_seed(1)
    assert not torch.allclose(attention(query, key, value, key_padding_mask=padding, need_weights=False)[0], want,
                              atol=1e-3)
    # asked for its weights, or in evaluation: torch's own forward
    attention.eval()
    assert torch.equal(attention(query, key, value, key_padding_mask=padding, need_weights=False)[0], want)


def test_fast_dropout_switches_encoder_attention_which_computes_the_same(tiny_encoder, monkeypatch):
    from transformers import AutoModel

    from mmner.models import dropout
    from mmner.models.dropout import FAST_ATTENTION, use_fast_dropout

    encoder = AutoModel.from_pretrained(tiny_encoder, attn_implementation="sdpa", hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.3)
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    attention_mask = (ids != 0).long()
    encoder.eval()
    with torch.no_grad():
        want = encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    use_fast_dropout(encoder)
    assert encoder.config._attn_implementation == FAST_ATTENTION
    with torch.no_grad():
        assert torch.equal(encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state, want)  # eval: SDPA
        encoder.train()
        monkeypatch.setattr(dropout, "fast_dropout", _no_dropout)
        got = encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state
        real = attention_mask.bool()
        assert torch.allclose(got[real], want[real], atol=1e-5)  # the by-hand path, without its mask
        monkeypatch.undo()
        assert not torch.allclose(encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state[real],
                                  want[real], atol=1e-3)


def test_running_clock_leaves_out_a_stop_but_not_busy_time(monkeypatch):
    from mmner.train import module

    wall, cpu = [100.0], [5.0]
    monkeypatch.setattr(module.time, "perf_counter", lambda: wall[0])
    monkeypatch.setattr(module.time, "process_time", lambda: cpu[0])
    clock = module.RunningClock(tick=0.25, gap=3.0, thread=False)  # ticked by hand
    start = clock.now()
    wall[0] += 0.25; cpu[0] += 0.5
    clock._tick()
    assert clock.now() - start == 0.25
    wall[0] += 60.25  # stopped for a minute after that tick: no CPU time
    assert clock.now() - start == 0.5  # counted before the next tick: all but the one tick period
    assert clock.stopped == 0.0 and clock.stopped_seconds() == 60.0
    clock._tick()
    assert clock.stopped == 60.0 and clock.now() - start == 0.5
    wall[0] += 10.25; cpu[0] += 20.0  # a late tick with the CPU busy is running time
    clock._tick()
    assert clock.now() - start == 10.75
    wall[0] += 2.25  # a stop shorter than `gap` counts as running
    clock._tick()
    assert clock.now() - start == 13.0 and clock.stopped == 60.0


def test_running_clock_thread_ticks():
    from mmner.train.module import RunningClock, running_clock

    assert running_clock() is running_clock()
    clock = RunningClock(tick=0.01)
    first = clock._last
    import time

    time.sleep(0.1)
    assert clock._last != first and clock.stopped == 0.0
