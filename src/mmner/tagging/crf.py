"""CRF head: pytorch-crf for the likelihood, a constrained Viterbi for decoding.

pytorch-crf's own `decode` cannot forbid transitions (e.g. O -> I-PER), so decoding adds a
constraint mask to the learned scores; with `constrained=False` it is plain Viterbi over the same
parameters and returns what `torchcrf.CRF.decode` returns.
"""

from __future__ import annotations

import torch
from torch import nn
from torchcrf import CRF

from mmner.tagging.vocab import LabelVocab

_FORBIDDEN = -1e4


class CRFHead(nn.Module):
    def __init__(self, labels: LabelVocab, constrained: bool = True) -> None:
        super().__init__()
        n = len(labels)
        self.crf = CRF(n, batch_first=True)
        self.constrained = constrained
        start = torch.full((n,), _FORBIDDEN)
        end = torch.full((n,), _FORBIDDEN)
        trans = torch.full((n, n), _FORBIDDEN)
        start[labels.allowed_starts()] = 0.0
        end[labels.allowed_ends()] = 0.0
        for i, j in labels.allowed_transitions():
            trans[i, j] = 0.0
        # Buffers, not parameters: the constraint is derived from the labels, never learned.
        self.register_buffer("start_mask", start, persistent=False)
        self.register_buffer("end_mask", end, persistent=False)
        self.register_buffer("trans_mask", trans, persistent=False)

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per post. emissions [B, W, L], tags/mask [B, W]. Always in fp32,
        under mixed precision too: the log-partition sums scores over every path."""
        with torch.autocast(emissions.device.type, enabled=False):
            return -self.crf(emissions.float(), tags, mask=mask.bool(), reduction="mean")

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Start, transition and end scores as decoding uses them (with the constraint when `constrained`), fp32."""
        start, end, trans = self.crf.start_transitions, self.crf.end_transitions, self.crf.transitions
        if self.constrained:
            start, end, trans = start + self.start_mask, end + self.end_mask, trans + self.trans_mask
        return start.float(), trans.float(), end.float()

    def log_marginals(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log P(tag of word t = l | post) for every word and label (forward-backward over the scores that
        decoding uses), differentiable. emissions [B, W, L], mask [B, W] left-aligned -> [B, W, L]; rows of
        padding words are meaningless. In fp32 under mixed precision too. `temperature` T: of the CRF whose
        scores (emissions, start, transitions, end) are divided by T, softer for T > 1."""
        start, trans, end = self.scores()
        with torch.autocast(emissions.device.type, enabled=False):
            emissions = emissions.float()
            if temperature != 1.0:
                emissions, start, trans, end = (x / temperature for x in (emissions, start, trans, end))
            return forward_backward(emissions, mask.bool(), start, trans, end)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Best tag ids per post (length = number of unmasked words; masks are left-aligned)."""
        start, trans, end = self.scores()
        with torch.autocast(emissions.device.type, enabled=False):
            return viterbi(emissions.float(), mask.bool(), start, trans, end)


def forward_backward(
    emissions: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, trans: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """Log marginals of a linear-chain CRF. emissions [B, W, L]; mask [B, W] left-aligned, at least one word
    per post; trans[i, j] scores i -> j. alpha_t: log-sum of the paths' scores up to word t ending in each
    label; beta_t: of the rest of the post after word t, from each label; log Z from the last word's alpha."""
    length = emissions.shape[1]
    alphas = [start + emissions[:, 0]]  # [B, L] each
    for t in range(1, length):
        step = torch.logsumexp(alphas[-1].unsqueeze(2) + trans.unsqueeze(0), dim=1) + emissions[:, t]
        alphas.append(torch.where(mask[:, t].unsqueeze(1), step, alphas[-1]))  # padding carries the last word's
    betas = [end.expand_as(alphas[-1])]  # beyond a post's last word only the end score remains
    for t in range(length - 2, -1, -1):
        step = torch.logsumexp(trans.unsqueeze(0) + (emissions[:, t + 1] + betas[-1]).unsqueeze(1), dim=2)
        betas.append(torch.where(mask[:, t + 1].unsqueeze(1), step, end.expand_as(step)))
    log_z = torch.logsumexp(alphas[-1] + end, dim=1)  # [B]
    return torch.stack(alphas, 1) + torch.stack(betas[::-1], 1) - log_z[:, None, None]


def viterbi(
    emissions: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, trans: torch.Tensor, end: torch.Tensor
) -> list[list[int]]:
    """Batched Viterbi. emissions [B, W, L]; mask [B, W] left-aligned; trans[i, j] scores i -> j."""
    batch, length, _ = emissions.shape
    lengths = mask.sum(1)
    score = start + emissions[:, 0]  # [B, L]
    history = []
    for t in range(1, length):
        cand = score.unsqueeze(2) + trans.unsqueeze(0)  # [B, L_prev, L_next]
        best, idx = cand.max(1)  # [B, L]
        nxt = best + emissions[:, t]
        step = mask[:, t].unsqueeze(1)
        score = torch.where(step, nxt, score)
        history.append(idx)
    score = score + end
    paths = []
    for b in range(batch):
        n = int(lengths[b])
        if n == 0:
            paths.append([])
            continue
        tag = int(score[b].argmax())
        path = [tag]
        for t in range(n - 2, -1, -1):
            tag = int(history[t][b, tag])
            path.append(tag)
        paths.append(path[::-1])
    return paths
