"""The Twitter-2017 analysis report: the text-only bert-crf against the best multimodal model of the
same encoder and seed, with low-resource curves of both, as docs/reports/twitter2017[-<encoder>].html
(+ .json) and screenshots of two of its sections.

    python benchmarks/report_twitter2017.py --encoder mpnet            # docs/reports/twitter2017.html
    python benchmarks/report_twitter2017.py --encoder minilm --seed 13 # docs/reports/twitter2017-minilm.html

Steps, each skipped when its result exists (runs live under benchmarks/runs, next to the benchmark runs):
1. the text-only baseline `bert-crf-<encoder>-twitter2017-s<seed>` must be finished (benchmarks/baselines.py);
2. the multimodal model is the finished multimodal Twitter-2017 run of that encoder and seed with the
   best VALID F1 (the test set plays no part in the choice); every candidate is listed; when that model
   has no region attention, the best one (by valid F1) that has joins the report for its attention maps;
3. runs made before models wrote their region attention / relation scores are re-evaluated on the
   test split (`mmner evaluate --output predictions/test.conll`), which writes those files beside the
   predictions (the tags are those of the same weights);
4. both configs are trained again on `--fractions` of the training posts (`data.train_fraction`) for
   the low-resource curves, as runs/fractions/<config>-f<fraction>-s<seed> (apart from the benchmark rows);
5. `mmner report` over [baseline, best, the fraction runs] and headless-Chromium screenshots of the
   sections named by `--shots` (docs/screenshots/report-<section>[-<encoder>].png).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = {"minilm": "minilm-l6", "mpnet": "mpnet-base"}


def finished(run: Path) -> dict | None:
    metrics = run / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else None


def attends(run: Path) -> bool:
    """Whether the run's model returns region attention (models.base.Tagger.region_attention)."""
    from mmner.config import load_config
    from mmner.models import registry

    params = load_config(run / "config.yaml").model_params()
    flag = registry.get(params.name).region_attention
    return flag if isinstance(flag, bool) else bool(getattr(params, "image", True))  # umt: per config


def multimodal_choice(runs_dir: Path, encoder: str, seed: int) -> list[Path]:
    """The finished multimodal Twitter-2017 run of `encoder` and `seed` with the best valid F1, and, when
    that model has no region attention, also the best of those that have (for "where the model looks")."""
    candidates = []
    for run in sorted(runs_dir.glob(f"*-{encoder}-twitter2017-s{seed}")):
        m = finished(run)
        if m and m["test"].get("visual_source", "none") != "none":
            candidates.append((m["valid"]["f1"], m["test"]["f1"], run))
    if not candidates:
        raise SystemExit(f"no finished multimodal run *-{encoder}-twitter2017-s{seed} under {runs_dir}: "
                         "run benchmarks/chen.py, umt.py, rpbert.py or rgcn.py first")
    for valid, test, run in sorted(candidates, reverse=True):
        print(f"  candidate {run.name}: valid F1 {valid:.2f} (test {test:.2f})")
    valid, _, best = max(candidates)
    print(f"best multimodal by valid F1: {best.name} ({valid:.2f})")
    if attends(best):
        return [best]
    with_maps = [c for c in candidates if attends(c[2])]
    if not with_maps:
        return [best]
    valid, _, looks = max(with_maps)
    print(f"{best.name} has no region attention; best with attention by valid F1: {looks.name} ({valid:.2f})")
    return [best, looks]


def ensure_post_outputs(run: Path) -> None:
    """Region attention / relation files of the test split, by re-evaluating a run made before models
    wrote them."""
    from mmner.analysis.artifacts import attention_path, relation_path
    from mmner.inference import evaluate, load_run

    _, model = load_run(run)
    wanted = ([attention_path(run)] if model.region_attention else []) + ([relation_path(run)] if model.relation_score else [])
    if all(p.is_file() for p in wanted):
        return
    print(f"re-evaluating {run.name} on twitter2017:test for its attention / relation files")
    before = (run / "predictions" / "test.conll").read_text()
    evaluate(run, "twitter2017:test", output=run / "predictions" / "test.conll")
    if (run / "predictions" / "test.conll").read_text() != before:
        raise SystemExit(f"{run.name}: re-evaluation changed the test predictions; the run's weights are not "
                         "the ones that made them")


def fraction_runs(configs: list[str], fractions: list[float], seed: int, runs_dir: Path) -> list[Path]:
    """`configs` trained on each fraction of their training posts (finished runs are reused, interrupted
    ones resumed)."""
    from mmner.config import load_config
    from mmner.train.run import train

    out = []
    for fraction in fractions:
        for name in configs:
            run = runs_dir / f"{name}-f{fraction:g}-s{seed}"
            if not finished(run):
                resume = (run / "checkpoints" / "last.ckpt").is_file()
                print(f"[{run.name}] {'resuming' if resume else 'training'}", flush=True)
                config = load_config(ROOT / "configs" / f"{name}.yaml", [f"seed={seed}", f"data.train_fraction={fraction}"])
                train(config, run, resume=resume)
            out.append(run)
    return out


def screenshots(page: Path, sections: list[str], suffix: str) -> list[Path]:
    """PNG of each named section of the report, from headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,4000", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    out = []
    try:
        driver.get(page.resolve().as_uri())
        for section in sections:
            element = driver.find_element(By.ID, section)
            driver.execute_script("arguments[0].querySelector('details').open = true;", element)  # closed ones too
            target = ROOT / "docs" / "screenshots" / f"report-{section}{suffix}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            element.screenshot(str(target))
            out.append(target)
            print(f"wrote {target}")
    finally:
        driver.quit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=list(ENCODERS), default="mpnet")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--fractions", nargs="*", type=float, default=[0.1, 0.25, 0.5])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    parser.add_argument("--fraction-runs-dir", type=Path, default=ROOT / "runs" / "fractions")
    parser.add_argument("--shots", nargs="*", default=["scores", "attention"], help="report sections to screenshot")
    args = parser.parse_args()

    suffix = "" if args.encoder == "mpnet" else f"-{args.encoder}"
    baseline = args.runs_dir / f"bert-crf-{args.encoder}-twitter2017-s{args.seed}"
    if not finished(baseline):
        raise SystemExit(f"{baseline} is not finished: `mmner sweep benchmarks/matrix-{args.encoder}.yaml` "
                         "trains it (the first run of the matrix)")
    chosen = multimodal_choice(args.runs_dir, args.encoder, args.seed)
    for run in chosen:
        ensure_post_outputs(run)
    best = chosen[0]
    best_config = best.name.rsplit("-s", 1)[0]
    curves = fraction_runs([baseline.name.rsplit("-s", 1)[0], best_config], args.fractions, args.seed,
                           args.fraction_runs_dir)
    page = ROOT / "docs" / "reports" / f"twitter2017{suffix}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    runs = [baseline, *chosen, *curves]  # named relative to the project in the report, as on any machine
    subprocess.run([sys.executable, "-m", "mmner", "report", *(os.path.relpath(r, ROOT) for r in runs),
                    "--output", os.path.relpath(page, ROOT)], check=True, cwd=ROOT)
    if args.shots:
        screenshots(page, args.shots, suffix)


if __name__ == "__main__":
    main()
