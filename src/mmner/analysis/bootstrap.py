"""Paired bootstrap over posts for the difference in micro F1 between two runs on the same test set.

Posts, not tokens or entities, are resampled: errors within a post are not independent. Each
resample draws N posts with replacement (one multinomial draw of per-post weights), and the same
draws serve both runs and every metric, so the comparison is paired and the output is a function of
the seed alone.

Test (stated in the report): with observed difference d and resampled differences d_b, the 95%
interval is the 2.5th-97.5th percentile of d_b; the two-sided p-value is
(1 + #{b : |d_b - d| >= |d|}) / (B + 1), i.e. how often the resampled difference, centred on the
observed one (the null distribution shift of Berg-Kirkpatrick et al. 2012), lies at least as far
from it as the observed difference lies from 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEST_NAME = "paired bootstrap over posts (micro F1 difference; percentile CI; two-sided p from the centred bootstrap distribution)"


def f1_from_counts(c: np.ndarray) -> np.ndarray:
    """Micro F1 in percent from [..., 3] = [correct, predicted, gold] sums."""
    denom = c[..., 1] + c[..., 2]
    return np.where(denom > 0, 200.0 * c[..., 0] / np.maximum(denom, 1), 0.0)


@dataclass
class Bootstrap:
    """Shared resampling weights for one test set: `weights[b, i]` = how often post i is in sample b."""

    n_posts: int
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        if self.n_posts:
            self.weights = rng.multinomial(self.n_posts, np.full(self.n_posts, 1.0 / self.n_posts), size=self.resamples)
        else:
            self.weights = np.zeros((self.resamples, 0), dtype=np.int64)

    def f1_samples(self, counts: np.ndarray) -> np.ndarray:
        """F1 of every resample, `[B]`, from per-post counts `[N, 3]`."""
        return f1_from_counts(self.weights @ counts)  # [B, N] @ [N, 3] -> [B, 3]

    def interval(self, samples: np.ndarray) -> tuple[float, float]:
        tail = 100 * (1 - self.confidence) / 2
        lo, hi = np.percentile(samples, [tail, 100 - tail])
        return round(float(lo), 2), round(float(hi), 2)

    def f1_interval(self, counts: np.ndarray) -> tuple[float, float]:
        return self.interval(self.f1_samples(counts))

    def compare(self, base: np.ndarray, other: np.ndarray) -> dict[str, float | int]:
        """F1(other) - F1(base) in points, with its interval and p-value; both `[N, 3]` for the same posts."""
        out = self.compare_seeds([base], [other])
        del out["seeds"]
        return out

    def compare_seeds(self, bases: list[np.ndarray], others: list[np.ndarray]) -> dict[str, float | int]:
        """As `compare` for runs of several seeds on the same posts, paired seed by seed: the difference is
        the mean over seeds of F1(other_s) - F1(base_s); every resample draws the same posts for all seeds,
        so the interval covers the choice of test posts (the spread over seeds is the std of the runs)."""
        if not bases or len(bases) != len(others):
            raise ValueError("paired bootstrap over seeds needs one base and one other run per seed")
        for c in (*bases, *others):
            if c.shape != (self.n_posts, 3):
                raise ValueError(f"paired bootstrap needs counts for the same {self.n_posts} posts")
        observed = float(np.mean([f1_from_counts(o.sum(axis=0)) - f1_from_counts(b.sum(axis=0))
                                  for b, o in zip(bases, others)]))
        samples = np.mean([self.f1_samples(o) - self.f1_samples(b) for b, o in zip(bases, others)], axis=0)
        extreme = int(np.sum(np.abs(samples - observed) >= abs(observed) - 1e-12))
        lo, hi = self.interval(samples)
        return {"delta": round(observed, 2), "ci_low": lo, "ci_high": hi,
                "p_value": round((1 + extreme) / (self.resamples + 1), 4), "seeds": len(bases)}

    def describe(self) -> dict[str, float | int | str]:
        return {"test": TEST_NAME, "unit": "post", "resamples": self.resamples, "seed": self.seed,
                "confidence": self.confidence}
