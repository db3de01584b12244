"""Language-agnostic shape features of a prompt, for the text-only injection classifier.

Measured and not shipped: ``InjectionClassifier.SHAPE`` says why, and ``benchmarks/guard_eval.py
--cv`` reproduces the figures. The model format keeps them so a model that uses them can be read.

N-grams read words; these read the layout an attack tends to have whatever its language: text in
two scripts at once (an instruction in one language slipped into another), fake dialogue and
quoted instruction blocks (colons, quotes, many lines), lines opening with an order or a role
switch, and length (overload and many-shot attacks are long, everyday questions short). Each
value lies in [0, 1] and is multiplied by ``SCALE`` so that the logistic regression's L2 penalty
does not drown eight dense features beside tens of thousands of TF-IDF terms (scale 3 did better
than 1 in grouped CV on the training split).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter

ALL_FEATURES = (
    "latin_share",
    "mixed_scripts",
    "log_length",
    "newlines",
    "quotes",
    "imperative_lines",
    "question_mark",
    "colons",
)
SCALE = 3.0

_QUOTE = re.compile(r"[\"'`“”«»「」]")
_IMPERATIVE_LINE = re.compile(
    r"^\s*(ignore|forget|disregard|you|now|write|print|say|output|respond|answer|pretend|act|repeat|tell|translate|from now)\b",
    re.IGNORECASE | re.MULTILINE,
)


@functools.lru_cache(maxsize=65536)
def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "?"


def shape_features(text: str, names: tuple[str, ...] = ALL_FEATURES) -> tuple[float, ...]:
    """The features ``names`` (of ``ALL_FEATURES``) of ``text`` (raw, not lowercased), each scaled by ``SCALE``."""
    scripts = Counter(_script(c) for c in text if c.isalpha())
    letters = max(sum(scripts.values()), 1)
    in_use = sum(1 for n in scripts.values() if n / letters > 0.05)
    values = {
        "latin_share": scripts.get("LATIN", 0) / letters,
        "mixed_scripts": 1.0 if in_use > 1 else 0.0,
        "log_length": math.log1p(len(text)) / 8,
        "newlines": min(text.count("\n"), 20) / 20,
        "quotes": min(len(_QUOTE.findall(text)), 10) / 10,
        "imperative_lines": min(len(_IMPERATIVE_LINE.findall(text)), 5) / 5,
        "question_mark": 1.0 if "?" in text or "\uff1f" in text else 0.0,  # ASCII or fullwidth
        "colons": min(text.count(":"), 10) / 10,
    }
    return tuple(SCALE * min(values[n], 1.0) for n in names)
