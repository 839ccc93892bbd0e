"""`mmner report`: analyse one or more finished runs on their test sets, as HTML plus JSON.

`analyse` computes every number (the JSON file holds exactly what the page shows); `render` draws
the page from those numbers. Sections: overall and per type (with paired bootstrap differences to
the first run), seen / unseen / ambiguous entities, post length, low-resource curves, relation
split, attention maps (per post and per predicted entity), and the posts with the most errors.
"""

from __future__ import annotations

import html
import json
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


def _curves(runs: Sequence[RunData], scores: dict[str, Any]) -> dict[str, Any]:
    points = []
    for r in runs:
        m = r.metrics
        points.append({"label": r.label, "config": f"{m.get('model')} / {m.get('encoder')} / {m.get('visual_source')}",
                       "dataset": m.get("dataset"), "seed": m.get("seed"), "train_posts": r.n_train,
                       "train_fraction": float(m.get("train_fraction", r.data.train_fraction)),
                       "f1": scores["runs"][r.label]["f1"]})
    sizes: dict[tuple, set[int]] = defaultdict(set)  # one curve per configuration and test set
    for p in points:
        if p["train_posts"] is not None:
            sizes[(p["config"], p["dataset"])].add(p["train_posts"])
    plotted = any(len(v) > 1 for v in sizes.values())
    note = None if plotted else ("no configuration among the runs given was trained on more than one training-set size: "
                                 "train it with data.train_fraction < 1 (e.g. 0.1, 0.25, 0.5) and pass those runs too")
    return {"points": points, "plotted": plotted, "note": note}


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
        out["runs"][r.label] = {
            "posts": len(r.attention), "test_posts": len(test), "s_tv_mean": _mean([sum(m["attention"]) for m in test]),
            "entity_maps": len(entities), "entity_s_tv_mean": _mean([sum(x["attention"]) for x in entities]),
            "shown": shown, "panels": panels, "entities_left_out": left_out, "images": images,
        }
    return out


def _panels(r: RunData, post: Post) -> list[dict[str, Any]]:
    """The heat-map panels of one post: its post-level map, then one per predicted entity (by position)."""
    m = r.attention[post.id]  # type: ignore[index]
    rel = f" r={r.relation[post.id]:.2f}" if r.relation and post.id in r.relation else ""
    out: list[dict[str, Any]] = [{"id": post.id, "title": f"{post.id}{rel}", "entity": None,
                                  "s_tv": round(sum(m["attention"]), 4)}]
    for k, x in sorted(enumerate(m["entities"]), key=lambda kx: (kx[1]["start"], kx[1]["end"], kx[0])):
        text = x["text"] if x["text"] is not None else " ".join(post.tokens[x["start"]:x["end"]])
        short = text if len(text) <= TITLE_TEXT else text[:TITLE_TEXT - 1] + "…"
        out.append({"id": post.id, "title": f"{post.id} · {short} ({x['type']})",
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


def _runs_caption(runs: Sequence[RunData]) -> str:
    return '<div class="runs">' + "<br>".join(e(r.describe()) for r in runs) + "</div>"


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


def _delta(d: dict[str, Any] | None) -> tuple[str, str]:
    if not d:
        return ("html", "")
    sign = "pos" if d["delta"] > 0 else "neg" if d["delta"] < 0 else ""
    sig = " sig" if d["p_value"] < 0.05 else ""
    text = (f'<span class="{sign}{sig}">{d["delta"]:+.2f}</span> '
            f'[{d["ci_low"]:+.2f}, {d["ci_high"]:+.2f}] p={d["p_value"]:.3f}')
    return ("html", text)


def _section_scores(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["scores"]
    labels = [r.label for r in runs]
    shared = all(r.test_key == runs[0].test_key for r in runs)
    header = ["type", "gold" if shared else f"gold ({labels[0]})"] + [f"{lab} {m}" for lab in labels for m in ("P", "R", "F1")]
    paired = [d for d in s["differences"] if d["paired"]]
    diff_header = ["type"] + [f"Δ F1 {d['run']}−{d['baseline']} [95% CI] p" for d in paired]
    rows, diff_rows, attrs = [], [], []
    base = s["runs"][labels[0]]
    for t in s["types"]:
        row: list[Any] = [t, base["per_type"].get(t, {}).get("support", 0)]
        for lab in labels:
            pt = s["runs"][lab]["per_type"].get(t, {"precision": 0.0, "recall": 0.0, "f1": 0.0})
            row += [f"{pt['precision']:.2f}", f"{pt['recall']:.2f}", f"{pt['f1']:.2f}"]
        rows.append(row)
        diff_rows.append([t] + [_delta(d["per_type"].get(t)) for d in paired])
        attrs.append("")
    row = ["overall", base["gold_entities"]]
    for lab in labels:
        o = s["runs"][lab]
        row += [f"{o['precision']:.2f}", f"{o['recall']:.2f}", f"{o['f1']:.2f}"]
    rows.append(row)
    diff_rows.append(["overall"] + [_delta(d["overall"]) for d in paired])
    attrs.append(' class="total"')
    ci = ", ".join(f"{lab} {s['runs'][lab]['f1']:.2f} [{s['runs'][lab]['f1_ci'][0]:.2f}, "
                   f"{s['runs'][lab]['f1_ci'][1]:.2f}]" for lab in labels)
    b = s["bootstrap"]
    notes = [(f"Scoring mode: {e(base['mode'])}; gold = gold entities of each type in the test set. "
              f"95% intervals of each run's F1: {e(ci)}.")]
    if s["differences"]:
        notes.append(f"Test: {e(b['test'])}; {b['resamples']} resamples of the {len(runs[0].posts)} test posts, "
                     f"seed {b['seed']}. Bold: p &lt; 0.05.")
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
    return tables + "".join(f"<p>{n}</p>" for n in notes) + _img(plot, "F1 per type")


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
        parts.append(_table(header, rows))
        parts.append("<p>Training posts the slices are drawn against: "
                     + e(", ".join(f"{lab}: {s['runs'][lab]['train_posts']}" for lab in good)) + ".</p>")
        series = {lab: [s["runs"][lab][n]["f1"] for n in s["slices"]] for lab in good}
        parts.append(_img(plots.grouped_bars(s["slices"], series, "F1 (%)", "F1 per entity slice"), "entity slices"))
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
            "run's test set).</p>" + _table(header, rows)
            + _img(plots.grouped_bars(groups, series, "F1 (%)", "F1 by post length", "post length (tokens)"), "length"))


def _section_curves(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["curves"]
    rows = [[p["label"], p["config"], p["dataset"], p["seed"], p["train_fraction"], p["train_posts"], f"{p['f1']:.2f}"]
            for p in s["points"]]
    parts = [_table(["run", "model / encoder / visual", "test set", "seed", "train fraction", "train posts", "test F1"],
                    rows, left=3)]
    if s["plotted"]:
        curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for p in s["points"]:
            if p["train_posts"] is not None:
                curves[f"{p['config']} ({p['dataset']})"].append((p["train_posts"], p["f1"]))
        parts.append(_img(plots.learning_curves(dict(curves)), "learning curve"))
    else:
        parts.append(f'<p class="note">{e(s["note"])}</p>')
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
        parts.append(_table(["run", "posts", "n", "gold", "P", "R", "F1", "mean r", "mean S_TV"], rows, left=2))
        unscored = [f"{r.label}: {s['runs'][r.label]['posts_unscored']}" for r in good if s["runs"][r.label]["posts_unscored"]]
        if unscored:
            parts.append(f'<p class="note">Test posts without a relation score: {e(", ".join(unscored))}.</p>')
        parts.append(_img(plots.relation_histogram({r.label: list(r.relation.values()) for r in good}), "relation scores"))  # type: ignore[union-attr]
        with_att = {r.label: r for r in good if r.attention}
        if with_att:
            pts = {}
            for lab, r in with_att.items():
                ids = [pid for pid in r.relation if pid in r.attention]  # type: ignore[union-attr, operator]
                pts[lab] = ([r.relation[i] for i in ids], [sum(r.attention[i]["attention"]) for i in ids])  # type: ignore[index]
            parts.append(_img(plots.relation_vs_stv(pts), "r against S_TV"))
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


def _section_attention(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    s = data["attention"]
    parts = [(f"<p>Heat maps of the attention a<sub>j</sub> over visual regions (RpBERT eq. 11), from "
              f"{e(s['file'])}, for the posts with the most errors first: each post's map, then one map per entity "
              f"the model predicted in it (attention from the entity's words), at most {s['max_posts']} posts and "
              f"{s['max_panels']} maps per run. Image grids are drawn over the post's image when it is at hand. "
              "S_TV is a map's summed attention (RpBERT eq. 10); each map has its own colour scale.</p>")]
    error_ids = {p["id"] for p in data["errors"]["posts"]}
    for r in runs:
        v = s["runs"][r.label]
        if not v:
            continue
        notes = []
        images = {}
        for pid, path in v["images"].items():
            try:
                images[pid] = load_image(path, max_side=IMAGE_SIDE)
            except MmnerError as exc:
                notes.append(f"{exc}: {pid}'s maps are drawn without it")
        maps = []
        for panel in v["panels"]:
            m = r.attention[panel["id"]]  # type: ignore[index]
            weights = m["entities"][panel["entity"]["index"]]["attention"] if panel["entity"] else m["attention"]
            maps.append({"attention": weights, "grid": m["grid"], "regions": m["regions"], "title": panel["title"],
                         "image": images.get(panel["id"])})
        linked = error_ids if r.label in data["errors"]["runs"] else set()
        parts.append(f"<h3>{e(r.label)}</h3><p>{v['posts']} posts have maps; shown: "
                     f"{', '.join(_link(pid, linked) for pid in v['shown'])}</p>")
        if v["entity_maps"]:
            parts.append(f"<p>{v['entity_maps']} predicted entities of the {v['test_posts']} test posts with maps have "
                         f"their own map; mean S_TV per entity {v['entity_s_tv_mean']}, per post {v['s_tv_mean']}.</p>")
        else:
            notes.append(f"{r.label}'s attention file has no per-entity maps (no \"entities\" in its records); "
                         f"mean S_TV per post {v['s_tv_mean']}")
        if v["entities_left_out"]:
            notes.append(f"{v['entities_left_out']} more entity maps of {v['shown'][0]} are not drawn "
                         f"(at most {s['max_panels']} maps per run)")
        parts.append(_img(plots.heat_maps(maps), f"attention of {r.label}"))
        rows = [[("html", _link(p["id"], linked)), p["title"], f"{p['s_tv']:.4f}"] for p in v["panels"]]
        parts.append(_table(["post", "map", "S_TV"], rows, left=2))
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
    return "".join(parts) + _table(header, rows, left=len(header), attrs=attrs)


def render(runs: Sequence[RunData], data: dict[str, Any]) -> str:
    """The HTML page for `analyse`'s numbers: one self-contained file (inline CSS, base64 PNG plots)."""
    builders = {
        "scores": _section_scores, "entities": _section_entities, "length": _section_length,
        "curves": _section_curves, "relation": _section_relation, "attention": _section_attention,
        "errors": _section_errors,
    }
    nav = "<nav>" + "".join(f'<a href="#{key}">{e(title)}</a>' for key, title in SECTIONS.items()) + "</nav>"
    body = [nav, "<p>Runs, in the order given (differences are to R1):</p>", _runs_caption(runs)]
    for key, title in SECTIONS.items():
        body.append(f'<section id="{key}"><h2>{e(title)}</h2>{_runs_caption(runs)}{builders[key](runs, data)}</section>')
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
