"""The n-gram analyzers of the injection classifiers, in plain Python.

They reproduce scikit-learn's ``char_wb`` and ``word`` analyzers exactly (the test suite checks
it), so serving needs no scikit-learn and no sparse matrices: a chat prompt is scored in tens of
microseconds.
"""

from __future__ import annotations

import functools
import re
import unicodedata

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


# Folding to Latin letters, so one character n-gram block reads a loanword ("password", "admin",
# "instructions") alike in the scripts of the translated attacks: Hindi पासवर्ड -> "paasvrdd",
# Russian инструкции -> "instruktsii", Korean 비밀번호 -> "bimilbeonho". Cyrillic, Greek and Arabic
# go through small tables; Devanagari, Bengali, kana, Hangul syllables and Thai through the
# letter's Unicode name (its romanised sound); Latin letters lose their accents; anything else
# (Han characters, punctuation) stays as it is. It needs only the standard library, and it is a
# fixed function: the model's terms are grams of its output, so changing it means retraining.
# Each table: the letters, then their Latin spellings separated by spaces ("_" for none).
_TABLE_SOURCES = (
    (
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяіїєґ",
        "a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch _ y _ e yu ya i yi ye g",
    ),
    ("αβγδεζηθικλμνξοπρσςτυφχψω", "a v g d e z i th i k l m n x o p r s s t y f ch ps o"),
    (
        "ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىي",
        "' a a w i y a b h t th j h kh d dh r z s sh s d t z ' gh f q k l m n h w a y",
    ),
)
_TABLES: dict[str, str] = {
    c: ("" if v == "_" else v)
    for letters, spellings in _TABLE_SOURCES
    for c, v in zip(letters, spellings.split(" "), strict=True)
}
_NAMED_SCRIPTS = frozenset({"HANGUL", "THAI", "HIRAGANA", "KATAKANA", "DEVANAGARI", "BENGALI"})
_THAI_MARKS = frozenset({"MAI", "THANTHAKHAT", "NIKHAHIT", "YAMAKKAN"})


@functools.lru_cache(maxsize=65536)
def _fold_char(ch: str) -> str:
    if ch < "\x80":
        return ch
    if ch in _TABLES:
        return _TABLES[ch]
    parts = unicodedata.name(ch, "").split()
    if len(parts) < 3 or parts[0] not in _NAMED_SCRIPTS:
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if base and all(c < "\x80" for c in base):
            return base
        return _fold_char(base) if len(base) == 1 and base != ch else ch
    script, kind, rest = parts[0], parts[1], parts[2:]
    if script == "HANGUL":
        return rest[-1].lower() if kind == "SYLLABLE" else ch
    if script in ("HIRAGANA", "KATAKANA"):
        return rest[-1].lower() if kind == "LETTER" else ch
    if script == "THAI":
        if kind != "CHARACTER":
            return ch
        if rest[0] in _THAI_MARKS or rest[0].startswith("MAI"):
            return ""  # tone and repetition marks
        if rest[0] == "SARA":
            return rest[1].lower() if len(rest) > 1 else ch
        if len(rest) == 2:  # a consonant's name: its sound and a vowel, then a word ("KO KAI")
            return (rest[0][:-1] or rest[0]).lower()
        return rest[0].lower()
    # Devanagari and Bengali
    if kind == "SIGN" and rest[-1] in ("VIRAMA", "NUKTA"):
        return ""
    if (
        kind == "LETTER"
        and len(rest) == 1
        and len(rest[0]) >= 2
        and rest[0][-1] == "A"
        and rest[0][-2] not in "AEIOU"
    ):
        return rest[0][:-1].lower()  # a consonant without its inherent a ("KA" -> k)
    if kind in ("LETTER", "VOWEL"):
        return rest[-1].lower()
    return ch


class _FoldTable(dict[int, str]):
    """``str.translate`` table filled on first sight of each code point, so folding runs in C for
    the characters already seen; it stops growing at ``_FoldTable.LIMIT`` entries (text made of
    many distinct rare characters is then folded through ``_fold_char``'s own cache)."""

    LIMIT = 65536

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code))
        if len(self) < self.LIMIT:
            self[code] = folded
        return folded


_FOLD_TABLE = _FoldTable()


def fold_to_latin(lowered: str) -> str:
    """``lowered`` (lowercased text) with its letters folded to Latin letters (see above)."""
    return lowered.translate(_FOLD_TABLE)
