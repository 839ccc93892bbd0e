"""Emoji of several code points are one token of a new post's raw text (Python, predict, HTTP all
tokenise with `readers.tokenize_post`), while dataset files keep the releases' own split."""

from __future__ import annotations

import json

import pytest

from mmner.api import entity_records, make_post, token_offsets
from mmner.data.readers import read_conll, read_jsonl, tokenize, tokenize_post

SEQUENCES = {
    "zwj": "👩\u200d🚀",  # woman astronaut
    "family": "👨\u200d👩\u200d👧",
    "rainbow flag": "🏳\ufe0f\u200d🌈",
    "flag": "🇺🇸",
    "tag flag": "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # England
    "keycap": "1\ufe0f\u20e3",
    "hash keycap": "#\ufe0f\u20e3",
    "skin tone": "👍🏽",
    "skin tone zwj": "🧑🏾\u200d💻",
    "presentation": "❤\ufe0f",
}


@pytest.mark.parametrize("emoji", SEQUENCES.values(), ids=SEQUENCES.keys())
def test_a_sequence_is_one_token(emoji):
    text = f"Launch day {emoji}, at NASA {emoji}{emoji} #CapeCanaveral!{emoji}"
    tokens = tokenize_post(text)
    assert tokens == ["Launch", "day", emoji, ",", "at", "NASA", emoji, emoji, "#", "CapeCanaveral", "!", emoji]
    assert [text[a:b] for a, b in token_offsets(text, tokens)] == tokens
    assert len(tokenize(text)) > len(tokens)  # the release style splits every code point


def test_neighbours_and_runs():
    assert tokenize_post("🇺🇸🇬🇧🇫") == ["🇺🇸", "🇬🇧", "🇫"]  # flags pair up; a lone indicator stays alone
    assert tokenize_post("👍🏽👍🏽!") == ["👍🏽", "👍🏽", "!"]
    assert tokenize_post("RT @Messi: visit #Paris today 🙌🏾 https://t.co/AbC?x=1.") == [
        "RT", "@", "Messi", ":", "visit", "#", "Paris", "today", "🙌🏾", "https://t.co/AbC?x=1", "."]
    # single code points and everything else: exactly the release style
    for text in ["Half 😈 day. 💞", "café नमस्ते 3.5 1,000 2nd", "a\u200bb  \n c", "There's &gt; 🏾 \u200d"]:
        assert tokenize_post(text) == tokenize(text)
    # an emoji inside a URL stays in the URL
    assert tokenize_post("see http://x.co/a👩\u200d🚀 now") == ["see", "http://x.co/a👩\u200d🚀", "now"]


def test_new_posts_in_python_predict_and_http_keep_the_sequence(tmp_path):
    text = "Astronaut 👩\u200d🚀 Sally Ride of the 🇺🇸 flies 👍🏽"
    tokens = ["Astronaut", "👩\u200d🚀", "Sally", "Ride", "of", "the", "🇺🇸", "flies", "👍🏽"]
    assert make_post(text).tokens == tokens  # Tagger and the HTTP service build posts with make_post
    posts = tmp_path / "posts.jsonl"
    posts.write_text(json.dumps({"id": "a", "text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_jsonl(posts)[0].tokens == tokens  # predict's JSON-lines parser
    tags = ["O", "O", "B-PER", "I-PER", "O", "O", "B-LOC", "O", "O"]
    ents = entity_records(tokens, tags, text)
    assert [(e["text"], e["start"], e["end"]) for e in ents] == [("Sally Ride", 2, 4), ("🇺🇸", 6, 7)]
    assert all(text[e["char_start"] : e["char_end"]] == e["text"] for e in ents)


def test_dataset_conll_keeps_its_own_tokens(tmp_path):
    conll = tmp_path / "test.txt"
    conll.write_text("IMGID:1\nHalf\tO\n🙌\tO\n🏾\tO\n👩\tO\n\u200d\tO\n🚀\tO\n\n", encoding="utf-8")
    assert read_conll(conll)[0].tokens == ["Half", "🙌", "🏾", "👩", "\u200d", "🚀"]
