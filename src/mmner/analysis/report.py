"""`mmner report`: analyse one or more finished runs on their test sets, as HTML plus JSON.

`analyse` computes every number (the JSON file holds exactly what the page shows); `render` draws
the page from those numbers. Sections: overall and per type (with paired bootstrap differences to
the first run), seen / unseen / ambiguous entities, post length, low-resource curves, relation
split, attention maps (per post and per predicted entity), and the posts with the most errors.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmner import __version__
from mmner.analysis import plots, slices
from mmner.analysis.artifacts import ATTENTION_SUFFIX, RELATION_SUFFIX
from mmner.analysis.bootstrap import Bootstrap
from mmner.analysis.runs import RunData, load
from mmner.analysis.template import PAGE
from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.tagging.scorer import score
from mmner.vision.images import load_image

RELATION_THRESHOLD = 0.5  # RpBERT: r > 0.5 "image adds to the tweet meaning"
HEAT_MAPS = 8  # posts whose attention is drawn, per run
MAX_PANELS = 16  # attention panels per run: each shown post's map, then its entities' maps
TITLE_TEXT = 40  # characters of an entity's text in a panel title
IMAGE_SIDE = 512  # longer side of a post image drawn under its attention grid

SECTIONS = {
    "scores": "Overall and per type",
    "entities": "Seen / unseen / ambiguous entities",
    "length": "Post length",
    "curves": "Low-resource curves",
    "relation": "Relation split",
    "attention": "Where the model looks",
    "errors": "Errors",
}


# --------------------------------------------------------------------------------------------------
# numbers


def _scores(runs: Sequence[RunData], boot: dict[tuple, Bootstrap]) -> dict[str, Any]:
    base = runs[0]
    types = sorted({e[0] for r in runs for p in r.items for e in p.gold | p.pred})
    per_run: dict[str, Any] = {}
    counts: dict[str, dict[str, np.ndarray]] = {}
    for r in runs:
        result = score([p.tags for p in r.posts], r.pred, r.mode)  # type: ignore[misc]
        c = {"overall": slices.counts(r.items), **slices.type_counts(r.items, types)}
        counts[r.label] = c
        lo, hi = boot[r.test_key].f1_interval(c["overall"])
        recorded = r.metrics.get("f1")
        per_run[r.label] = {**result, "f1_ci": [lo, hi], "metrics_json_f1": recorded}
    differences = []
    for r in runs[1:]:
        if r.test_key != base.test_key:
            differences.append({"run": r.label, "baseline": base.label, "paired": False,
                                "note": f"{r.label} was tested on other posts than {base.label}: no paired comparison"})
            continue
        b = boot[base.test_key]
        differences.append({
            "run": r.label, "baseline": base.label, "paired": True,
            "overall": b.compare(counts[base.label]["overall"], counts[r.label]["overall"]),
            "per_type": {t: b.compare(counts[base.label][t], counts[r.label][t]) for t in types
                         if counts[base.label][t][:, 1:].any() or counts[r.label][t][:, 1:].any()},
        })
    return {"types": types, "runs": per_run, "differences": differences,
            "bootstrap": next(iter(boot.values())).describe()}


def _entity_slices(runs: Sequence[RunData]) -> dict[str, Any]:
    out: dict[str, Any] = {"definition": slices.SLICE_DEFINITION,
                           "slices": list(slices.ENTITY_SLICES), "runs": {}, "notes": {}}
    for r in runs:
        if r.train_posts is None:
            out["runs"][r.label] = None
            out["notes"][r.label] = r.train_note
            continue
        lexicon = slices.train_lexicon(r.train_posts, r.mode)
        out["runs"][r.label] = {"train_posts": len(r.train_posts), **slices.slice_scores(r.items, lexicon)}
    return out


def _length(runs: Sequence[RunData]) -> dict[str, Any]:
    return {"buckets": [slices.bucket_name(b) for b in slices.LENGTH_BUCKETS], "unit": "tokens",
            "runs": {r.label: slices.length_scores(r.items) for r in runs}}


def schedule_text(schedule: dict[str, Any] | None, keys: Sequence[str] | None = None) -> str:
    """A run's training schedule in a few words (`keys`: only those, e.g. the ones that differ)."""
    if not schedule:
        return "?"
    names = {"trainer.max_epochs": "max epochs", "trainer.max_steps": "max steps", "trainer.patience": "patience",
             "trainer.batch_size": "batch", "trainer.accumulate_grad_batches": "accumulate",
             "trainer.batching": "batching", "optim.lr": "lr", "optim.encoder_lr": "encoder lr",
             "optim.weight_decay": "weight decay", "optim.warmup": "warmup"}
    if keys is None:
        keys = [k for k in names if k in schedule and not (k == "trainer.max_steps" and schedule[k] == -1)
                and not (k == "trainer.accumulate_grad_batches" and schedule[k] == 1)]
    return ", ".join(f"{names.get(k, k)} {schedule.get(k):g}" if isinstance(schedule.get(k), float)
                     else f"{names.get(k, k)} {schedule.get(k)}" for k in keys)


def _curves(runs: Sequence[RunData], scores: dict[str, Any]) -> dict[str, Any]:
    """Test F1 against training posts. A curve joins runs of one configuration, test set AND schedule:
    runs of one configuration trained with different schedules are drawn as separate curves, with a warning."""
    points = []
    for r in runs:
        m = r.metrics
        points.append({"label": r.label, "config": f"{m.get('model')} / {m.get('encoder')} / {m.get('visual_source')}",
                       "dataset": m.get("dataset"), "seed": m.get("seed"), "train_posts": r.n_train,
                       "train_fraction": float(m.get("train_fraction", r.data.train_fraction)),
                       "schedule": r.schedule, "epochs": m.get("epochs"), "f1": scores["runs"][r.label]["f1"]})
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)  # configuration and test set
    for p in points:
        groups[(p["config"], p["dataset"])].append(p)
    curves, warnings = [], []
    for (config, dataset), members in groups.items():
        schedules: list[dict[str, Any] | None] = []
        for p in members:
            if p["schedule"] not in schedules:
                schedules.append(p["schedule"])
        differ = sorted({k for a in schedules for b in schedules if a and b for k in a if a.get(k) != b.get(k)})
        for sched in schedules:
            runs_of = [p for p in members if p["schedule"] == sched]
            name = f"{config} ({dataset})"
            if len(schedules) > 1:
                name += f", {schedule_text(sched, differ) if differ else 'schedule unknown'}"
            for p in runs_of:
                p["curve"] = name
            curves.append({"name": name, "runs": [p["label"] for p in runs_of],
                           "sizes": sorted({p["train_posts"] for p in runs_of if p["train_posts"] is not None})})
        if len(schedules) > 1:
            parts = "; ".join(f"{', '.join(p['label'] for p in members if p['schedule'] == sched)}: "
                              f"{schedule_text(sched, differ) if differ else 'schedule unknown'}" for sched in schedules)
            warnings.append(f"{config} on {dataset} was trained with different schedules ({parts}): "
                            "not joined into one curve (a point of a shorter schedule is not the same model on less "
                            "data); drawn as separate curves")
    plotted = any(len(c["sizes"]) > 1 for c in curves)
    note = None if plotted else ("no configuration among the runs given was trained on more than one training-set size "
                                 "with the same schedule: train it with data.train_fraction < 1 (e.g. 0.1, 0.25, 0.5) "
                                 "and pass those runs too")
    return {"points": points, "curves": curves, "plotted": plotted, "note": note, "warnings": warnings}


def _relation(runs: Sequence[RunData]) -> dict[str, Any]:
    out: dict[str, Any] = {"threshold": RELATION_THRESHOLD, "file": f"predictions/test{RELATION_SUFFIX}",
                           "runs": {}, "notes": {}}
    for r in runs:
        if r.relation is None:
            out["runs"][r.label] = None
            out["notes"][r.label] = f"{r.label}'s model gives no relation score (no predictions/test{RELATION_SUFFIX})"
            continue
        index = {p.id: i for i, p in enumerate(r.posts)}
        scored = [(index[pid], s) for pid, s in r.relation.items() if pid in index]
        adds = [i for i, s in scored if s > RELATION_THRESHOLD]
        not_adds = [i for i, s in scored if s <= RELATION_THRESHOLD]
        values = np.array([s for _, s in scored])
        hist, _ = np.histogram(values, bins=10, range=(0.0, 1.0))
        row: dict[str, Any] = {
            **slices.subset_scores(r.items, {"image_adds": adds, "image_does_not_add": not_adds}),
            "posts_scored": len(scored), "posts_unscored": len(r.posts) - len(scored),
            "unknown_ids": len(r.relation) - len(scored),
            "mean_r": round(float(values.mean()), 4) if len(values) else None,
            "histogram": {"bins": [round(x / 10, 1) for x in range(11)], "posts": hist.tolist()},
        }
        if r.attention:
            stv = {index[pid]: sum(m["attention"]) for pid, m in r.attention.items() if pid in index}
            pairs = [(s, stv[i]) for i, s in scored if i in stv]
            row["s_tv"] = {
                "image_adds_mean": _mean([t for s, t in pairs if s > RELATION_THRESHOLD]),
                "image_does_not_add_mean": _mean([t for s, t in pairs if s <= RELATION_THRESHOLD]),
                "posts": len(pairs),
            }
        trc = r.metrics.get("trc")
        if isinstance(trc, dict) and trc.get("rows"):
            row["trc"] = trc  # Task#1 on the TRC test rows (metrics.json), with its confusion counts
        out["runs"][r.label] = row
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return round(float(np.mean(xs)), 4) if xs else None


def _error_posts(runs: Sequence[RunData], top: int) -> dict[str, Any]:
    """The posts with the most errors summed over the runs that share the first run's test set."""
    group = [r for r in runs if r.test_key == runs[0].test_key]
    left_out = [r.label for r in runs if r not in group]
    base = group[0]
    totals = [sum(r.items[i].errors for r in group) for i in range(len(base.items))]
    order = sorted((i for i, t in enumerate(totals) if t > 0), key=lambda i: (-totals[i], i))[:top]
    rows = []
    for i in order:
        post = base.items[i]
        rows.append({
            "id": post.id, "index": i, "tokens": post.tokens, "errors": totals[i],
            "gold": [_entity_record(post.tokens, e) for e in sorted(post.gold, key=lambda e: e[1])],
            "pred": {r.label: [{**_entity_record(post.tokens, e), "correct": e in r.items[i].gold}
                               for e in sorted(r.items[i].pred, key=lambda e: e[1])] for r in group},
            "errors_per_run": {r.label: r.items[i].errors for r in group},
        })
    return {"runs": [r.label for r in group], "left_out": left_out, "posts_with_errors": sum(t > 0 for t in totals),
            "shown": len(rows), "posts": rows}


def _entity_record(tokens: Sequence[str], e: tuple[str, int, int]) -> dict[str, Any]:
    return {"text": " ".join(tokens[e[1]:e[2]]), "type": e[0], "start": e[1], "end": e[2]}


def caption_words(labels: Sequence[str], weights: Sequence[float]) -> tuple[list[str], list[float]]:
    """Caption tokens as words: sub-word pieces are joined and their weights summed (WordPiece "bas",
    "##ket", "##ball"; SentencePiece / byte-level BPE pieces without the word-start mark "▁" / "Ġ")."""
    marked = any(str(x).startswith(("▁", "Ġ")) for x in labels) and not any(str(x).startswith("##") for x in labels)
    words: list[str] = []
    sums: list[float] = []
    for label, w in zip(map(str, labels), weights):
        if marked:
            cont, text = bool(words) and not label.startswith(("▁", "Ġ")), label.lstrip("▁Ġ")
        else:
            cont = bool(words) and label.startswith("##") and len(label) > 2
            text = label[2:] if cont else label
        if cont:
            words[-1] += text
            sums[-1] += float(w)
        else:
            words.append(text)
            sums.append(float(w))
    return words, sums


def _attention(runs: Sequence[RunData], errors: dict[str, Any]) -> dict[str, Any]:
    worst = [p["id"] for p in errors["posts"]]
    out: dict[str, Any] = {"file": f"predictions/test{ATTENTION_SUFFIX}", "max_posts": HEAT_MAPS,
                           "max_panels": MAX_PANELS, "runs": {}, "notes": {}}
    for r in runs:
        if not r.attention:
            out["runs"][r.label] = None
            out["notes"][r.label] = (f"{r.label}'s model ({r.metrics.get('model')}) gives no attention maps "
                                     f"(no predictions/test{ATTENTION_SUFFIX})")
            continue
        posts = {p.id: p for p in r.posts}
        ids = [pid for pid in worst if pid in r.attention and pid in posts] if r.label in errors["runs"] else []
        ids += [p.id for p in r.posts if p.id in r.attention and p.id not in ids]
        test = [r.attention[pid] for pid in ids]
        entities = [x for m in test for x in m["entities"]]
        panels: list[dict[str, Any]] = []
        shown: list[str] = []
        left_out = 0
        for pid in ids[:HEAT_MAPS]:
            group = _panels(r, posts[pid])
            room = MAX_PANELS - len(panels)
            if len(group) > room:
                if panels:
                    break  # a post's entities stay with it: the next post does not fit
                left_out, group = len(group) - room, group[:room]
            panels += group
            shown.append(pid)
        images = {}
        for pid in shown:
            path = posts[pid].image_path
            if r.attention[pid]["grid"] and path and Path(path).is_file():
                images[pid] = path
        heads = []
        for pid in shown:  # what each shown post's maps are titled with: its text and caption
            m = r.attention[pid]
            regions = m.get("regions")
            heads.append({"id": pid, "text": " ".join(posts[pid].tokens),
                          "caption": " ".join(caption_words(regions, m["attention"])[0]) if regions else None,
                          "grid": m.get("grid"), "relation_score": (r.relation or {}).get(pid)})
        out["runs"][r.label] = {
            "posts": len(r.attention), "test_posts": len(test), "s_tv_mean": _mean([sum(m["attention"]) for m in test]),
            "entity_maps": len(entities), "entity_s_tv_mean": _mean([sum(x["attention"]) for x in entities]),
            "shown": shown, "shown_posts": heads, "panels": panels, "entities_left_out": left_out, "images": images,
        }
    return out


def _panels(r: RunData, post: Post) -> list[dict[str, Any]]:
    """The heat-map panels of one post: its post-level map, then one per predicted entity (by position)."""
    m = r.attention[post.id]  # type: ignore[index]
    rel = f" r={r.relation[post.id]:.2f}" if r.relation and post.id in r.relation else ""
    out: list[dict[str, Any]] = [{"id": post.id, "title": f"{post.id}{rel}", "label": "whole post", "entity": None,
                                  "s_tv": round(sum(m["attention"]), 4)}]
    for k, x in sorted(enumerate(m["entities"]), key=lambda kx: (kx[1]["start"], kx[1]["end"], kx[0])):
        text = x["text"] if x["text"] is not None else " ".join(post.tokens[x["start"]:x["end"]])
        short = text if len(text) <= TITLE_TEXT else text[:TITLE_TEXT - 1] + "…"
        out.append({"id": post.id, "title": f"{post.id} · {short} ({x['type']})", "label": f"{short} ({x['type']})",
                    "entity": {"index": k, "start": x["start"], "end": x["end"], "type": x["type"], "text": text},
                    "s_tv": round(sum(x["attention"]), 4)})
    return out


def analyse(runs: Sequence[RunData], resamples: int = 1000, seed: int = 0, top_errors: int = 30) -> dict[str, Any]:
    """Every number of the report, as a JSON-ready dict."""
    boot: dict[tuple, Bootstrap] = {}
    for r in runs:
        if r.test_key not in boot:
            boot[r.test_key] = Bootstrap(len(r.posts), resamples=resamples, seed=seed)
    scores = _scores(runs, boot)
    errors = _error_posts(runs, top_errors)
    return {
        "generated_by": f"mmner report {__version__}",
        "runs": [r.identity() for r in runs],
        "scores": scores,
        "entity_slices": _entity_slices(runs),
        "length": _length(runs),
        "curves": _curves(runs, scores),
        "relation": _relation(runs),
        "attention": _attention(runs, errors),
        "errors": errors,
    }


# --------------------------------------------------------------------------------------------------
# page

e = html.escape


def _runs_legend(runs: Sequence[RunData]) -> str:
    """The runs, once, at the top of the page: every table and plot names them by label (R1, R2, ...)."""
    rows = []
    for r in runs:
        m = r.metrics
        fraction = float(m.get("train_fraction", r.data.train_fraction))
        train = f"{r.n_train}" + (f" ({fraction:g})" if fraction < 1 else "") if r.n_train is not None else "?"
        rows.append([("html", f"<b>{e(r.label)}</b>"), r.name, m.get("model"), m.get("encoder"), m.get("visual_source"),
                     m.get("seed"), f"{m.get('dataset')} ({m.get('variant')})", train, schedule_text(r.schedule)])
    return '<div class="runs">' + _table(["", "run", "model", "encoder", "visual", "seed", "test set",
                                           "train posts (fraction)", "schedule"], rows, left=9) + "</div>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, attrs: Sequence[str] = ()) -> str:
    """An HTML table; cells are escaped unless given as ("html", markup); `attrs[j]` goes into row j's <tr>."""
    def cell(tag: str, v: Any, i: int) -> str:
        cls = ' class="l"' if i < left else ""
        text = v[1] if isinstance(v, tuple) and v and v[0] == "html" else e("" if v is None else str(v))
        return f"<{tag}{cls}>{text}</{tag}>"

    head = "<tr>" + "".join(cell("th", h, i) for i, h in enumerate(header)) + "</tr>"
    body = "".join(f"<tr{attrs[j] if j < len(attrs) else ''}>" + "".join(cell("td", v, i) for i, v in enumerate(row))
                   + "</tr>" for j, row in enumerate(rows))
    return f"<table>{head}{body}</table>"


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" alt="{e(alt)}" src="{uri}">'


def _pair(left: str, right: str) -> str:
    """Two blocks side by side (a table and its plot), wrapping on a narrow window."""
    return f'<div class="pair"><div>{left}</div><div>{right}</div></div>'


def p_text(p: float, resamples: int) -> str:
    """A bootstrap p-value as printed: at the resampling floor 1 / (B + 1), where no resample was as
    extreme as the observed difference, the p-value is only bounded ("p < 0.001" for B = 1000), never
    printed as if it had been measured; below 0.001 likewise."""
    floor = 1.0 / (resamples + 1)
    if p <= round(floor, 4) + 1e-9:  # p-values are stored rounded to 4 decimals
        return f"p &lt; {max(0.001, math.ceil(floor * 1000 - 1e-9) / 1000):.3f}"
    if p < 0.001:
        return "p &lt; 0.001"
    return f"p = {p:.3f}"


def _delta(d: dict[str, Any] | None, resamples: int) -> tuple[str, str]:
    if not d:
        return ("html", "")
    sign = "pos" if d["delta"] > 0 else "neg" if d["delta"] < 0 else ""
    sig = " sig" if d["p_value"] < 0.05 else ""
    text = (f'<span class="{sign}{sig}">{d["delta"]:+.2f}</span> '
            f'[{d["ci_low"]:+.2f}, {d["ci_high"]:+.2f}] {p_text(d["p_value"], resamples)}')
    return ("html", text)


def _section_scores(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["scores"]
    labels = [r.label for r in runs]
    shared = all(r.test_key == runs[0].test_key for r in runs)
    header = ["type", "gold" if shared else f"gold ({labels[0]})"] + [f"{lab} {m}" for lab in labels for m in ("P", "R", "F1")]
    paired = [d for d in s["differences"] if d["paired"]]
    b = s["bootstrap"]
    diff_header = ["type"] + [f"Δ F1 {d['run']}−{d['baseline']} [95% CI] p" for d in paired]
    rows, diff_rows, attrs = [], [], []
    base = s["runs"][labels[0]]
    for t in s["types"]:
        row: list[Any] = [t, base["per_type"].get(t, {}).get("support", 0)]
        for lab in labels:
            pt = s["runs"][lab]["per_type"].get(t, {"precision": 0.0, "recall": 0.0, "f1": 0.0})
            row += [f"{pt['precision']:.2f}", f"{pt['recall']:.2f}", f"{pt['f1']:.2f}"]
        rows.append(row)
        diff_rows.append([t] + [_delta(d["per_type"].get(t), b["resamples"]) for d in paired])
        attrs.append("")
    row = ["overall", base["gold_entities"]]
    for lab in labels:
        o = s["runs"][lab]
        row += [f"{o['precision']:.2f}", f"{o['recall']:.2f}", f"{o['f1']:.2f}"]
    rows.append(row)
    diff_rows.append(["overall"] + [_delta(d["overall"], b["resamples"]) for d in paired])
    attrs.append(' class="total"')
    ci = ", ".join(f"{lab} {s['runs'][lab]['f1']:.2f} [{s['runs'][lab]['f1_ci'][0]:.2f}, "
                   f"{s['runs'][lab]['f1_ci'][1]:.2f}]" for lab in labels)
    notes = [(f"Scoring mode: {e(base['mode'])}; gold = gold entities of each type in the test set. "
              f"95% intervals of each run's F1: {e(ci)}.")]
    if s["differences"]:
        floor = 1.0 / (b["resamples"] + 1)
        notes.append(f"Test: {e(b['test'])}; {b['resamples']} resamples of the {len(runs[0].posts)} test posts, "
                     f"seed {b['seed']}. Bold: p &lt; 0.05. With {b['resamples']} resamples no p-value below "
                     f"1/{b['resamples'] + 1} = {floor:.4f} can be measured: a difference that no resample reached "
                     f"is shown as {p_text(floor, b['resamples'])}.")
    notes += [e(d["note"]) for d in s["differences"] if not d["paired"]]
    mismatch = [lab for lab in labels if s["runs"][lab]["metrics_json_f1"] not in (None, s["runs"][lab]["f1"])]
    if mismatch:
        notes.append(e(f"F1 recomputed from predictions/test.conll differs from metrics.json for {', '.join(mismatch)} "
                       "(was the test data changed since training?)"))
    series = {lab: [s["runs"][lab]["per_type"].get(t, {}).get("f1", 0.0) for t in s["types"]] + [s["runs"][lab]["f1"]]
              for lab in labels}
    plot = plots.grouped_bars(s["types"] + ["overall"], series, "F1 (%)", "F1 per entity type")
    tables = _table(header, rows, attrs=attrs)
    if paired:  # differences to the first run in a table of their own, so that many runs stay readable
        tables += f"<h3>Differences to {e(labels[0])}</h3>" + _table(diff_header, diff_rows, attrs=attrs)
    return _pair(tables, _img(plot, "F1 per type")) + "".join(f"<p>{n}</p>" for n in notes)


def _section_entities(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["entity_slices"]
    parts = [f"<p>{e(s['definition'])}</p>"]
    good = [r.label for r in runs if s["runs"][r.label]]
    header = ["slice"] + [f"{lab} {m}" for lab in good for m in ("gold", "pred", "P", "R", "F1")]
    rows = []
    for name in s["slices"]:
        row: list[Any] = [name]
        for lab in good:
            v = s["runs"][lab][name]
            row += [v["gold"], v["pred"], f"{v['precision']:.2f}", f"{v['recall']:.2f}", f"{v['f1']:.2f}"]
        rows.append(row)
    if good:
        series = {lab: [s["runs"][lab][n]["f1"] for n in s["slices"]] for lab in good}
        table = _table(header, rows) + ("<p>Training posts the slices are drawn against: "
                                        + e(", ".join(f"{lab}: {s['runs'][lab]['train_posts']}" for lab in good)) + ".</p>")
        parts.append(_pair(table, _img(plots.grouped_bars(s["slices"], series, "F1 (%)", "F1 per entity slice"),
                                       "entity slices")))
    parts += [f'<p class="note">{e(n)}</p>' for n in s["notes"].values()]
    return "".join(parts)


def _section_length(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["length"]
    labels = [r.label for r in runs]
    header = ["tokens", "posts", "gold"] + [f"{lab} F1" for lab in labels]
    first = s["runs"][labels[0]]
    rows = [[b, first[b]["posts"], first[b]["gold"]] + [f"{s['runs'][lab][b]['f1']:.2f}" for lab in labels]
            for b in s["buckets"]]
    series = {lab: [s["runs"][lab][b]["f1"] if s["runs"][lab][b]["posts"] else None for b in s["buckets"]]
              for lab in labels}
    groups = [f"{b}\n(n={first[b]['posts']})" for b in s["buckets"]]
    return ("<p>F1 of the posts whose length in tokens falls in each bucket (posts and gold entities of the first "
            "run's test set).</p>"
            + _pair(_table(header, rows),
                    _img(plots.grouped_bars(groups, series, "F1 (%)", "F1 by post length", "post length (tokens)"),
                         "length")))


def _section_curves(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["curves"]
    rows = [[p["label"], p["config"], p["dataset"], p["seed"], schedule_text(p["schedule"]), p["train_fraction"],
             p["train_posts"], f"{p['f1']:.2f}"] for p in s["points"]]
    parts = [f'<p class="warn">Warning: {e(w)}.</p>' for w in s.get("warnings", [])]
    table = _table(["run", "model / encoder / visual", "test set", "seed", "schedule", "train fraction", "train posts",
                    "test F1"], rows, left=5)
    if s["plotted"]:
        curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for p in s["points"]:
            if p["train_posts"] is not None:
                curves[p.get("curve") or f"{p['config']} ({p['dataset']})"].append((p["train_posts"], p["f1"]))
        parts.append(_pair(table, _img(plots.learning_curves(dict(curves)), "learning curve")))
    else:
        parts += [table, f'<p class="note">{e(s["note"])}</p>']
    return "".join(parts)


def _section_relation(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["relation"]
    good = [r for r in runs if s["runs"][r.label]]
    parts = [(f"<p>Posts are split by the run's relation score r (file {e(s['file'])}): r &gt; {s['threshold']} "
              "“image adds”, otherwise “image doesn't add” (RpBERT, Table 6); F1 on each part.</p>")]
    if good:
        rows = []
        for r in good:
            v = s["runs"][r.label]
            for part in ("image_adds", "image_does_not_add"):
                rows.append([r.label, part.replace("_", " "), v[part]["posts"], v[part]["gold"],
                             f"{v[part]['precision']:.2f}", f"{v[part]['recall']:.2f}", f"{v[part]['f1']:.2f}",
                             v["mean_r"], (v.get("s_tv") or {}).get(f"{part}_mean")])
        table = _table(["run", "posts", "n", "gold", "P", "R", "F1", "mean r", "mean S_TV"], rows, left=2)
        unscored = [f"{r.label}: {s['runs'][r.label]['posts_unscored']}" for r in good if s["runs"][r.label]["posts_unscored"]]
        if unscored:
            table += f'<p class="note">Test posts without a relation score: {e(", ".join(unscored))}.</p>'
        figures = _img(plots.relation_histogram({r.label: list(r.relation.values()) for r in good}), "relation scores")  # type: ignore[union-attr]
        with_att = {r.label: r for r in good if r.attention}
        if with_att:
            pts = {}
            for lab, r in with_att.items():
                ids = [pid for pid in r.relation if pid in r.attention]  # type: ignore[union-attr, operator]
                pts[lab] = ([r.relation[i] for i in ids], [sum(r.attention[i]["attention"]) for i in ids])  # type: ignore[index]
            figures += _img(plots.relation_vs_stv(pts), "r against S_TV")
        parts.append(_pair(table, figures))
        with_trc = [r for r in good if s["runs"][r.label].get("trc")]
        if with_trc:
            parts.append("<p>Text-image relation classification (Task#1) on the TRC test rows, where gold "
                         "“image adds” labels exist; predicted “image adds” when r &gt; 0.5 (rows: gold, columns: "
                         "predicted).</p>")
            rows = []
            for r in with_trc:
                t = s["runs"][r.label]["trc"]
                c = t["confusion"]
                rows += [[r.label, "gold: image adds", c["tp"], c["fn"], t["rows"], f"{t['accuracy']:.2f}",
                          f"{t['precision']:.2f}", f"{t['recall']:.2f}", f"{t['f1']:.2f}"],
                         [r.label, "gold: image doesn't add", c["fp"], c["tn"], "", "", "", "", ""]]
            parts.append(_table(["run", "", "pred: adds", "pred: doesn't add", "rows", "accuracy", "P (adds)",
                                 "R (adds)", "F1 (adds)"], rows, left=2))
    parts += [f'<p class="note">{e(n)}; section skipped for it.</p>' for n in s["notes"].values()]
    return "".join(parts)


def _colour_legend() -> str:
    """The attention colour scale, once for the section: 0 to the largest weight of each map."""
    stops = ", ".join(plots.ramp_css())
    return ('<div class="legend"><span>colour: attention weight, from 0</span>'
            f'<span class="ramp" style="background: linear-gradient(90deg, {stops})"></span>'
            "<span>to the largest weight of the map (each map has its own scale: the bar charts' axis, "
            "or “max” in a heat map's title, gives its numbers)</span></div>")


def _section_attention(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["attention"]
    good = [r for r in runs if s["runs"][r.label]]
    kinds = {"grid" if r.attention[pid]["grid"] else "caption"  # type: ignore[index]
             for r in good for pid in s["runs"][r.label]["shown"]}
    drawn = []
    if "caption" in kinds:
        drawn.append("a caption input as a bar chart, one bar per caption word (word pieces joined, their weights "
                     "summed), its length the attention a<sub>j</sub> that the post's words (or the entity's words) "
                     "give to that word")
    if "grid" in kinds:
        drawn.append("an image grid as a heat map of a<sub>j</sub> over the grid regions, over the post's image when "
                     "it is at hand")
    parts = [(f"<p>Where each model looks (RpBERT eq. 11; from {e(s['file'])}), for the posts with the most errors first: "
              f"each post's map, then one map per entity the model predicted in it (attention from the entity's "
              f"words), at most {s['max_posts']} posts and {s['max_panels']} maps per run. Each post is titled with "
              "its text (predicted entities marked: green correct, red wrong) and the caption the model read. "
              + ("Each map shows " + "; ".join(drawn) + ". " if drawn else "")
              + "S_TV is a map's summed attention (RpBERT eq. 10).</p>")]
    if good:
        parts.append(_colour_legend())
    error_ids = {p["id"] for p in data["errors"]["posts"]}
    for r in good:
        v = s["runs"][r.label]
        notes = []
        images = {}
        for pid, path in v["images"].items():
            try:
                images[pid] = load_image(path, max_side=IMAGE_SIDE)
            except MmnerError as exc:
                notes.append(f"{exc}: {pid}'s maps are drawn without it")
        linked = error_ids if r.label in data["errors"]["runs"] else set()
        index = {p.id: i for i, p in enumerate(r.posts)}
        blocks = []
        for head in v["shown_posts"]:
            pid = head["id"]
            m = r.attention[pid]  # type: ignore[index]
            maps = []
            for panel in (p for p in v["panels"] if p["id"] == pid):
                weights = m["entities"][panel["entity"]["index"]]["attention"] if panel["entity"] else m["attention"]
                regions = m["regions"]
                if regions and not m["grid"]:
                    regions, weights = caption_words(regions, weights)
                maps.append({"attention": weights, "grid": m["grid"], "regions": regions, "title": panel["label"],
                             "image": images.get(pid)})
            item = r.items[index[pid]]
            pred = [{**_entity_record(item.tokens, x), "correct": x in item.gold}
                    for x in sorted(item.pred, key=lambda x: x[1])]
            rel = (f' · r = {head["relation_score"]:.2f}' if head["relation_score"] is not None else "")
            caption = (f'<div class="caption">caption read: “{e(head["caption"])}”</div>' if head["caption"]
                       else '<div class="caption">image grid regions</div>' if head["grid"] else "")
            blocks.append(f'<div class="maps"><div class="maps-head"><b>{_link(pid, linked)}</b>{rel}: '
                          f'<span class="post">{_spans(item.tokens, pred, "pred")}</span>{caption}</div>'
                          + _img(plots.heat_maps(maps, cols=5), f"attention of {r.label}: {pid}")  # one panel size
                          + "</div>")
        summary = (f"{v['posts']} posts have maps; {len(v['shown'])} shown, {len(v['panels'])} maps")
        parts.append(f"<h3>{e(r.label)} · {e(str(r.metrics.get('model')))}</h3><p>{e(summary)}.")
        if v["entity_maps"]:
            parts.append(f" {v['entity_maps']} predicted entities of the {v['test_posts']} test posts with maps have "
                         f"their own map; mean S_TV per entity {v['entity_s_tv_mean']}, per post {v['s_tv_mean']}.")
        else:
            notes.append(f"{r.label}'s attention file has no per-entity maps (no \"entities\" in its records); "
                         f"mean S_TV per post {v['s_tv_mean']}")
        parts.append("</p>")
        if v["entities_left_out"]:
            notes.append(f"{v['entities_left_out']} more entity maps of {v['shown'][0]} are not drawn "
                         f"(at most {s['max_panels']} maps per run)")
        parts += blocks
        rows = [[("html", _link(p["id"], linked)), p["title"], f"{p['s_tv']:.4f}"] for p in v["panels"]]
        parts.append(f"<details><summary>S_TV of every map of {e(r.label)}</summary>"
                     + _table(["post", "map", "S_TV"], rows, left=2) + "</details>")
        parts += [f'<p class="note">{e(n)}.</p>' for n in notes]
    parts += [f'<p class="note">{e(n)}.</p>' for n in s["notes"].values()]
    return "".join(parts)


def _link(pid: str, linked: set[str]) -> str:
    """A post id, linked to its row of the errors table when it has one."""
    return f'<a href="#post-{e(pid)}">{e(pid)}</a>' if pid in linked else e(pid)


def _spans(tokens: Sequence[str], ents: Sequence[dict[str, Any]], kind: str) -> str:
    """The post's text with entities marked: gold in blue, predictions green (correct) or red."""
    starts = {x["start"]: x for x in ents}
    out, i = [], 0
    while i < len(tokens):
        x = starts.get(i)
        if x is None:
            out.append(e(tokens[i]))
            i += 1
            continue
        cls = "gold" if kind == "gold" else ("ok" if x["correct"] else "bad")
        out.append(f'<span class="ent {cls}">{e(x["text"])}<sub>{e(x["type"])}</sub></span>')
        i = max(x["end"], i + 1)
    return " ".join(out)


ERRORS_OPEN = 10  # rows of the errors table shown before "more posts"


def _section_errors(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["errors"]
    parts = [(f"<p>{s['shown']} of the {s['posts_with_errors']} test posts with at least one error, most errors first "
              "(missed gold entities plus wrong predictions, summed over the runs). Gold entities in blue; predictions in "
              "green when correct, red when not. Each row is linkable: <code>#post-&lt;id&gt;</code>.</p>")]
    if s["left_out"]:
        parts.append(f'<p class="note">Not in this table (other test set than {e(s["runs"][0])}): '
                     f'{e(", ".join(s["left_out"]))}.</p>')
    header = ["post", "errors", "gold"] + [f"{lab} prediction" for lab in s["runs"]]
    rows = []
    for p in s["posts"]:
        row: list[Any] = [("html", f'<a href="#post-{e(p["id"])}">{e(p["id"])}</a>'), p["errors"],
                          ("html", _spans(p["tokens"], p["gold"], "gold"))]
        row += [("html", _spans(p["tokens"], p["pred"][lab], "pred")) for lab in s["runs"]]
        rows.append(row)
    attrs = [f' id="post-{e(p["id"])}"' for p in s["posts"]]
    parts.append(_table(header, rows[:ERRORS_OPEN], left=len(header), attrs=attrs[:ERRORS_OPEN]))
    if len(rows) > ERRORS_OPEN:
        parts.append(f"<details><summary>{len(rows) - ERRORS_OPEN} more posts</summary>"
                     + _table(header, rows[ERRORS_OPEN:], left=len(header), attrs=attrs[ERRORS_OPEN:]) + "</details>")
    return "".join(parts)


def _gists(runs: Sequence[RunData], data: dict[str, Any]) -> dict[str, str]:
    """One line per section, beside its title: what a reader scanning the page should see first."""
    labels = [r.label for r in runs]
    s = data["scores"]
    b = s["bootstrap"]
    f1 = ", ".join(f"{lab} {s['runs'][lab]['f1']:.2f}" for lab in labels)
    diffs = [f"{d['run']} {d['overall']['delta']:+.2f} ({p_text(d['overall']['p_value'], b['resamples'])})"
             for d in s["differences"] if d["paired"]]
    out = {"scores": f"F1 {e(f1)}" + (f"; Δ to {e(labels[0])}: {', '.join(diffs)}" if diffs else "")}
    ent = data["entity_slices"]
    good = [lab for lab in labels if ent["runs"][lab]]
    out["entities"] = ("unseen-entity F1 " + e(", ".join(f"{lab} {ent['runs'][lab]['unseen']['f1']:.2f}" for lab in good))
                       if good else "training data not readable here")
    length = data["length"]
    longest = length["buckets"][-1]
    out["length"] = (f"F1 on posts of {e(longest)} tokens: "
                     + e(", ".join(f"{lab} {length['runs'][lab][longest]['f1']:.2f}" for lab in labels)))
    c = data["curves"]
    out["curves"] = ((f"{sum(len(x['sizes']) > 1 for x in c['curves'])} curve(s)" if c["plotted"] else "not plotted: "
                      "one training-set size per configuration")
                     + (f"; <span class=\"warn\">{len(c['warnings'])} warning(s)</span>" if c.get("warnings") else ""))
    rel = [lab for lab in labels if data["relation"]["runs"][lab]]
    out["relation"] = (e(", ".join(f"{lab}: {data['relation']['runs'][lab]['image_adds']['posts']} of "
                                   f"{data['relation']['runs'][lab]['posts_scored']} posts “image adds”" for lab in rel))
                       if rel else "no run gives a relation score")
    att = [lab for lab in labels if data["attention"]["runs"][lab]]
    out["attention"] = (e(", ".join(f"{lab}: {len(data['attention']['runs'][lab]['panels'])} maps of "
                                    f"{len(data['attention']['runs'][lab]['shown'])} posts" for lab in att))
                        if att else "no run gives attention maps")
    out["errors"] = f"{data['errors']['shown']} of {data['errors']['posts_with_errors']} posts with errors"
    return out


# Sections open when the page opens; the long ones open with a click on their title.
OPEN_SECTIONS = ("scores", "entities", "length", "curves", "relation")


def render(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    """The HTML page for `analyse`'s numbers: one self-contained file (inline CSS, base64 PNG plots).
    The runs are described once at the top; each section is a collapsible block whose title line carries
    its gist, so the page can be scanned closed and read open."""
    builders = {
        "scores": _section_scores, "entities": _section_entities, "length": _section_length,
        "curves": _section_curves, "relation": _section_relation, "attention": _section_attention,
        "errors": _section_errors,
    }
    gists = _gists(runs, data)
    nav = "<nav>" + "".join(f'<a href="#{key}">{e(title)}</a>' for key, title in SECTIONS.items()) + "</nav>"
    intro = ("Runs, in the order given; every table and plot below names them by label, and differences are to R1."
             if len(runs) > 1 else "The run analysed:")
    body = [nav, f'<p class="intro">{intro} Click a section\'s title to open or close it.</p>', _runs_legend(runs)]
    for key, title in SECTIONS.items():
        state = " open" if key in OPEN_SECTIONS else ""
        body.append(f'<section id="{key}"><details{state}><summary><h2>{e(title)}</h2>'
                    f'<span class="gist">{gists[key]}</span></summary>{builders[key](runs, data)}</details></section>')
    body.append(f'<p class="note">{e(data["generated_by"])}; every number is also in the JSON file next to this page.</p>')
    title = "mmner report: " + ", ".join(r.name for r in runs)
    return PAGE.substitute(title=e(title), body="\n".join(body))


def write_report(run_dirs: Sequence[str | Path], output: str | Path, resamples: int = 1000, seed: int = 0,
                 top_errors: int = 30, data_dir: str | None = None) -> tuple[Path, Path]:
    """Analyse the runs and write `output` (HTML) and the same stem with `.json`; returns both paths."""
    if not run_dirs:
        raise MmnerError("give at least one run directory")
    output = Path(output)
    if output.suffix.lower() == ".json":
        raise MmnerError(f"{output}: the report is HTML (its numbers go to {output.with_suffix('.json').name} "
                         "next to it); name the output .html")
    if resamples < 1:
        raise MmnerError(f"--resamples must be at least 1, got {resamples}")
    runs = [load(d, f"R{i}", data_dir) for i, d in enumerate(run_dirs, 1)]
    data = analyse(runs, resamples=resamples, seed=seed, top_errors=top_errors)
    page = render(runs, data)
    json_path = output.with_suffix(".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    json_path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return output, json_path
