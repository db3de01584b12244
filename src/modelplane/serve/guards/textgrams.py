"""The n-gram analyzers of the injection classifiers, in plain Python.

They reproduce scikit-learn's ``char_wb`` and ``word`` analyzers exactly (the test suite checks
it), so serving needs no scikit-learn and no sparse matrices: a chat prompt is scored in tens of
microseconds.
"""

from __future__ import annotations

import re

_WHITE_SPACES = re.compile(r"\s\s+")
WORD_TOKEN = r"(?u)\b\w+\b"
WORD_RX = re.compile(WORD_TOKEN)


def char_wb_ngrams(text: str, lo: int, hi: int) -> list[str]:
    """scikit-learn's ``char_wb`` analyzer (lowercased text in): n-grams inside space-padded words."""
    out: list[str] = []
    for w in _WHITE_SPACES.sub(" ", text).split():
        w = " " + w + " "
        size = len(w)
        for n in range(lo, min(hi, size - 1) + 1):
            out += [w[i : i + n] for i in range(size - n + 1)]
        if hi >= size:  # a word no longer than the n-gram counts once, whole
            out.append(w)
    return out


def word_ngrams(text: str, lo: int, hi: int) -> list[str]:
    """scikit-learn's ``word`` analyzer with ``WORD_TOKEN`` (lowercased text in)."""
    tokens = WORD_RX.findall(text)
    out: list[str] = []
    for n in range(lo, min(hi, len(tokens)) + 1):
        out += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return out
