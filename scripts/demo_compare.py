"""Helpers of scripts/demo.sh (`make demo`).

    demo_compare.py RUN TEXT_RUN                  test F1 of the demo run beside a text-only run's metrics.json
    demo_compare.py --samples WITH NO FOLDER...   JSON lines of the sample folders' posts with (WITH) and
                                                  without (NO) the captions of their images (captions.json)
    demo_compare.py --show TAGGED TAGGED_TEXT     each post's entities with and without its caption
    demo_compare.py --effect RUN DATA             the run on a test split with its captions and without any:
                                                  F1 of each and how many posts the captions changed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def test_scores(run: Path, text_run: Path) -> None:
    mine = json.loads((run / "metrics.json").read_text())["test"]
    print(f"  {mine['model']} + {mine['visual_detail']}: test F1 {mine['f1']:.2f} "
          f"({mine['epochs']} epochs, {mine['trainer_precision']}, {mine['seconds_per_epoch']:.0f} s / epoch)")
    metrics = text_run / "metrics.json"
    if not metrics.is_file():
        print(f"  (no text-only run at {text_run} to compare with)")
        return
    text = json.loads(metrics.read_text())["test"]
    print(f"  {text['model']}, text only ({text_run}, committed benchmark run, seed {text['seed']}, "
          f"{text['epochs']} epochs): test F1 {text['f1']:.2f}")
    print("  the full comparison, 3 seeds each, with intervals: docs/results/summary.md and leaderboard.md")


def samples(with_captions: Path, without: Path, folders: list[Path]) -> None:
    with open(with_captions, "w", encoding="utf-8") as a, open(without, "w", encoding="utf-8") as b:
        for folder in folders:
            captions = {}
            for line in (folder / "captions.json").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    captions[rec["id"]] = rec["caption"]
            for line in (folder / "texts.json").read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                post = json.loads(line)
                pid = f"{folder.parent.name}/{folder.name}/{post['id']}"
                a.write(json.dumps({"id": pid, "tokens": post["tokens"], "image": str(folder / post["image_id"]),
                                    "caption": captions[post["id"]]}) + "\n")
                b.write(json.dumps({"id": pid, "tokens": post["tokens"]}) + "\n")


def marked(record: dict) -> str:
    tokens = list(record["tokens"])
    for ent in reversed(record["entities"]):
        tokens[ent["start"]:ent["end"]] = ["[" + " ".join(tokens[ent["start"]:ent["end"]]) + "]" + ent["type"]]
    return " ".join(tokens)


def show(tagged: Path, tagged_text: Path) -> None:
    read = lambda p: [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]  # noqa: E731
    changed = 0
    for a, b in zip(read(tagged), read(tagged_text)):
        visual = a.get("visual", {})
        seen = f"caption: {visual.get('caption')!r}" if visual.get("input") == "caption" else \
            f"no caption ({visual.get('why', 'none')})"
        print(f"  {a['id']} [{seen}]")
        print(f"    with the image: {marked(a)}")
        if a["tags"] != b["tags"]:
            changed += 1
            print(f"    text alone:     {marked(b)}   <- the image changed this post's tags")
    print(f"  the caption changed the tags of {changed} of the sample posts")


def effect(run: Path, data: str) -> None:
    from mmner.data import datadir
    from mmner.inference import load_run, predict_tags, score_posts, visual_inputs
    from mmner.vision.inputs import VisualInputs

    config, model = load_run(run)
    posts = datadir.load_dataset(data)
    seen = predict_tags(model, posts, 64, progress=False, visual=visual_inputs(config, data))
    blind = predict_tags(model, posts, 64, progress=False, visual=VisualInputs("none"))
    changed = sum(a != b for a, b in zip(seen, blind))
    print(f"  {data}: test F1 {score_posts(posts, seen)['f1']:.2f} with the captions, "
          f"{score_posts(posts, blind)['f1']:.2f} with every caption withheld; the captions changed the tags "
          f"of {changed} of {len(posts)} posts")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--samples"]:
        samples(Path(args[1]), Path(args[2]), [Path(a) for a in args[3:]])
    elif args[:1] == ["--effect"]:
        effect(Path(args[1]), args[2])
    elif args[:1] == ["--show"]:
        show(Path(args[1]), Path(args[2]))
    else:
        test_scores(Path(args[0]), Path(args[1]))
