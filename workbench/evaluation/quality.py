"""Output quality as n-gram diversity: does a completion repeat itself?

Steering a model hard (large multipliers, ablating too many neurons) often degrades it into
loops ("the the the ...", one sentence over and over). :func:`quality` measures that
cheaply, with no model:

    quality = 1 - repeated n-grams / total n-grams

over the text's **words**: lowercase runs of letters, digits and underscores, optionally
joined by one apostrophe (``re.findall(r"\\w+(?:'\\w+)?", text.lower())`` after curly
apostrophes become straight ones), so "Don't", "don’t" and "DON'T" are one word and
punctuation is ignored ("dog." and "dog" are the same word). The n-grams are the
``len(words) - n + 1`` runs of ``n`` consecutive words; "repeated n-grams" is total minus
distinct, i.e. every occurrence of an n-gram after its first counts once. A text with no
repeated n-gram scores 1.0; "the the the the the the" with ``n=4`` has 3 n-grams, 1
distinct, and scores 1/3. A text with fewer than ``n`` words has no n-grams and scores 1.0
(short is not degenerate). Only space-separated languages are measured meaningfully:
Chinese or Japanese text without spaces is one long "word" per run of characters.

Example:
    >>> from workbench.evaluation.quality import mean_quality, quality
    >>> quality("a b c d a b c d")
    0.8
    >>> quality("The cat sat on the mat.")
    1.0
    >>> mean_quality(["a b c d a b c d", "one two"])
    0.9
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgumentError

_WORD = re.compile(r"\w+(?:'\w+)?")


def words(text: str) -> list[str]:
    """The lowercase words of ``text`` that :func:`quality` counts.

    Example:
        >>> words("Don’t PANIC, don't panic!")
        ["don't", 'panic', "don't", 'panic']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"n must be a positive integer (the n-gram length), not {n!r}")
    return n


def quality(text: str, n: int = 4) -> float:
    """1 - (repeated n-grams / total n-grams) over the lowercase words of ``text``.

    In (0, 1]: 1.0 means no ``n``-word sequence occurs twice; values near 0 mean the text
    is one phrase repeated. Texts with fewer than ``n`` words score 1.0.

    Raises:
        TypeError: ``text`` is not a string.
        InvalidArgumentError: ``n`` is not a positive integer.

    Example:
        >>> quality("the the the the the the")   # 3 four-grams, 1 distinct
        0.3333333333333333
        >>> quality("the the the", n=1)          # 3 unigrams, 1 distinct
        0.3333333333333333
        >>> quality("too short")
        1.0
    """
    _check_n(n)
    tokens = words(text)
    total = len(tokens) - n + 1
    if total < 1:
        return 1.0
    distinct = len({tuple(tokens[i:i + n]) for i in range(total)})
    return distinct / total  # = 1 - (total - distinct) / total, without rounding error


def mean_quality(texts: Iterable[str], n: int = 4) -> float:
    """Mean of :func:`quality` over ``texts``.

    Raises:
        TypeError: ``texts`` is a single string, or holds something that is not a string.
        InvalidArgumentError: ``texts`` is empty, or ``n`` is not a positive integer.

    Example:
        >>> mean_quality(["all words differ here", "no no no no no"], n=2)
        0.625
    """
    _check_n(n)
    if isinstance(texts, str):
        raise TypeError("mean_quality takes a list of texts, not one string; "
                        "wrap it in a list or use quality")
    scores = [quality(text, n) for text in texts]
    if not scores:
        raise InvalidArgumentError("mean_quality needs at least one text; got none")
    return sum(scores) / len(scores)
