"""Caption sources: what counts as "no image", which caption wins, every file format, the real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmner.data import datadir
from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.vision.captions import CaptionSource, PseudoCaptionSource, dataset_of, no_image_reason

SHARED_DATA = (Path(__file__).resolve().parents[1] / "../shared/data").resolve()


def post(image_id: str | None = "1", caption: str | None = None, pid: str = "p1") -> Post:
    return Post(id=pid, tokens=["hello"], image_id=image_id, caption=caption)


@pytest.mark.parametrize(
    "caption",
    ["", "   ", "\t\n", datadir.BLANK_IMAGE_CAPTION, "  A man is standing on a  skateboard in the snow "],
)
def test_blank_and_empty_captions_mean_no_image(caption):
    assert no_image_reason(caption) is not None
    source = CaptionSource({"1": caption}, "test captions", "caps.txt")
    c = source.resolve(post())
    assert c.missing and c.text is None and "image 1" in c.problem and "caps.txt" in c.problem


def test_real_caption_is_kept():
    assert no_image_reason("a man is standing on a skateboard") is None
    c = CaptionSource({"1": " two dogs on a beach "}, "t", "caps.txt").resolve(post())
    assert c.text == "two dogs on a beach" and c.origin == "file" and c.problem is None


def test_post_caption_wins_over_the_file():
    source = CaptionSource({"1": "from the file"}, "t", "caps.txt")
    c = source.resolve(post(caption="the post's own"))
    assert (c.text, c.origin) == ("the post's own", "post")
    # a post's own blank caption is final: its image was blank, the file is not consulted
    c = source.resolve(post(caption=datadir.BLANK_IMAGE_CAPTION))
    assert c.missing and c.origin == "post" and "blank-image" in c.problem
    assert source.resolve(post(caption="")).missing


def test_absent_entries_say_what_is_missing():
    source = CaptionSource({"1": "x"}, "t", "caps.txt")
    assert "no caption for image 2 in caps.txt" in source.resolve(post("2")).problem
    assert "no image id" in source.resolve(post(None)).problem


def test_json_caption_files(tmp_path):
    lines = tmp_path / "caps.jsonl"
    lines.write_text(json.dumps({"image_id": "7.jpg", "caption": "a red car"}) + "\n"
                     + json.dumps({"id": "8", "caption": ""}) + "\n")
    source = CaptionSource.from_setting(str(lines))
    assert source.resolve(post("7")).text == "a red car"
    assert source.resolve(post("8")).missing
    assert str(lines.resolve()) in source.detail and "sha1" in source.detail

    mapping = tmp_path / "caps.json"
    mapping.write_text(json.dumps({"7.jpg": "a blue car", "9": datadir.BLANK_IMAGE_CAPTION}))
    source = CaptionSource.from_file(mapping)
    assert source.resolve(post("7")).text == "a blue car"
    assert source.resolve(post("9")).missing


def test_blip2_caption_file(tmp_path):
    path = tmp_path / "blip2_mine.txt"
    path.write_text(f"5.jpg :a cat on a sofa\n6.jpg :\n7.jpg :{datadir.BLANK_IMAGE_CAPTION}\n")
    source = CaptionSource.from_setting(str(path))
    assert source.resolve(post("5")).text == "a cat on a sofa"
    assert source.resolve(post("6")).missing and source.resolve(post("7")).missing
    assert len(source) == 3


def test_unknown_setting_and_missing_file():
    with pytest.raises(MmnerError, match="visual.caption: unknown caption source 'blip3'"):
        CaptionSource.from_setting("blip3")
    with pytest.raises(MmnerError, match="visual.caption: .*nope.json is not a captions file"):
        CaptionSource.from_setting("/no/such/nope.json")


def test_dataset_of():
    assert dataset_of("twitter2017:test") == "twitter2017"
    assert dataset_of("twitter2015_samples:dev") == "twitter2015"
    assert dataset_of("/data/twitter2015/valid.txt") == "twitter2015"
    assert dataset_of("/home/me/posts.jsonl") is None and dataset_of(None) is None


def test_pseudo_caption_source_with_a_stub(tmp_path):
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(image)
    seen = []
    source = PseudoCaptionSource(k=2, captioner=lambda im: seen.append(im.size) or "fire engine, tomato")
    c = source.resolve(Post(id="p", tokens=["x"], image_path=str(image)))
    assert (c.text, c.origin, seen) == ("fire engine, tomato", "image", [(8, 8)])
    assert source.resolve(Post(id="p", tokens=["x"], image_path=str(image), caption="own")).text == "own"
    assert "does not exist" in source.resolve(Post(id="p", tokens=["x"], image_path=str(tmp_path / "b.jpg"))).problem
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert "unreadable" in source.resolve(Post(id="p", tokens=["x"], image_path=str(bad))).problem
    assert "top-2 ImageNet classes" in source.detail


# --------------------------------------------------------------------------------------------------
# the real caption files (../shared/data): posts per split whose caption is missing or blank

# (source, dataset, split) -> (posts, no entry, blank or empty caption); docs/results/captions.md
EXPECTED = {
    ("blip2", "twitter2015", "train"): (4000, 0, 1),
    ("blip2", "twitter2015", "valid"): (1000, 0, 1),
    ("blip2", "twitter2015", "test"): (3257, 0, 0),
    ("blip2", "twitter2017", "train"): (3373, 0, 250),
    ("blip2", "twitter2017", "valid"): (723, 0, 58),
    ("blip2", "twitter2017", "test"): (723, 0, 50),
    ("owl", "twitter2015", "train"): (4000, 1211, 0),
    ("owl", "twitter2015", "valid"): (1000, 301, 0),
    ("owl", "twitter2015", "test"): (3257, 1021, 0),
    ("owl", "twitter2017", "train"): (3373, 379, 0),
    ("owl", "twitter2017", "valid"): (723, 86, 0),
    ("owl", "twitter2017", "test"): (723, 81, 0),
}


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("setting", ["blip2", "owl"])
def test_real_caption_coverage(setting):
    from mmner.data.readers import read_conll

    for dataset in ("twitter2015", "twitter2017"):
        source = CaptionSource.from_setting(setting, dataset, SHARED_DATA)
        for split in ("train", "valid", "test"):
            posts = read_conll(SHARED_DATA / dataset / f"{split}.txt")
            absent = sum(p.image_id not in source.captions for p in posts)
            blank = sum(p.image_id in source.captions and no_image_reason(source.captions[p.image_id]) is not None
                        for p in posts)
            assert (len(posts), absent, blank) == EXPECTED[(setting, dataset, split)], (dataset, split)
            assert sum(source.resolve(p).missing for p in posts) == absent + blank
    # SOURCES.md: 358 blank Twitter-2017 images; owl covers 5724 / 8257 and 4273 / 4819 image ids
    totals = {ds: sum(EXPECTED[(setting, ds, s)][1] + EXPECTED[(setting, ds, s)][2] for s in ("train", "valid", "test"))
              for ds in ("twitter2015", "twitter2017")}
    assert totals == ({"twitter2015": 2, "twitter2017": 358} if setting == "blip2"
                      else {"twitter2015": 8257 - 5724, "twitter2017": 4819 - 4273})


def test_new_posts_fall_back_to_a_pseudo_caption_of_their_image(tmp_path):
    from PIL import Image

    from mmner.vision.captions import FallbackCaptions

    image = tmp_path / "new.png"
    Image.new("RGB", (8, 8), (0, 90, 200)).save(image)
    known = CaptionSource({"known": "a man on a bike"}, "test captions", "test file")

    def captioner(_image) -> str:
        return "mountain bike, unicycle"

    source = FallbackCaptions(known, PseudoCaptionSource(captioner=captioner))
    post = lambda **kw: Post(id="p", tokens=["hi"], **kw)  # noqa: E731
    assert source.resolve(post(image_id="known", image_path=str(image))).text == "a man on a bike"  # the file's
    got = source.resolve(post(image_id="new", image_path=str(image)))
    assert (got.text, got.origin) == ("mountain bike, unicycle", "image")
    assert source.resolve(post(image_id="new", image_path=str(image), caption="own words")).text == "own words"
    blank = source.resolve(post(image_id="new", image_path=str(image), caption=datadir.BLANK_IMAGE_CAPTION))
    assert blank.text is None  # a post's own caption is final, even a blank-image one
    no_image = source.resolve(post(image_id="new"))
    assert no_image.text is None and no_image.problem

    def broken(_image) -> str:
        raise MmnerError("efficientnet-lite0 weights are not installed")

    failed = FallbackCaptions(known, PseudoCaptionSource(captioner=broken)).resolve(post(image_id="new", image_path=str(image)))
    assert failed.text is None and "no pseudo-caption (efficientnet-lite0 weights are not installed)" in failed.problem


def test_merged_caption_sources_keep_each_caption_and_refuse_a_clash():
    """CaptionSource.merged (the BLIP-2 files of both datasets, extra training data's caption files): every
    image's caption, an image captioned alike in two sources once, one captioned differently an error naming
    both sources."""
    a = CaptionSource({"1": "a dog", "2": "a cat"}, "BLIP-2 caption (a.txt)", "a.txt")
    b = CaptionSource({"2": "a cat", "3": "a bird"}, "BLIP-2 caption (b.txt)", "b.txt")
    merged = CaptionSource.merged([("a.txt", a), ("b.txt", b)], "data.extra_train")
    assert dict(merged.captions) == {"1": "a dog", "2": "a cat", "3": "a bird"}
    assert merged.detail == "BLIP-2 caption (a.txt) + BLIP-2 caption (b.txt)" and merged.where == "a.txt + b.txt"
    same = CaptionSource.merged([("a.txt", a), ("again", a)], "x", detail="BLIP-2 caption (a.txt)")
    assert same.detail == "BLIP-2 caption (a.txt)" and same.where == "a.txt"
    clash = CaptionSource({"2": "two cats"}, "owl", "c.json")
    with pytest.raises(MmnerError, match=r"^data.extra_train: image 2 has different captions in a.txt and c.json; hint$"):
        CaptionSource.merged([("a.txt", a), ("b.txt", b), ("c.json", clash)], "data.extra_train", hint="; hint")
