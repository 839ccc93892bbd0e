import random

import pytest

from mmner.tagging.alignment import SpecialTokens, make_windows, word_pieces
from mmner.text.encoders import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return load_tokenizer(tiny_encoder)


def random_words(rng: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(n)]


@pytest.mark.parametrize("max_length", [8, 12, 24, 64])
def test_every_word_owned_exactly_once(tokenizer, max_length):
    rng = random.Random(max_length)
    for _ in range(50):
        words = random_words(rng, rng.randint(1, 40))
        pieces = word_pieces(tokenizer, words, max_length - 2)
        windows = make_windows(SpecialTokens.of(tokenizer), pieces, max_length)
        owned = sorted(w for window in windows for w, _ in window.owned)
        assert owned == list(range(len(words)))
        for window in windows:
            assert len(window.input_ids) <= max_length
            for word, pos in window.owned:
                # the owned position holds the word's first sub-token
                assert window.input_ids[pos] == pieces[word][0]


def test_long_post_is_split_not_cut(tokenizer):
    words = ["paris"] * 30  # 5 pieces each with the tiny char vocabulary: far past 24 tokens
    pieces = word_pieces(tokenizer, words, 22)
    windows = make_windows(SpecialTokens.of(tokenizer), pieces, 24)
    assert len(windows) > 1
    assert sum(len(w.owned) for w in windows) == 30


def test_windows_have_context_on_both_sides(tokenizer):
    words = [c for c in "abcdefghijklmnopqrstuvwxyz"]  # one piece per word
    windows = make_windows(SpecialTokens.of(tokenizer), word_pieces(tokenizer, words, 14), 16)
    middle = windows[1]
    first_owned = middle.owned[0][1]
    before = len(SpecialTokens.of(tokenizer).prefix)
    assert first_owned > before  # context words precede the owned ones


def test_dropped_and_overlong_words_still_get_a_piece(tokenizer):
    words = ["\ufe0f", "x" * 100, "ok"]
    pieces = word_pieces(tokenizer, words, 6)
    assert pieces[0] == [tokenizer.unk_token_id]
    assert len(pieces[1]) == 6
    windows = make_windows(SpecialTokens.of(tokenizer), pieces, 8)
    assert sorted(w for window in windows for w, _ in window.owned) == [0, 1, 2]


def test_special_tokens_read_off_the_tokenizer(tokenizer):
    special = SpecialTokens.of(tokenizer)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert (special.prefix, special.suffix, special.middle) == ([cls], [sep], [sep])


def test_word_pieces_are_cached_per_word_and_equal_a_fresh_tokenisation(tokenizer, monkeypatch):
    """Each word is tokenised alone, so its pieces are kept per tokenizer: a repeated word is not
    tokenised again, the cache is emptied when full, and the ids are always those of a fresh call."""
    from mmner.tagging import alignment

    first, second, more = ["paris", "is", "paris", "nice"], ["nice", "is"], ["rome", "oslo", "lima", "kyiv"]
    prefix = alignment.word_prefix(tokenizer)
    fresh = {w: ids or [tokenizer.unk_token_id] for w, ids in
             zip(first + more, tokenizer([prefix + w for w in first + more], add_special_tokens=False)["input_ids"])}
    monkeypatch.setattr(alignment, "_CACHE_WORDS", 6)
    alignment._PIECES.pop(tokenizer, None)
    calls: list[list[str]] = []
    real_call = type(tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        if self is tokenizer:
            calls.append(list(text))
        return real_call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", counting)
    assert word_pieces(tokenizer, first, 50) == [fresh[w] for w in first]
    assert calls == [[prefix + w for w in ["paris", "is", "nice"]]]  # each new word once
    assert word_pieces(tokenizer, second, 50) == [fresh[w] for w in second] and len(calls) == 1  # all cached
    assert word_pieces(tokenizer, more, 50) == [fresh[w] for w in more]  # 3 + 4 words > 6: emptied, then these
    assert sorted(alignment._PIECES[tokenizer]) == sorted(more) and len(calls) == 2
