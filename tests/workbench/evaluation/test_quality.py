"""n-gram quality: known answers computed by hand."""

from __future__ import annotations

import pytest

from workbench.errors import InvalidArgumentError
from workbench.evaluation.quality import mean_quality, quality, words


def test_one_repeated_four_gram():
    # a b c d | b c d a | c d a b | d a b c | a b c d -> 5 four-grams, 4 distinct.
    assert quality("a b c d a b c d", n=4) == pytest.approx(1 - 1 / 5)


def test_all_distinct_scores_one():
    assert quality("the quick brown fox jumps over the lazy dog") == 1.0


def test_one_word_repeated():
    # 6 words -> 3 four-grams, all "the the the the": 2 repeats of 3.
    assert quality("the the the the the the") == pytest.approx(1 / 3)


@pytest.mark.parametrize("text", ["", "   ", "one", "one two three", "!!! ??? ..."])
def test_fewer_than_n_words_scores_one(text):
    assert quality(text, n=4) == 1.0


def test_unigrams_and_bigrams():
    # n=1: 5 words, 3 distinct (a, b, c) -> 1 - 2/5.
    assert quality("a b a c a", n=1) == pytest.approx(0.6)
    # n=2: (a b) (b a) (a b) (b a) -> 4 bigrams, 2 distinct -> 1 - 2/4.
    assert quality("a b a b a", n=2) == pytest.approx(0.5)
    # n=2 on two words: one bigram, nothing repeated.
    assert quality("a b", n=2) == 1.0


def test_case_and_punctuation_are_ignored():
    assert quality("Hello world. hello, WORLD!", n=2) == pytest.approx(quality("a b a b", n=2))
    assert quality("Hello world. hello, WORLD!", n=2) == pytest.approx(1 - 1 / 3)
    assert words("Don’t PANIC, don't panic!") == ["don't", "panic", "don't", "panic"]


def test_default_n_is_four():
    text = "one two three four one two three four five"
    assert quality(text) == quality(text, n=4) == pytest.approx(1 - 1 / 6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", None, True])
def test_n_must_be_a_positive_integer(bad):
    with pytest.raises(InvalidArgumentError, match="positive integer"):
        quality("a b c d e", n=bad)
    with pytest.raises(InvalidArgumentError, match="positive integer"):
        mean_quality(["a b c d e"], n=bad)


def test_text_must_be_a_string():
    with pytest.raises(TypeError, match="string"):
        quality(None)
    with pytest.raises(TypeError, match="string"):
        quality(["a", "b"])


def test_mean_quality():
    assert mean_quality(["a b c d a b c d", "the the the the the the", "short"]) == \
        pytest.approx((0.8 + 1 / 3 + 1.0) / 3)
    assert mean_quality(("a b a b a",), n=2) == pytest.approx(0.5)
    assert mean_quality(text for text in ["x y", "x x x"]) == 1.0


def test_mean_quality_errors():
    with pytest.raises(InvalidArgumentError, match="at least one"):
        mean_quality([])
    with pytest.raises(TypeError, match="not one string"):
        mean_quality("a b c d a b c d")
    with pytest.raises(TypeError, match="string"):
        mean_quality(["ok", 3])
