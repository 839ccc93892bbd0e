"""Caption coverage of Twitter-2015/2017: per caption source and split, how many posts have no usable
caption (no entry in the file, or an empty / blank-image caption). Writes docs/results/captions.md.

    python benchmarks/caption_coverage.py [--data-dir DIR] [--output docs/results/captions.md]

These are the posts that `visual.source: caption` masks under `visual.missing: mask` (or stops at
under `error`), so every caption-based result must be read with this table at hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("twitter2015", "twitter2017")
SPLITS = ("train", "valid", "test")
SOURCES = {"blip2": "BLIP-2 captions", "owl": "mPLUG-Owl descriptions"}


def coverage(setting: str, data_dir: Path | None) -> list[dict]:
    """One row per (dataset, split): posts, posts whose image id has no entry, posts whose entry is an
    empty or blank-image caption."""
    from mmner.data import datadir
    from mmner.vision.captions import CaptionSource, no_image_reason

    rows = []
    for dataset in DATASETS:
        source = CaptionSource.from_setting(setting, dataset, data_dir)
        for split in SPLITS:
            posts = datadir.load_dataset(f"{dataset}:{split}", data_dir)
            absent = sum(p.image_id not in source.captions for p in posts)
            blank = sum(p.image_id in source.captions and no_image_reason(source.captions[p.image_id]) is not None
                        for p in posts)
            missing = sum(source.resolve(p).missing for p in posts)
            assert missing == absent + blank, (setting, dataset, split)
            rows.append({"dataset": dataset, "split": split, "posts": len(posts), "absent": absent,
                         "blank": blank, "file": source.where})
    return rows


def _pct(n: int, total: int) -> str:
    if not total:
        return "-"
    share = 100 * n / total
    return f"{share:.2f}%" if 0 < share < 0.1 else f"{share:.1f}%"


def table(setting: str, rows: list[dict]) -> list[str]:
    files = sorted({Path(f).name for r in rows for f in r["file"].split(" + ")})
    out = [f"### {setting}: {SOURCES[setting]} ({', '.join(f'captions/{f}' for f in files)})", "",
           "| dataset | split | posts | no entry | empty / blank-image | no caption (masked) | share |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for dataset in DATASETS:
        part = [r for r in rows if r["dataset"] == dataset]
        for r in part:
            n = r["absent"] + r["blank"]
            out.append(f"| {dataset} | {r['split']} | {r['posts']} | {r['absent']} | {r['blank']} | {n} | "
                       f"{_pct(n, r['posts'])} |")
        posts, absent, blank = (sum(r[k] for r in part) for k in ("posts", "absent", "blank"))
        out.append(f"| **{dataset}** | **all** | **{posts}** | **{absent}** | **{blank}** | **{absent + blank}** | "
                   f"**{_pct(absent + blank, posts)}** |")
    posts, absent, blank = (sum(r[k] for r in rows) for k in ("posts", "absent", "blank"))
    out.append(f"| **total** | | **{posts}** | **{absent}** | **{blank}** | **{absent + blank}** | "
               f"**{_pct(absent + blank, posts)}** |")
    return out + [""]


def notes(rows: dict[str, list[dict]], data_dir: Path) -> list[str]:
    """What the tables mean, with the numbers computed here rather than typed in."""
    from mmner.data import datadir
    from mmner.vision.captions import CaptionSource, no_image_reason

    blip2 = CaptionSource.from_setting("blip2", "twitter2017", data_dir).captions
    owl = CaptionSource.from_setting("owl", None, data_dir).captions
    blank = {k for k, v in blip2.items() if v.strip() and no_image_reason(v) is not None}
    split_blank = " / ".join(str(r["blank"]) for r in rows["blip2"] if r["dataset"] == "twitter2017")
    lines = [
        f"- BLIP-2 has an entry for every post; what it lacks is content: {len(blank)} Twitter-2017 images read "
        f"`{datadir.BLANK_IMAGE_CAPTION}` ({split_blank} posts in train / valid / test), and "
        f"{sum(r['blank'] for r in rows['blip2'] if r['dataset'] == 'twitter2015')} Twitter-2015 posts have an "
        "empty caption.",
    ]
    covered = {ds: sum(r["posts"] - r["absent"] for r in rows["owl"] if r["dataset"] == ds) for ds in DATASETS}
    total = {ds: sum(r["posts"] for r in rows["owl"] if r["dataset"] == ds) for ds in DATASETS}
    lines.append(
        "- mPLUG-Owl (the Twitter-GMNER subset) covers " + " and ".join(
            f"{covered[ds]} of {total[ds]} {ds} posts" for ds in DATASETS)
        + f"; {len(blank & owl.keys())} of the {len(blank)} blank Twitter-2017 images have an entry. An Owl run "
        "therefore needs `visual.missing: mask`, and the masked posts are text only."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $MMNER_DATA_DIR or ../shared/data")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "captions.md")
    args = parser.parse_args()

    from mmner.data import datadir

    data_dir = datadir.data_dir(args.data_dir)
    lines = [
        "# Caption coverage of Twitter-2015/2017",
        "",
        "Posts per split whose image has no usable caption, per caption source (`visual.caption`).",
        "\"No entry\": the post's IMGID is not in the caption file. \"Empty / blank-image\": the entry is empty",
        f"(`71406.jpg :`) or reads `{datadir.BLANK_IMAGE_CAPTION}`, the caption BLIP-2 wrote for every",
        "Twitter-2017 image that was blank when captioned. Both mean \"no image\" (`mmner.vision.captions`): with",
        "`visual.source: caption` such a post stops the run under `visual.missing: error` and is masked (and",
        "counted in metrics.json as `masked_images`) under `visual.missing: mask`; it never gets another caption.",
        "",
        "Data: UMT release splits, caption files from RiVEG @ 6af00ff (`../shared/data/SOURCES.md`).",
        "Made by `python benchmarks/caption_coverage.py`.",
        "",
    ]
    rows = {setting: coverage(setting, data_dir) for setting in SOURCES}
    for setting in SOURCES:
        lines += table(setting, rows[setting])
    lines += ["Notes:", *notes(rows, data_dir), ""]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
