"""Readers, writer and data-dir lookup: round trips, every malformed input, and the real files."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from mmner.data import datadir
from mmner.data.datadir import BLANK_IMAGE_CAPTION, caption_file, data_dir, load_dataset, resolve
from mmner.data.post import Post
from mmner.data.readers import (
    TrcRecord,
    iter_jsonl,
    read_blip2_captions,
    read_captions,
    read_conll,
    read_json_captions,
    read_jsonl,
    read_owl_captions,
    read_posts,
    read_ritual,
    read_trc,
    tokenize,
    write_conll,
)
from mmner.errors import MmnerError

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "twitter2015").is_dir(), reason="../shared/data not present")


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def raises_at(path: Path, line: int):
    """Expect an MmnerError whose message locates the problem at `path:line`."""
    return pytest.raises(MmnerError, match=rf"^{_re(str(path))}:{line}: ")


def _re(s: str) -> str:
    import re

    return re.escape(s)


# ---------------------------------------------------------------- tokenize


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("RT @jehnnybgoode: Go #NewYorkMets!!", ["RT", "@", "jehnnybgoode", ":", "Go", "#", "NewYorkMets", "!", "!"]),
        ("pic http://t.co/Z3neVBQ7vF.", ["pic", "http://t.co/Z3neVBQ7vF", "."]),
        ("(https://example.com/a?b=1) ok", ["(", "https://example.com/a?b=1", ")", "ok"]),
        ("There's  the\thorn ..", ["There", "'", "s", "the", "horn", ".", "."]),
        ("for $40. 3.5% 1,000 2nd NHL17Benn", ["for", "$", "40", ".", "3.5", "%", "1,000", "2", "nd", "NHL17Benn"]),
        ("@Milli_Bear96 &gt;", ["@", "Milli_Bear96", "&", "gt", ";"]),
        ("day. 💞⚾️", ["day", ".", "💞", "⚾", "\ufe0f"]),
        ("Half 😈🙌🏾", ["Half", "😈", "🙌", "🏾"]),
        ("café नमस्ते", ["café", "नमस्ते"]),
        ("a\u200bb  \n c", ["a", "b", "c"]),
        ("   ", []),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


# ---------------------------------------------------------------- CoNLL

ODD = ["\xa0", "\u200b", "\u200d", "\xad", "#\u200edarmageddon", "a\u2028b", "New York", "🙌🏾"]


def sample_posts() -> list[Post]:
    return [
        Post("p0", ["RT", "@", "Obama", ":", "http://t.co/x"], ["O", "O", "B-PER", "O", "O"], image_id="1015799"),
        Post("p1", ODD, ["O"] * len(ODD), image_id="17_06_12483"),
        Post("p2", ["Paris"], ["I-LOC"]),  # no IMGID; stray I- kept as is
        Post("p3", ["New", "York", "Mets"], ["B-ORG", "I-ORG", "I-ORG"], image_id="O_2144"),
    ]


def test_conll_round_trip(tmp_path: Path) -> None:
    first = tmp_path / "corpus.txt"
    write_conll(first, sample_posts())
    posts = read_conll(first)
    assert [p.tokens for p in posts] == [p.tokens for p in sample_posts()]
    assert [p.tags for p in posts] == [p.tags for p in sample_posts()]
    assert [p.image_id for p in posts] == ["1015799", "17_06_12483", None, "O_2144"]
    assert [p.id for p in posts] == ["corpus-0", "corpus-1", "corpus-2", "corpus-3"]
    second = tmp_path / "again.txt"
    write_conll(second, posts)
    assert second.read_bytes() == first.read_bytes()


def test_write_conll_with_given_tags(tmp_path: Path) -> None:
    posts = sample_posts()[:1]
    write_conll(tmp_path / "pred.txt", posts, tags=[["O", "O", "B-ORG", "O", "O"]])
    assert read_conll(tmp_path / "pred.txt")[0].tags == ["O", "O", "B-ORG", "O", "O"]
    with pytest.raises(MmnerError, match="5 tokens but 1 tags"):
        write_conll(tmp_path / "bad.txt", posts, tags=[["O"]])
    with pytest.raises(MmnerError, match="no tags"):
        write_conll(tmp_path / "bad.txt", [Post("x", ["a"])])
    with pytest.raises(MmnerError, match="cannot be written"):
        write_conll(tmp_path / "bad.txt", [Post("x", ["a\tb"], ["O"])])


def test_conll_crlf_jpg_and_spaces(tmp_path: Path) -> None:
    path = write(tmp_path / "w.txt", "\ufeffIMGID:12.jpg\r\nRT\tO\r\nMessi  B-PER \r\n\r\n\r\nIMGID:13\r\nx\tO\r\n")
    posts = read_conll(path)
    assert [p.tokens for p in posts] == [["RT", "Messi"], ["x"]]
    assert posts[0].tags == ["O", "B-PER"]
    assert [p.image_id for p in posts] == ["12", "13"]
    assert posts[1].meta["line"] == 6


def test_conll_imgid_without_blank_line_starts_a_post(tmp_path: Path) -> None:
    posts = read_conll(write(tmp_path / "t.txt", "IMGID:1\na\tO\nIMGID:2\nb\tO"))
    assert [(p.image_id, p.tokens) for p in posts] == [("1", ["a"]), ("2", ["b"])]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("IMGID:1\nRT\tO\nMessi\n\n", 3, "no tag"),
        ("IMGID:1\nRT\tO\n\nIMGID:2\n\nIMGID:3\nx\tO\n", 4, "no tokens"),
        ("IMGID:1\nRT\tO\nIMGID:2\nIMGID:3\nx\tO\n", 3, "no tokens"),
        ("IMGID:1\nRT\tO\nMessi\tB-PERSON-\tx\n", 3, "malformed tag"),
        ("IMGID:1\nRT\tO\nMessi\tPER\n", 3, "malformed tag"),
        ("IMGID:1\n\tO\n", 2, "empty token"),
        ("IMGID:\nx\tO\n", 1, "without an image id"),
    ],
)
def test_conll_errors(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path / "bad.txt", text)
    with raises_at(path, line) as e:
        read_conll(path)
    assert problem in str(e.value)


def test_conll_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"IMGID:1\nok\tO\ncaf\xe9\tO\n")
    with raises_at(path, 3):
        read_conll(path)


def test_missing_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    for reader in (read_conll, read_jsonl, iter_jsonl, read_ritual, read_posts, read_blip2_captions,
                   read_json_captions, read_owl_captions, read_trc):
        with pytest.raises(MmnerError, match=_re(str(missing))):
            reader(missing)


# ---------------------------------------------------------------- JSON lines posts


def test_read_jsonl(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "text": "Meet @Obama in #Paris", "image": "img/a.jpg", "caption": "a man"},
        {"tokens": ["Messi", "scores"], "tags": ["B-PER", "O"], "source": "web"},
        {"id": 7, "text": "x", "image": "/abs/b.png"},
    ]
    text = json.dumps(lines[0]) + "\r\n\r\n" + json.dumps(lines[1], ensure_ascii=False) + "\n" + json.dumps(lines[2])
    path = write(tmp_path / "posts.jsonl", text)
    posts = read_jsonl(path)
    assert [p.id for p in posts] == ["a", "#3", "7"]  # missing id -> #<line number>
    assert posts[0].tokens == ["Meet", "@", "Obama", "in", "#", "Paris"]
    assert posts[0].image_path == str(tmp_path / "img" / "a.jpg")
    assert posts[0].image_id == "a" and posts[0].caption == "a man" and posts[0].tags is None
    assert posts[0].meta["text"] == lines[0]["text"]
    assert posts[1].tags == ["B-PER", "O"] and posts[1].image_path is None and posts[1].meta["source"] == "web"
    assert posts[2].image_path == "/abs/b.png"


def test_iter_jsonl_streams(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", '{"text": "ok"}\n{broken\n')
    it = iter_jsonl(path)
    assert isinstance(it, types.GeneratorType)
    assert next(it).tokens == ["ok"]  # the first post comes before the bad line is read
    with raises_at(path, 2):
        next(it)


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"id": "x", "text": "hi"', "invalid JSON"),
        ('{"id": "x", "image": "a.jpg"}', 'needs "text" or "tokens"'),
        ('{"id": "x", "text": "  \\u200b "}', "empty post"),
        ('{"id": "x", "tokens": []}', "empty post"),
        ('{"id": "x", "tokens": "Messi scores"}', "list of strings"),
        ('{"id": "x", "tokens": ["Messi", 3]}', "list of strings"),
        ('{"id": "x", "tokens": ["a", "b"], "tags": ["O"]}', "2 tokens but 1 tags"),
        ('{"id": "x", "tokens": ["a"], "tags": ["PER"]}', "malformed tag"),
        ('["a", "b"]', "JSON object"),
        ('{"id": "x", "text": 3}', "must be a string"),
    ],
)
def test_jsonl_errors(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"id": "ok", "text": "fine"}\n' + line + "\n")
    with raises_at(path, 2) as e:
        read_jsonl(path)
    assert problem in str(e.value)


# ---------------------------------------------------------------- RiTUAL folders and dispatch


def ritual_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "train"
    folder.mkdir()
    texts = [
        {"id": "1", "image_id": "1.jpg", "text": "Go Mets", "tokens": ["Go", "Mets"], "label": ["O", "B-MISC"]},
        {"id": "2", "image_id": "2.jpg", "tokens": ["World", "Cup"], "label": ["B-MISC", "I-MISC"]},
    ]
    write(folder / "texts.json", "".join(json.dumps(t) + "\n" for t in texts))
    write(folder / "captions.json", json.dumps({"id": "1", "image_id": "1.jpg", "caption": "a stadium"}) + "\n")
    return folder


def test_read_ritual(tmp_path: Path) -> None:
    folder = ritual_folder(tmp_path)
    posts = read_ritual(folder)
    assert [p.tags for p in posts] == [["O", "B-MISC"], ["B-MISC", "I-MISC"]]  # labels kept as given
    assert posts[0].image_path == str(folder / "1.jpg") and posts[0].image_id == "1"
    assert posts[0].caption == "a stadium" and posts[1].caption is None
    assert read_ritual(folder / "texts.json") == posts
    (folder / "captions.json").unlink()
    assert read_ritual(folder)[0].caption is None


def test_a_ritual_folder_has_a_data_hash_like_a_file(tmp_path: Path) -> None:
    from mmner.inference import dataset_record

    folder = ritual_folder(tmp_path)
    record = dataset_record("twitter2017_samples:train", folder)
    assert len(record["data_sha1"]) == 12 and record["variant"] == str(folder)
    (folder / "1.jpg").write_bytes(b"not the labelled data")
    assert dataset_record("x", folder)["data_sha1"] == record["data_sha1"]
    write(folder / "texts.json", (folder / "texts.json").read_text().replace("Mets", "Jets"))
    assert dataset_record("x", folder)["data_sha1"] != record["data_sha1"]


def test_ritual_errors(tmp_path: Path) -> None:
    folder = ritual_folder(tmp_path)
    write(folder / "texts.json", '{"id": "1", "image_id": "1.jpg", "tokens": ["a", "b"], "label": ["O"]}\n')
    with raises_at(folder / "texts.json", 1):
        read_ritual(folder)
    write(folder / "texts.json", '{"id": "1", "tokens": ["a"], "label": ["O"]}\n')
    write(folder / "captions.json", '{"id": "1"}\n')
    with raises_at(folder / "captions.json", 1):
        read_ritual(folder)


def test_read_posts_dispatch(tmp_path: Path) -> None:
    folder = ritual_folder(tmp_path)
    assert len(read_posts(folder)) == 2 and len(read_posts(folder / "texts.json")) == 2
    write_conll(tmp_path / "x.conll", sample_posts())
    assert len(read_posts(tmp_path / "x.conll")) == 4
    write(tmp_path / "p.json", '{"text": "hi"}\n')
    write(tmp_path / "p.jsonl", '{"text": "hi"}\n{"text": "yo"}\n')
    assert len(read_posts(tmp_path / "p.json")) == 1 and len(read_posts(tmp_path / "p.jsonl")) == 2


# ---------------------------------------------------------------- captions


def test_blip2_captions(tmp_path: Path) -> None:
    path = write(tmp_path / "c.txt", "108911.jpg :the chicago bears\r\n16_05_01_367.jpg :nolan k bushnell\n71406.jpg :\n\n")
    assert read_blip2_captions(path) == {"108911": "the chicago bears", "16_05_01_367": "nolan k bushnell", "71406": ""}
    assert read_captions(path) == read_blip2_captions(path)
    bad = write(tmp_path / "bad.txt", "1.jpg :ok\njust some text\n")
    with raises_at(bad, 2):
        read_blip2_captions(bad)


def test_json_captions(tmp_path: Path) -> None:
    lines = write(tmp_path / "c.jsonl", '{"image_id": "1.jpg", "caption": "a cat "}\n{"id": "2", "caption": "a dog"}\n')
    assert read_json_captions(lines) == {"1": "a cat", "2": "a dog"}
    mapping = write(tmp_path / "m.json", json.dumps({"1.jpg": "a cat", "17_06_1": "a dog"}))
    assert read_json_captions(mapping) == {"1": "a cat", "17_06_1": "a dog"}
    assert read_captions(mapping) == read_json_captions(mapping)
    bad = write(tmp_path / "bad.jsonl", '{"image_id": "1", "caption": "x"}\n{"image_id": "2"}\n')
    with raises_at(bad, 2):
        read_json_captions(bad)
    broken = write(tmp_path / "broken.jsonl", '{"image_id": "1", "caption": "x"}\n{"image_id": \n')
    with raises_at(broken, 2):
        read_json_captions(broken)


def test_owl_captions(tmp_path: Path) -> None:
    text = "imgid:797970###The picture shows a mailbox. \n\nIt is on a hill.\nimgid:O_3437.jpg###A couple.\n\n"
    path = write(tmp_path / "owl.txt", text)
    assert read_owl_captions(path) == {"797970": "The picture shows a mailbox. \n\nIt is on a hill.", "O_3437": "A couple."}
    assert read_captions(path) == read_owl_captions(path)
    before = write(tmp_path / "b.txt", "\nstray text\nimgid:1###x\n")
    with raises_at(before, 2):
        read_owl_captions(before)
    no_sep = write(tmp_path / "c.txt", "imgid:1###x\nimgid:2 no separator\n")
    with raises_at(no_sep, 2):
        read_owl_captions(no_sep)
    empty = write(tmp_path / "d.txt", "imgid:1###x\nimgid:2###  \n\n")
    with raises_at(empty, 2):
        read_owl_captions(empty)


# ---------------------------------------------------------------- TRC

TRC_HEADER = ('"tweet_id","user_id","tweet","text_is_represented","image_adds","image_adds_text_repr",'
              '"image_adds_text_notrepr","image_notadds_text_repr","image_notadds_text_notrepr"\n')


def test_read_trc(tmp_path: Path) -> None:
    rows = '"1","9","my \\"done\\" face, ok https://t.co/x","1","0","0","0","1","0"\r\n"2","9","hi","0","1","0","1","0","0"\n'
    records = read_trc(write(tmp_path / "trc.csv", TRC_HEADER + rows))
    assert records == [TrcRecord("1", 'my "done" face, ok https://t.co/x', 1, 0), TrcRecord("2", "hi", 0, 1)]


def test_trc_tweets_as_untagged_posts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """`trc:all`: the TRC tweets as posts without tags, tokenised as the Twitter files are, links dropped
    (their release has none); a tweet of links only is left out, and the log says so."""
    rows = ('"11","9","RT @ann: Paris, again! https://t.co/x","1","0","0","0","1","0"\n'
            '"12","9","https://t.co/y","0","1","0","1","0","0"\n')
    (tmp_path / "trc").mkdir()
    write(tmp_path / "trc" / "textimage-data.csv", TRC_HEADER + rows)
    monkeypatch.setenv("MMNER_DATA_DIR", str(tmp_path))
    with caplog.at_level("INFO", logger="mmner"):
        posts = load_dataset("trc:all")
    assert [(p.id, p.tokens, p.tags, p.image_id) for p in posts] == [
        ("11", ["RT", "@", "ann", ":", "Paris", ",", "again", "!"], None, None)]
    assert "1 of 2 tweets are only links and are left out" in caplog.text
    with pytest.raises(MmnerError, match=r"trc:train: unknown split 'train' .*trc \(split: all, no entity tags\)"):
        load_dataset("trc:train")


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ('"tweet_id","tweet"\n"1","x"\n', 1, "header lacks"),
        (TRC_HEADER + '"1","9","ok","1","0","0","0","1","0"\n"2","9","x","2","0","0","0","1","0"\n', 3, "0 or 1"),
        (TRC_HEADER + '"1","9","ok","1","0"\n', 2, "fields"),
        (TRC_HEADER + '"1","9","ok","1","0","0","0","1","0"\n"7","9"," ","1","0","0","0","1","0"\n', 3, "tweet 7 has no text"),
        ("", 1, "empty file"),
    ],
)
def test_trc_errors(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path / "trc.csv", text)
    with raises_at(path, line) as e:
        read_trc(path)
    assert problem in str(e.value)


# ---------------------------------------------------------------- data dir and names


def test_data_dir_explicit_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    monkeypatch.setenv("MMNER_DATA_DIR", str(other))
    assert data_dir(mine) == mine
    assert data_dir() == other
    monkeypatch.setenv("MMNER_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(MmnerError, match="MMNER_DATA_DIR=.*gone"):
        data_dir()
    with pytest.raises(MmnerError, match="nowhere"):
        data_dir(tmp_path / "nowhere")


def test_data_dir_defaults_and_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMNER_DATA_DIR", raising=False)
    work = tmp_path / "proj"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(datadir, "_repo_default", lambda: tmp_path / "repo" / ".." / "shared" / "data")
    with pytest.raises(MmnerError) as e:
        data_dir()
    message = str(e.value)
    assert "\n" not in message
    assert "Twitter-2015/2017" in message and "MMNER_DATA_DIR=/path/to/data" in message
    assert "twitter2015/{train,valid,test}.txt" in message
    (tmp_path / "shared" / "data").mkdir(parents=True)  # ../shared/data from the current folder
    assert data_dir() == (tmp_path / "shared" / "data").resolve()


def test_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    for ds in ("twitter2015", "twitter2017"):
        (root / ds).mkdir(parents=True)
        for split in ("train", "valid"):
            write_conll(root / ds / f"{split}.txt", sample_posts())
    (root / "captions").mkdir()
    write(root / "captions" / "blip2_twitter2017.txt", "1.jpg :x\n")
    monkeypatch.setenv("MMNER_DATA_DIR", str(root))

    assert resolve("twitter2017:train") == root / "twitter2017" / "train.txt"
    assert resolve("twitter2015:dev") == root / "twitter2015" / "valid.txt"
    assert resolve("twitter2015:train", data_dir=root) == root / "twitter2015" / "train.txt"
    existing = root / "twitter2017" / "valid.txt"
    assert resolve(str(existing)) == existing
    assert len(load_dataset("twitter2017:valid")) == 4
    with pytest.raises(MmnerError, match="unknown dataset 'twitter2099'.*twitter2015, twitter2017"):
        resolve("twitter2099:test")
    with pytest.raises(MmnerError, match="unknown split 'tset'.*train\\|valid\\|test"):
        resolve("twitter2015:tset")
    with pytest.raises(MmnerError, match=_re(str(root / "twitter2015" / "test.txt"))):
        resolve("twitter2015:test")
    with pytest.raises(MmnerError, match="no such file"):
        resolve(str(tmp_path / "missing.txt"))
    with pytest.raises(MmnerError, match="name a split"):
        resolve("twitter2017")

    assert caption_file("twitter2017:test") == root / "captions" / "blip2_twitter2017.txt"
    with pytest.raises(MmnerError, match="does not exist"):
        caption_file("twitter2015")
    with pytest.raises(MmnerError, match="unknown source"):
        caption_file("twitter2015", "clip")


# ---------------------------------------------------------------- real files


@needs_data
@pytest.mark.parametrize(
    "name, n", [("twitter2015:train", 4000), ("twitter2015:valid", 1000), ("twitter2015:test", 3257),
                ("twitter2017:train", 3373), ("twitter2017:valid", 723), ("twitter2017:test", 723)],
)
def test_real_conll(name: str, n: int, tmp_path: Path) -> None:
    path = resolve(name, DATA)
    posts = read_conll(path)
    assert len(posts) == n
    assert all(p.image_id and p.tokens and len(p.tags) == len(p.tokens) for p in posts)
    if name == "twitter2015:test":
        assert sum(t.startswith("B-") for p in posts for t in p.tags) == 5072
        write_conll(tmp_path / "copy.txt", posts)  # same bytes, up to the final blank line
        assert (tmp_path / "copy.txt").read_bytes().rstrip(b"\n") == path.read_bytes().rstrip(b"\n")
    if name == "twitter2017:train":
        assert sum(t == "\u200b" for p in posts for t in p.tokens) > 0  # odd tokens kept as they are


@needs_data
def test_real_captions() -> None:
    blip15 = read_blip2_captions(caption_file("twitter2015", data_dir=DATA))
    blip17 = read_blip2_captions(caption_file("twitter2017", data_dir=DATA))
    assert (len(blip15), len(blip17)) == (8288, 4819)
    assert sum(c == BLANK_IMAGE_CAPTION for c in blip17.values()) == 358
    owl = read_owl_captions(caption_file("twitter2017", "owl", data_dir=DATA))
    assert len(owl) == 9997 and all(c and not c.startswith("imgid:") for c in owl.values())


@needs_data
def test_real_ritual_samples() -> None:
    for ds in ("twitter2015", "twitter2017"):
        # each sample set names the fourth type as its dataset does
        dataset_types = {t[2:] for p in load_dataset(f"{ds}:test", DATA) for t in p.tags if t != "O"}
        for split in ("train", "dev", "test"):
            folder = DATA / "images" / f"{ds}_samples" / split
            posts = read_posts(folder)
            assert len(posts) == 5
            for p in posts:
                assert p.image_path and Path(p.image_path).is_file() and p.caption
                assert len(p.tags) == len(p.tokens)
                assert {t[2:] for t in p.tags if t != "O"} <= dataset_types
    assert load_dataset("twitter2017_samples:dev", DATA)[0].image_path.endswith("dev/1.jpg")


@needs_data
def test_real_trc() -> None:
    records = read_trc(DATA / "trc" / "textimage-data.csv")
    assert len(records) == 4471
    assert sum(r.image_adds for r in records) == 1977
