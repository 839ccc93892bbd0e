"""What voting over finished runs reaches: docs/results/ensemble.md (+ .json).

    python benchmarks/ensemble.py        # every dataset with at least 3 members finished

Members, per dataset (MiniLM-L6 runs under benchmarks/runs, from their tracked predictions): the first seed
(13) of each system of the benchmark's question (`SYSTEMS` that have finished), and, apart, the seeds of one
system once 3 have finished. Entity-level voting (`mmner.analysis.ensemble`): an entity proposed by at
least k members, overlaps resolved by votes; k chosen on the validation split. Test F1 of the ensemble
beside the best member (chosen on validation F1) and bert-crf, paired bootstrap over test posts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from baselines import collect, variant_of
from compare import _dataset
from leaderboard import arguments

ROOT = Path(__file__).resolve().parents[1]
ENCODER = "minilm-l6"
SYSTEMS = ["bert-crf", "bert-crf-caption", "umt", "rgcn", "fusion-cm", "rpbert-soft", "fusion-tam", "ctx-crf"]
DATASETS = ["twitter2017", "twitter2015"]
MIN_MEMBERS = 3


def _tags(runs_dir: Path, run: str, split: str, posts) -> list[list[str]]:
    from mmner.analysis import artifacts

    return artifacts.read_tags(artifacts.tags_path(runs_dir / run, split), posts)


def _counts(posts, pred) -> "object":
    from mmner.analysis.slices import counts, post_entities

    return counts(post_entities(posts, pred))


def ensemble(runs_dir: Path, dataset: str, members: list[dict], resamples: int, seed: int) -> dict:
    from mmner.analysis.bootstrap import Bootstrap
    from mmner.analysis.ensemble import best_min_votes, vote
    from mmner.data import datadir
    from mmner.tagging.scorer import score

    valid, test = datadir.load_dataset(f"{dataset}:valid"), datadir.load_dataset(f"{dataset}:test")
    gold_valid = [p.tags for p in valid]
    pv = [_tags(runs_dir, m["run"], "valid", valid) for m in members]
    pt = [_tags(runs_dir, m["run"], "test", test) for m in members]
    k, valid_f1 = best_min_votes(gold_valid, pv)
    voted = vote(pt, k)
    test_f1 = score([p.tags for p in test], voted)["f1"]
    own_valid = [score(gold_valid, p)["f1"] for p in pv]
    best = max(range(len(members)), key=lambda i: own_valid[i])
    boot = Bootstrap(len(test), resamples=resamples, seed=seed)
    mine = _counts(test, voted)
    out = {"dataset": dataset, "encoder": ENCODER, "min_votes": k, "valid_f1_by_min_votes": valid_f1,
           "valid_f1": valid_f1[k], "test_f1": round(test_f1, 2),
           "members": [{"run": m["run"], "valid_f1": round(v, 2), "test_f1": m["f1"], "commit": m.get("git_commit")}
                       for m, v in zip(members, own_valid)],
           "best_member": members[best]["run"]}
    vs = boot.compare(_counts(test, pt[best]), mine)
    out["vs_best_member"] = {"delta": vs["delta"], "ci": [vs["ci_low"], vs["ci_high"]], "p": vs["p_value"]}
    text = next((i for i, m in enumerate(members) if variant_of(m["run"]) == "bert-crf"), None)
    if text is not None:
        vs = boot.compare(_counts(test, pt[text]), mine)
        out["vs_bert_crf"] = {"run": members[text]["run"], "delta": vs["delta"], "ci": [vs["ci_low"], vs["ci_high"]],
                              "p": vs["p_value"]}
    return out


def build(runs_dir: Path, resamples: int, seed: int) -> list[dict]:
    records = [r for r in collect(runs_dir) if r.get("encoder") == ENCODER]
    sections = []
    for ds in DATASETS:
        mine = [r for r in records if _dataset(r) == ds]
        systems = [r for s in SYSTEMS for r in mine if variant_of(r["run"]) == s and r["seed"] == 13]
        if len(systems) >= MIN_MEMBERS:
            sections.append({"kind": "systems", **ensemble(runs_dir, ds, systems, resamples, seed)})
        for s in SYSTEMS:
            seeds = sorted((r for r in mine if variant_of(r["run"]) == s), key=lambda r: r["seed"])
            if len(seeds) >= MIN_MEMBERS:
                sections.append({"kind": f"seeds of {s}", **ensemble(runs_dir, ds, seeds, resamples, seed)})
    return sections


def _delta(vs: dict | None) -> str:
    if not vs:
        return "–"
    return f"{vs['delta']:+.2f} [{vs['ci'][0]:+.2f}, {vs['ci'][1]:+.2f}] p {vs['p']:.3f}"


def render(sections: list[dict], resamples: int) -> str:
    lines = [
        "# Ensembles: what voting over finished runs reaches",
        "",
        "Made by `benchmarks/ensemble.py` from the tracked predictions of the runs under `benchmarks/runs` (MiniLM-L6;",
        "dataset variant: the UMT release of Twitter-2015/2017; each member's visual source as its config says).",
        "Entity-level voting (`mmner/analysis/ensemble.py`): an entity proposed by at least k members is kept, overlaps",
        "go to the more voted; k is chosen on the validation split. Members: the seed-13 run of each system of the",
        "benchmark's question, and apart the seeds of one system once three have finished. Δ: the ensemble minus the",
        f"member with the best validation F1, and minus bert-crf, paired bootstrap over test posts ({resamples}",
        "resamples), 95% interval and p. Inference costs every member's model: this is the target for distilling an",
        "ensemble into one MiniLM model (issue: mmner's own system), not a system to deploy as is.",
        "",
        "| dataset | members | k (valid) | valid F1 | test F1 | best member (valid) | its test F1 | Δ vs best member | Δ vs bert-crf |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if not sections:
        lines.append("| – | fewer than 3 members finished | | | | | | | |")
    for s in sections:
        best = next(m for m in s["members"] if m["run"] == s["best_member"])
        lines.append(f"| {s['dataset']} | {s['kind']}: {len(s['members'])} | {s['min_votes']} | {s['valid_f1']:.2f} | "
                     f"**{s['test_f1']:.2f}** | `{best['run']}` | {best['test_f1']:.2f} | {_delta(s['vs_best_member'])} | "
                     f"{_delta(s.get('vs_bert_crf'))} |")
    for s in sections:
        lines += ["", f"{s['dataset']}, {s['kind']}: valid F1 by k: "
                  + ", ".join(f"k={k}: {v:.2f}" for k, v in s["valid_f1_by_min_votes"].items()) + ". Members: "
                  + "; ".join(f"`{m['run']}` (valid {m['valid_f1']:.2f}, test {m['test_f1']:.2f})" for m in s["members"])
                  + "."]
    commits = sorted({m["commit"] for s in sections for m in s["members"] if m.get("commit")})
    if commits:
        lines += ["", "Members trained at commits " + ", ".join(commits) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "ensemble.md", argv)
    sections = build(args.runs_dir, args.resamples, args.seed)
    args.output.write_text(render(sections, args.resamples))
    args.output.with_suffix(".json").write_text(json.dumps(sections, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
