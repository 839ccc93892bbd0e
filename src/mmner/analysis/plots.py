"""The report's figures (matplotlib, Agg), each returned as a `data:image/png;base64,...` URI so the
HTML stays one self-contained file."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

COLORS = plt.get_cmap("tab10").colors


def _uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str, title: str,
                 xlabel: str = "") -> str:
    """One bar per series in each group (e.g. runs x length buckets); None leaves a gap."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=name, color=COLORS[k % len(COLORS)])
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    return _uri(fig)


def learning_curves(curves: dict[str, list[tuple[int, float]]]) -> str:
    """Test F1 against training posts, one line per configuration (mean over seeds; dots per run)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sizes = [n for pts in curves.values() for n, _ in pts]
    for k, (name, points) in enumerate(curves.items()):
        color = COLORS[k % len(COLORS)]
        xs = sorted({n for n, _ in points})
        means = [float(np.mean([f for n, f in points if n == x])) for x in xs]
        ax.plot(xs, means, "-", color=color, label=name)
        ax.plot([n for n, _ in points], [f for _, f in points], "o", color=color, ms=4, alpha=0.7)
    if sizes and max(sizes) > 10 * max(1, min(sizes)):
        ax.set_xscale("log")
    ax.set_xticks(sorted(set(sizes)), [str(n) for n in sorted(set(sizes))])
    ax.minorticks_off()
    ax.set_xlabel("training posts")
    ax.set_ylabel("test F1 (%)")
    ax.set_title("Low-resource curve", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _uri(fig)


def relation_histogram(scores: dict[str, Sequence[float]]) -> str:
    """Distribution of relation scores r per run, with RpBERT's split at 0.5."""
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    bins = np.linspace(0, 1, 21)
    for k, (name, values) in enumerate(scores.items()):
        ax.hist(values, bins=bins, alpha=0.55, label=name, color=COLORS[k % len(COLORS)])
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set_xlabel("relation score r (image adds to the text)")
    ax.set_ylabel("posts")
    ax.set_title("Relation scores", fontsize=10)
    ax.legend(fontsize=8)
    return _uri(fig)


def relation_vs_stv(points: dict[str, tuple[Sequence[float], Sequence[float]]]) -> str:
    """RpBERT Fig. 3: relation score r against S_TV, the summed visual attention."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for k, (name, (r, stv)) in enumerate(points.items()):
        ax.scatter(r, stv, s=6, alpha=0.5, label=name, color=COLORS[k % len(COLORS)])
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set_xlabel("relation score r")
    ax.set_ylabel("S_TV (summed visual attention)")
    ax.set_title("r against S_TV", fontsize=10)
    ax.legend(fontsize=8)
    return _uri(fig)


def _text(label: str) -> str:
    """Text drawn as written: a `$` (cashtags, prices) would otherwise start matplotlib's mathtext."""
    return label.replace("$", r"\$")


# The attention colour scale of the report: magma without its darkest and lightest ends, from 0 to the
# map's largest weight (the HTML legend draws the same ramp, `ramp_css`).
ATTENTION_CMAP = matplotlib.colors.LinearSegmentedColormap.from_list(
    "attention", plt.get_cmap("magma")(np.linspace(0.12, 0.92, 64)))


def ramp_css(stops: int = 6) -> list[str]:
    """The attention colour scale as CSS colour stops (for a linear-gradient legend)."""
    return [matplotlib.colors.to_hex(ATTENTION_CMAP(x)) for x in np.linspace(0.0, 1.0, stops)]


def heat_maps(maps: Sequence[dict[str, Any]], cols: int = 4) -> str:
    """Attention over visual regions per panel: a grid as a heat map (as a semi-transparent overlay on
    the post's picture when the map carries one under "image"), a sequence (caption words) as a bar chart
    with the words beside the bars and the weights on the x axis. Colours: `ATTENTION_CMAP` from 0 to the
    panel's largest weight."""
    rows = max(1, math.ceil(len(maps) / cols))
    sizes = [len(m["attention"]) for m in maps if not m.get("grid")]
    height = 2.1 if not sizes else min(3.4, max(1.6, 0.16 * max(sizes) + 0.7))
    fig, axes = plt.subplots(rows, cols, figsize=(2.15 * cols, height * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= max(1, len(maps)):
            fig.delaxes(ax)  # no empty panels: the figure is as wide as its panels, each panel one size
    for ax, m in zip(axes.flat, maps):
        weights = np.asarray(m["attention"], dtype=float)
        top = float(weights.max()) if weights.size and weights.max() > 0 else 1.0
        title = _text(m["title"])
        if m.get("grid"):
            grid = weights.reshape(m["grid"])
            if m.get("image") is not None:
                pixels = np.asarray(m["image"])
                h, w = pixels.shape[:2]
                ax.imshow(pixels, extent=(0, w, h, 0))
                ax.imshow(grid, cmap=ATTENTION_CMAP, vmin=0, vmax=top, alpha=0.55, interpolation="bilinear",
                          extent=(0, w, h, 0))
                ax.set_xlim(0, w)
                ax.set_ylim(h, 0)
            else:
                ax.imshow(grid, cmap=ATTENTION_CMAP, vmin=0, vmax=top, interpolation="nearest")
            title += f"\nmax {top:.3g}"
        else:  # a sequence (caption words): one bar per region, read top to bottom, coloured as the grids
            ax.axis("on")
            y = np.arange(len(weights))
            ax.barh(y, weights, color=ATTENTION_CMAP(weights / top), height=0.75)
            ax.set_ylim(len(weights) - 0.5, -0.5)
            names = [_text(str(r)) for r in m["regions"]] if m.get("regions") else [str(j) for j in y]
            ax.set_yticks(y, names, fontsize=7 if len(weights) <= 24 else 5)
            ax.tick_params(axis="x", labelsize=6)
            ax.tick_params(axis="y", length=0)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.set_xlim(0, top * 1.05)
            ax.grid(axis="x", alpha=0.3)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _uri(fig)
