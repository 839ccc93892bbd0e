"""`data.extra_train`: more training posts, optionally tagged by a `.tags` file (self-training)."""

from __future__ import annotations

import json

import pytest

from conftest import make_posts, tiny_config, write_corpus
from mmner.config import DataConfig, ExtraTrain
from mmner.data import datadir
from mmner.errors import MmnerError


@pytest.fixture
def extra(tmp_path):
    """Eight posts and a tags file that tags every one of them "O" but its first word, made a PER."""
    path = write_corpus(tmp_path / "extra.txt", make_posts(8, 9))
    posts = datadir.load_dataset(str(path))
    tags = tmp_path / "extra.tags"
    tags.write_text("".join(f"{p.id}\t{' '.join(['B-PER'] + ['O'] * (len(p.tokens) - 1))}\n" for p in posts))
    return path, tags, posts


def test_extra_posts_take_the_tags_file_and_a_prefixed_id(extra, tiny_corpus):
    from mmner.train.run import extra_training_posts

    path, tags, posts = extra
    train = datadir.load_dataset(str(tiny_corpus["train"]))
    got = extra_training_posts(ExtraTrain(data=str(path), tags=str(tags)), 0, DataConfig(), train)
    assert [p.id for p in got] == [f"{path}/{p.id}" for p in posts]
    assert all(p.tags == ["B-PER"] + ["O"] * (len(p.tokens) - 1) for p in got)
    assert [p.tokens for p in got] == [p.tokens for p in posts] and [p.image_id for p in got] == [p.image_id for p in posts]
    own = extra_training_posts(ExtraTrain(data=str(path)), 0, DataConfig(), train)  # no tags file: its own tags
    assert [p.tags for p in own] == [p.tags for p in posts]


def test_bad_extra_data_is_one_line_naming_the_entry(extra, tiny_corpus, tmp_path):
    from mmner.train.run import extra_training_posts

    path, tags, posts = extra
    train = datadir.load_dataset(str(tiny_corpus["train"]))
    with pytest.raises(MmnerError, match=r"data.extra_train\[1\].tags: .*nope.tags does not exist"):
        extra_training_posts(ExtraTrain(data=str(path), tags=str(tmp_path / "nope.tags")), 1, DataConfig(), train)
    misc = tmp_path / "misc.tags"
    misc.write_text("".join(f"{p.id}\t{' '.join(['B-MISC'] + ['O'] * (len(p.tokens) - 1))}\n" for p in posts))
    with pytest.raises(MmnerError, match=r"data.extra_train\[0\]: .*misc.tags: post .* has entity type MISC, which "):
        extra_training_posts(ExtraTrain(data=str(path), tags=str(misc)), 0, DataConfig(), train)
    short = tmp_path / "short.tags"
    short.write_text(tags.read_text().split("\n", 1)[1])
    with pytest.raises(MmnerError, match="7 posts but the split has 8"):
        extra_training_posts(ExtraTrain(data=str(path), tags=str(short)), 0, DataConfig(), train)


def test_exclude_leaves_the_listed_posts_out(extra, tiny_corpus, tmp_path):
    """`exclude`: the ids a file lists (comments and blank lines aside) are left out, after the tags file
    is read in the data's order; an id that is not one of the data's posts is an error naming its line."""
    from mmner.train.run import extra_training_posts

    path, tags, posts = extra
    train = datadir.load_dataset(str(tiny_corpus["train"]))
    ids = tmp_path / "near.ids"
    ids.write_text(f"# near-copies\n{posts[1].id}\n\n{posts[5].id}  # of a test post\n")
    got = extra_training_posts(ExtraTrain(data=str(path), tags=str(tags), exclude=str(ids)), 0, DataConfig(), train)
    assert [p.id for p in got] == [f"{path}/{p.id}" for i, p in enumerate(posts) if i not in (1, 5)]
    assert all(p.tags[0] == "B-PER" for p in got)
    ids.write_text(f"{posts[1].id}\nnobody\n")
    with pytest.raises(MmnerError, match=rf"near.ids:2: nobody is not a post of {path}"):
        extra_training_posts(ExtraTrain(data=str(path), tags=str(tags), exclude=str(ids)), 0, DataConfig(), train)
    with pytest.raises(MmnerError, match=r"data.extra_train\[0\].exclude: .*gone.ids does not exist"):
        extra_training_posts(ExtraTrain(data=str(path), exclude=str(tmp_path / "gone.ids")), 0, DataConfig(), train)


def test_a_run_trains_on_the_extra_posts_with_their_captions(extra, tiny_corpus, tiny_model_params, tiny_visual, tmp_path):
    from mmner.config import Config
    from mmner.train.run import train

    path, tags, _ = extra
    raw = tiny_config(tiny_model_params["bert-crf-caption"], tiny_corpus, tiny_visual["caption"], max_epochs=1)
    raw["data"]["extra_train"] = [{"data": str(path), "tags": str(tags)}]
    metrics = train(Config.model_validate(raw), tmp_path / "run", quiet=True)
    test = metrics["test"]
    assert test["train_posts"] == 24 + 8
    entry = test["extra_train"][0]
    assert entry["data"] == str(path) and entry["tags"] == str(tags) and entry["posts"] == 8 and len(entry["tags_sha1"]) == 12
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["extra_train"] == test["extra_train"]
    # the extra posts' images were looked up in the run's captions (ids 3 and 5 have none: masked)
    assert test["train_masked_images"] >= 2 and "caption" in test["visual_detail"]


def test_a_run_trains_on_untagged_tweets_with_a_tags_file_and_exclude(tiny_corpus, tiny_model_params, tiny_visual,
                                                                       tmp_path):
    """Untagged posts from a TRC csv (as `trc:all` is) train with a tags file, less the excluded ids; having
    no image ids, every one of them is seen without its image (masked), and metrics.json says so."""
    from mmner.config import Config
    from mmner.train.run import train

    header = '"tweet_id","user_id","tweet","text_is_represented","image_adds"\n'
    rows = "".join(f'"{i}","9","Paris and London again {i} https://t.co/x","1","0"\n' for i in range(1, 6))
    csv = tmp_path / "trc.csv"
    csv.write_text(header + rows)
    tags = tmp_path / "trc.tags"
    tags.write_text("".join(f"{i}\tB-LOC O B-LOC O O\n" for i in range(1, 6)))
    ids = tmp_path / "near.ids"
    ids.write_text("2\n")
    raw = tiny_config(tiny_model_params["bert-crf-caption"], tiny_corpus, tiny_visual["caption"], max_epochs=1)
    raw["visual"]["missing"] = "mask"
    raw["data"]["extra_train"] = [{"data": str(csv), "tags": str(tags), "exclude": str(ids)}]
    test = train(Config.model_validate(raw), tmp_path / "run", quiet=True)["test"]
    assert test["train_posts"] == 24 + 4
    entry = test["extra_train"][0]
    assert entry["posts"] == 4 and entry["exclude"] == str(ids) and len(entry["exclude_sha1"]) == 12
    assert test["train_masked_images"] >= 4
