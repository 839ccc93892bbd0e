import itertools

import pytest
import torch

from mmner.tagging.crf import CRFHead, viterbi
from mmner.tagging.vocab import LabelVocab


def path_score(em, tags, start, trans, end):
    s = start[tags[0]] + em[0, tags[0]]
    for i in range(1, len(tags)):
        s = s + trans[tags[i - 1], tags[i]] + em[i, tags[i]]
    return s + end[tags[-1]]


def brute_force(em, start, trans, end):
    n, labels = em.shape
    return list(max(itertools.product(range(labels), repeat=n), key=lambda p: float(path_score(em, p, start, trans, end))))


def random_chain(seed: int, labels: int = 3, batch: int = 4, length: int = 5):
    """Random CRF scores for `batch` posts of random lengths 1..length: (em, start, trans, end, lengths, mask)."""
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(batch, length, labels, generator=g)
    start, end = torch.randn(labels, generator=g), torch.randn(labels, generator=g)
    trans = torch.randn(labels, labels, generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return em, start, trans, end, lengths, mask


@pytest.mark.parametrize("seed", range(20))
def test_viterbi_equals_brute_force(seed):
    em, start, trans, end, lengths, mask = random_chain(seed)
    batch = em.shape[0]
    paths = viterbi(em, mask, start, trans, end)
    for b in range(batch):
        n = int(lengths[b])
        assert paths[b] == brute_force(em[b, :n], start, trans, end)


def test_unconstrained_decode_matches_pytorch_crf():
    torch.manual_seed(0)
    vocab = LabelVocab(["PER", "LOC"], "bio")
    head = CRFHead(vocab, constrained=False)
    em = torch.randn(6, 7, len(vocab))
    mask = torch.arange(7)[None, :] < torch.tensor([7, 1, 3, 5, 7, 2])[:, None]
    assert head.decode(em, mask) == head.crf.decode(em, mask)


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_constrained_decode_never_emits_invalid_transitions(scheme):
    from mmner.tagging import schemes

    torch.manual_seed(1)
    vocab = LabelVocab(["PER", "LOC", "ORG"], scheme)
    head = CRFHead(vocab, constrained=True)
    em = torch.randn(50, 9, len(vocab)) * 5
    mask = torch.ones(50, 9, dtype=torch.bool)
    for path in head.decode(em, mask):
        tags = ["O"] + [vocab.tags[i] for i in path] + ["O"]
        assert all(schemes.transition_allowed(a, b, scheme) for a, b in zip(tags, tags[1:]))


def test_loss_is_the_negative_log_likelihood_over_all_paths():
    """The loss against a brute-force NLL: log of the sum over every tag path of exp(score), minus the gold
    path's score, on each post's unmasked prefix, averaged over posts."""
    torch.manual_seed(2)
    vocab = LabelVocab(["PER"], "bio")  # 3 tags
    head = CRFHead(vocab)
    with torch.no_grad():  # learned-looking transition scores, not pytorch-crf's small initial ones
        for p in (head.crf.start_transitions, head.crf.end_transitions, head.crf.transitions):
            p.copy_(torch.randn_like(p))
    em = torch.randn(3, 5, len(vocab))
    tags = torch.randint(0, len(vocab), (3, 5))
    lengths = [5, 2, 4]
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    start, trans, end = head.crf.start_transitions, head.crf.transitions, head.crf.end_transitions
    nll = []
    for b, n in enumerate(lengths):
        paths = itertools.product(range(len(vocab)), repeat=n)
        every = torch.stack([path_score(em[b, :n], p, start, trans, end) for p in paths])
        nll.append(torch.logsumexp(every, 0) - path_score(em[b, :n], tags[b, :n].tolist(), start, trans, end))
    assert torch.allclose(head.loss(em, tags, mask), torch.stack(nll).mean(), atol=1e-5)

@pytest.mark.parametrize("seed", range(10))
def test_marginals_equal_brute_force_over_all_paths(seed):
    """forward_backward: P(tag of word t = l) summed over every path of each post's own length (posts of
    different lengths in one batch), rows summing to 1, gradients flowing to the emissions."""
    from mmner.tagging.crf import forward_backward

    em, start, trans, end, lengths, mask = random_chain(seed)
    em.requires_grad_(True)
    batch, labels = em.shape[0], em.shape[2]
    log_marginals = forward_backward(em, mask, start, trans, end)
    for b in range(batch):
        n = int(lengths[b])
        paths = list(itertools.product(range(labels), repeat=n))
        weights = torch.stack([path_score(em[b].detach(), p, start, trans, end) for p in paths]).softmax(0)
        expected = torch.zeros(n, labels)
        for w, p in zip(weights, paths):
            for t, tag in enumerate(p):
                expected[t, tag] += w
        assert torch.allclose(log_marginals[b, :n].exp(), expected, atol=1e-5)
    assert torch.allclose(log_marginals.exp().sum(-1)[mask], torch.ones(int(mask.sum())), atol=1e-5)
    log_marginals[mask].exp()[:, 0].sum().backward()
    assert em.grad is not None and float(em.grad.abs().sum()) > 0


def test_constrained_marginals_give_forbidden_tags_no_mass():
    """CRFHead.log_marginals uses decoding's constrained scores: no I- tag right after O or at a post's start."""
    vocab = LabelVocab(["PER", "LOC"])
    head = CRFHead(vocab, constrained=True)
    em = torch.randn(2, 4, len(vocab), generator=torch.Generator().manual_seed(0))
    em[:, :, vocab.index["O"]] += 3.0  # O likely everywhere
    probs = head.log_marginals(em, torch.ones(2, 4, dtype=torch.bool)).exp()
    inside = [i for i, label in enumerate(vocab.tags) if label.startswith("I-")]
    assert float(probs[:, 0, inside].sum()) < 1e-3  # no post starts inside an entity
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4), atol=1e-5)


def test_marginals_at_a_temperature_are_those_of_the_scores_divided_by_it():
    """CRFHead.log_marginals(temperature=T): forward-backward over every score (emissions, start, transitions,
    end, the constraint included) divided by T; T = 1 is the plain marginals, T > 1 spreads the mass."""
    from mmner.tagging.crf import forward_backward

    vocab = LabelVocab(["PER", "LOC"])
    head = CRFHead(vocab, constrained=True)
    with torch.no_grad():
        head.crf.transitions.normal_(generator=torch.Generator().manual_seed(1))
    em = 3.0 * torch.randn(2, 5, len(vocab), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    start, trans, end = head.scores()
    plain = head.log_marginals(em, mask)
    assert torch.equal(head.log_marginals(em, mask, temperature=1.0), plain)
    warm = head.log_marginals(em, mask, temperature=2.0)
    assert torch.allclose(warm, forward_backward(em / 2, mask, start / 2, trans / 2, end / 2), atol=1e-6)
    assert torch.allclose(warm.exp().sum(-1)[mask], torch.ones(int(mask.sum())), atol=1e-5)

    def entropy(log_p):
        return float(-(log_p.exp() * log_p.clamp_min(-30)).sum(-1)[mask].sum().detach())

    assert entropy(warm) > entropy(plain) + 0.5
    inside = [i for i, label in enumerate(vocab.tags) if label.startswith("I-")]
    assert float(warm.exp()[:, 0, inside].sum()) < 1e-3  # the constraint still holds at T = 2
