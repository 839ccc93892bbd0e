"""Word alignment for every tokenizer family: tiny byte-level BPE (RoBERTa-style "Ġ") and SentencePiece
(Metaspace "▁") tokenizers trained here with `tokenizers`, next to the WordPiece of conftest."""

from __future__ import annotations

import pytest

from mmner.data.post import Post
from mmner.errors import MmnerError
from mmner.tagging.alignment import SpecialTokens, make_windows, word_pieces, word_prefix
from mmner.text.encoders import load_tokenizer

CORPUS = [
    "Obama visits Paris today with Merkel",
    "Messi meets the Yankees in London",
    "NASA launches from Texas again 🚀",
    "Google and the UN at the Olympics in Rome",
    "Adele sings in Paris, London and Rome!",
]
WORDS = ["Obama", "visits", "Paris", "today", "🚀", ",", "Yankees", "2017", "#NASA", "@UN"]
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
            "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}


def byte_level(add_prefix_space: bool = False):
    """RoBERTa-style: byte-level BPE, `<s> A </s>` / `<s> A </s></s> B </s>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIALS)


def sentencepiece(prepend_scheme: str = "always"):
    """XLM-R-style: Unigram over a Metaspace pre-tokenizer, `<s> A </s>` / `<s> A </s></s> B </s>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend_scheme)
    backend.decoder = decoders.Metaspace(prepend_scheme=prepend_scheme)
    trainer = trainers.UnigramTrainer(vocab_size=150, unk_token="<unk>", show_progress=False,
                                      special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    backend.train_from_iterator(CORPUS * 4, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIALS)


# (tokenizer factory, its word-initial marker)
FAMILIES = {
    "byte-level-bpe": (byte_level, "Ġ"),
    "byte-level-bpe-prefix-space": (lambda: byte_level(add_prefix_space=True), "Ġ"),
    "sentencepiece": (sentencepiece, "▁"),
    "sentencepiece-never-prepends": (lambda: sentencepiece("never"), "▁"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    make, marker = FAMILIES[request.param]
    return make(), marker


def first_tokens(tokenizer, pieces: list[list[int]]) -> list[str]:
    return tokenizer.convert_ids_to_tokens([p[0] for p in pieces])


def test_every_word_starts_with_the_word_initial_marker(family):
    tokenizer, marker = family
    pieces = word_pieces(tokenizer, WORDS, 22)
    assert len(pieces) == len(WORDS) and all(pieces)
    firsts = first_tokens(tokenizer, pieces)
    assert all(t.startswith(marker) for t in firsts), firsts
    # Words are tokenised as in running text: the pieces joined are the post's text, encoded whole.
    text = tokenizer(" " + " ".join(WORDS), add_special_tokens=False)["input_ids"]
    assert [i for p in pieces for i in p] == text


def test_byte_level_words_after_the_first_are_the_ones_in_running_text():
    tokenizer = byte_level()
    assert word_prefix(tokenizer) == " "
    pieces = word_pieces(tokenizer, ["Obama", "visits", "Paris"], 22)
    assert tokenizer.convert_ids_to_tokens(pieces[2]) == ["ĠParis"]  # a merge the corpus teaches
    assert tokenizer.convert_ids_to_tokens(tokenizer("Paris", add_special_tokens=False)["input_ids"]) != ["ĠParis"]
    text = tokenizer("Obama visits Paris", add_special_tokens=False)["input_ids"]
    assert pieces[1] + pieces[2] == text[len(text) - len(pieces[1]) - len(pieces[2]):]


@pytest.mark.parametrize("max_length", [8, 12, 24])
def test_long_post_windows_as_for_wordpiece(family, max_length):
    tokenizer, marker = family
    words = (" ".join(CORPUS)).split() * 3
    pieces = word_pieces(tokenizer, words, max_length - 2)
    special = SpecialTokens.of(tokenizer)
    assert (special.prefix, special.suffix, special.middle) == ([0], [2], [2, 2])
    windows = make_windows(special, pieces, max_length)
    assert len(windows) > 1
    owned = sorted(w for window in windows for w, _ in window.owned)
    assert owned == list(range(len(words)))  # one tag per word: none lost, none twice
    for window in windows:
        assert len(window.input_ids) <= max_length
        assert window.input_ids[0] == 0 and window.input_ids[-1] == 2
        for word, pos in window.owned:
            assert window.input_ids[pos] == pieces[word][0]
            assert tokenizer.convert_ids_to_tokens(window.input_ids[pos]).startswith(marker)
    if max_length == 24:
        middle = windows[1]
        last_word, last_pos = middle.owned[-1]
        assert middle.owned[0][1] > 1  # context words before the owned ones ...
        assert last_pos + len(pieces[last_word]) < len(middle.input_ids) - 1  # ... and after them


def test_empty_and_overlong_words_still_get_one_piece(family):
    tokenizer, _ = family
    words = ["", "x" * 60, "ok"]
    pieces = word_pieces(tokenizer, words, 6)
    assert len(pieces) == 3 and all(1 <= len(p) <= 6 for p in pieces)
    assert len(pieces[1]) == 6
    windows = make_windows(SpecialTokens.of(tokenizer), pieces, 8)
    assert sorted(w for window in windows for w, _ in window.owned) == [0, 1, 2]


def test_wordpiece_is_unchanged(tiny_encoder):
    tokenizer = load_tokenizer(tiny_encoder)
    assert word_prefix(tokenizer) == ""
    words = ["Paris", "today", "\ufe0f", "#nasa"]
    pieces = word_pieces(tokenizer, words, 22)
    alone = tokenizer(words, add_special_tokens=False)["input_ids"]  # each word on its own, as before
    assert pieces == [ids or [tokenizer.unk_token_id] for ids in alone]
    assert [tokenizer.convert_ids_to_tokens(p) for p in pieces] == [
        ["p", "##a", "##r", "##i", "##s"], ["today"], ["[UNK]"], ["#", "n", "##a", "##s", "##a"]]


def test_a_dropped_word_without_an_unknown_token_is_an_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[CLS]": 2, "[SEP]": 3}))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert word_pieces(tokenizer, ["a", "b"], 4) == [[0], [1]]
    with pytest.raises(MmnerError, match=r"word 1 \(''\)"):
        word_pieces(tokenizer, ["a", "", "b"], 4)


def test_bert_crf_on_a_byte_level_encoder(tmp_path):
    """End to end through a model: a RoBERTa-style encoder directory, loaded as any other."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    from mmner.models.bert_crf import BertCRF, BertCRFParams
    from mmner.tagging.vocab import LabelVocab

    tokenizer = byte_level()
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=26, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = BertCRF.create(BertCRFParams(name="bert-crf", encoder=str(tmp_path), max_length=24),
                           LabelVocab(["PER", "LOC"]), [])
    model.eval()
    words = (" ".join(CORPUS)).split()
    post = Post("p1", words, ["O"] * len(words))
    item = model.featurize(post)
    assert len(item["windows"]) > 1
    firsts = [model.tokenizer.convert_ids_to_tokens(w.input_ids[pos]) for w in item["windows"] for _, pos in w.owned]
    assert len(firsts) == len(words) and all(t.startswith("Ġ") for t in firsts)
    with torch.no_grad():
        tags = model.decode(model.collate([item]))
    assert len(tags[0]) == len(words)
