"""Undo the encodings that smuggle an instruction past a text filter, so it can be scored in clear.

Token-smuggling attacks hide the order in base64, hex, binary, Morse, ROT13 or another Caesar
shift, reversed text, leetspeak, letters spaced out one by one, invisible Unicode tag characters,
zero-width characters splitting a word, or look-alike letters of another script. An n-gram model
sees none of the words. ``deobfuscate`` returns the text with each such span replaced by what it
decodes to (``None`` when nothing decodes), and the input filter scores that view as well
(``InjectionClassifier.DEOBFUSCATE``). It needs only the standard library and is deterministic.

A span counts as decoded only when the result reads as text: valid UTF-8 made mostly of letters
and spaces (base64, hex, binary), or, for transforms that map letters to letters (ROT13, Caesar,
reversal, atbash), when the result has clearly more common English words than the span itself. So
an ordinary hash, UUID or English sentence is left alone, and the cost on a chat prompt without
anything to decode is a handful of regex scans.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import unicodedata
from collections.abc import Callable

# Zero-width and formatting characters used to split a word ("pass\u200bword") or hide text.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# Unicode tag characters (U+E0020..U+E007E) mirror printable ASCII and render as nothing.
_TAGS = re.compile("[\U000e0020-\U000e007e]+")
# Look-alike letters of Cyrillic and Greek inside an otherwise Latin word ("p\u0430ssword" with a Cyrillic a).
_CONFUSABLES = str.maketrans(
    "аеорсухіјѕԁԛԝАВЕКМНОРСТХІЈЅαοιρτνκΑΒΕΗΙΚΜΝΟΡΤΧΥΖ",
    "aeopcyxijsdqwABEKMHOPCTXIJSaoiptvkABEHIKMNOPTXYZ",
)
_MIXED_WORD = re.compile(r"\b(?=\w*[a-zA-Z])(?=\w*[\u0370-\u03ff\u0400-\u04ff])\w+\b")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"(?<![0-9A-Za-z])(?:(?:0x|\\x)?[0-9a-fA-F]{2}[\s:,]?){8,}(?![0-9A-Za-z])")
_BINARY = re.compile(r"(?<![01])(?:[01]{8}\s?){4,}(?![01])")
_MORSE = re.compile(r"(?<![\w.-])(?:[.\-]{1,7}(?:\s*/\s*|\s+)){4,}[.\-]{1,7}(?![\w.-])")
_SPACED = re.compile(r"(?<!\w)(?:\w[ .\-_*]){4,}\w(?!\w)")
_LEET_WORD = re.compile(r"\b(?=\w*[a-zA-Z])(?=\w*[0134578@$])[\w@$]{4,}\b")
_LATIN_SPAN = re.compile(r"[A-Za-z][A-Za-z ,.'!?-]{14,}[A-Za-z.?!]")
_WORD = re.compile(r"[a-z]+")
_LONG_WORD = re.compile(r"[a-zA-Z]{3,}")
_PROBE_WORDS = 30
# At most this many Latin spans per prompt are tried for letter transforms (each try is 28 cheap
# probes): enough for any smuggled sentence, and a long document in another Latin-script
# language stays cheap.
_MAX_LETTER_SPANS = 8
# Fullwidth forms, enclosed and mathematical alphanumerics: letters in disguise, folded by NFKC.
_STYLED = re.compile(
    "[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\u24b6-\u24e9\U0001d400-\U0001d7ff\U0001f130-\U0001f189]+"
)

_MORSE_CODE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g", "....": "h",
    "..": "i", ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n", "---": "o", ".--.": "p",
    "--.-": "q", ".-.": "r", "...": "s", "-": "t", "..-": "u", "...-": "v", ".--": "w", "-..-": "x",
    "-.--": "y", "--..": "z", "-----": "0", ".----": "1", "..---": "2", "...--": "3", "....-": "4",
    ".....": "5", "-....": "6", "--...": "7", "---..": "8", "----.": "9", ".-.-.-": ".", "--..--": ",",
    "..--..": "?", ".----.": "'", "-.-.--": "!", "-..-.": "/", "---...": ":", ".-..-.": '"',
}  # fmt: skip
_LEET = (str.maketrans("0134578@$", "oieastbas"), str.maketrans("0134578@$", "oleastbas"))
# Frequent English words (general knowledge, not drawn from the data): a span "reads as English"
# when enough of its words are here.
COMMON_WORDS = frozenset(
    """the be to of and a in that have i it for not on with he as you do at this but his by from
    they we say her she or an will my one all would there their what so up out if about who get
    which go me when make can like time no just him know take people into year your good some
    could them see other than then now look only come its over think also back after use two how
    our work first well way even new want because any these give day most us is are was were
    been has had did does said tell me please ignore previous instructions instruction password
    secret key prompt system reveal print show write say output answer forget rules all user
    admin mode say state capital city country name what where why who which whose whom question
    questions text message below above following earlier prior""".split()  # noqa: SIM905 (a word list reads better as text)
)
# Frequent short words of the other Latin-script languages of the attacks (Spanish, French,
# Italian, Portuguese, German, Indonesian, Tagalog, Turkish): a span full of them is prose in that
# language, not a cipher, and is not tried against the 28 letter transforms.
FUNCTION_WORDS = frozenset(
    """que de la el en los las del por para con una como mas pero sus se lo le al es un y o les des
    est une pour qui dans par sur pas avec vous nous ce il elle et du au che della per sono non
    gli come questo di da nel nao um uma com dos das mais voce em os as do na no der die das und
    ist nicht mit sie ich ein eine den von zu auf fur dem ist wie yang dan di ini itu dengan
    untuk dari tidak apa bisa saya anda ang mga sa ng na ay ko mo at kung ito ba bir ve bu icin
    ile da ne mi cok""".split()  # noqa: SIM905 (a word list reads better as text)
)
_ANY_WORD = re.compile(r"[a-zA-Z]+")
_ALPHA = "abcdefghijklmnopqrstuvwxyz"
_SHIFTS = tuple(
    str.maketrans(_ALPHA + _ALPHA.upper(), _ALPHA[k:] + _ALPHA[:k] + (_ALPHA[k:] + _ALPHA[:k]).upper())
    for k in range(26)
)
_ATBASH = str.maketrans(_ALPHA + _ALPHA.upper(), _ALPHA[::-1] + _ALPHA[::-1].upper())


def english_share(text: str) -> float:
    """Share of ``text``'s words (a-z runs, lowercased) that are common English words."""
    words = _WORD.findall(text.lower())
    return sum(w in COMMON_WORDS for w in words) / len(words) if words else 0.0


def _readable(raw: bytes) -> str | None:
    """``raw`` as text when it is UTF-8 made mostly of letters, digits, spaces and punctuation."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 4 or sum(c.isprintable() or c in "\n\t" for c in s) < 0.95 * len(s):
        return None
    letters = sum(c.isalpha() or c == " " for c in s)
    return s if letters >= 0.6 * len(s) and " " in s.strip() else None


def _base64(m: re.Match[str]) -> str | None:
    span = m.group(0)
    if span.isalpha() or span.isdigit():  # a long word or number, not an encoding
        return None
    raw = span.replace("-", "+").replace("_", "/")
    try:
        return _readable(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def _hex(m: re.Match[str]) -> str | None:
    digits = re.sub(r"0x|\\x|[\s:,]", "", m.group(0))
    if len(digits) % 2:
        return None
    try:
        return _readable(bytes.fromhex(digits))
    except ValueError:
        return None


def _binary(m: re.Match[str]) -> str | None:
    bits = re.sub(r"\s", "", m.group(0))
    return _readable(bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8)))


def _morse(m: re.Match[str]) -> str | None:
    words = re.split(r"\s*/\s*|\s{2,}", m.group(0).strip())
    out = []
    for w in words:
        letters = [_MORSE_CODE.get(c) for c in w.split()]
        if any(ch is None for ch in letters):
            return None
        out.append("".join(letters))  # type: ignore[arg-type]
    s = " ".join(out)
    return s if english_share(s) >= 0.3 else None


def _spaced(m: re.Match[str]) -> str | None:
    """Letters spaced out one by one ("i g n o r e"), words apart by wider gaps when there are any."""
    span = m.group(0)
    words = re.split(r"\s{2,}|\s*/\s*", span)
    joined = " ".join(re.sub(r"[ .\-_*]", "", w) for w in words)
    return joined if english_share(joined) > 0 or len(joined) >= 6 else None


def _leet(m: re.Match[str]) -> str:
    """A word written in leetspeak ("p4ssw0rd"), when it spells a common English word."""
    word = m.group(0).lower()
    for table in _LEET:
        clear = word.translate(table)
        if clear in COMMON_WORDS:
            return clear
    return m.group(0)


def _letter_transform(span: str) -> str | None:
    """ROT-n, atbash or reversal of a Latin span, when one of them reads as English and the span does not.

    Only words of three letters or more count, and the span needs five of them: short words of
    other languages ("de", "no", "a") are English words too, and would let a shifted Portuguese
    phrase pass for decoded English. The 28 candidate transforms are tried on at most
    ``_PROBE_WORDS`` words (the first ones, or the last ones for reversal), so a long span costs
    no more than a short one; the winner is then applied to the whole span.
    """
    words = _LONG_WORD.findall(span)
    if len(words) < 5:
        return None
    head = " ".join(words[:_PROBE_WORDS])
    if _long_english_share(head) >= 0.2:
        return None
    tail = " ".join(words[-_PROBE_WORDS:])
    candidates: list[tuple[str, Callable[[str], str]]] = [
        *((head, functools.partial(_translate, table=t)) for t in (*_SHIFTS[1:], _ATBASH)),
        (tail, _reverse),
        (head, _reverse_words),
    ]
    best, best_share = None, 0.5
    for probe, transform in candidates:
        share = _long_english_share(transform(probe))
        if share > best_share:
            best, best_share = transform, share
    return best(span) if best is not None else None


def _translate(text: str, table: dict[int, int]) -> str:
    return text.translate(table)


def _reverse(text: str) -> str:
    return text[::-1]


def _reverse_words(text: str) -> str:
    return " ".join(w[::-1] for w in text.split(" "))


def _is_prose(span: str) -> bool:
    """Whether a quarter of ``span``'s words are frequent words of English or another Latin-script language."""
    words = _ANY_WORD.findall(span[:400].lower())
    known = sum(w in FUNCTION_WORDS or w in COMMON_WORDS for w in words)
    return known >= 0.25 * len(words)


def _long_english_share(text: str) -> float:
    words = _LONG_WORD.findall(text.lower())
    return sum(w in COMMON_WORDS for w in words) / len(words) if words else 0.0


def deobfuscate(text: str) -> str | None:
    """``text`` with each encoded or disguised span replaced by its clear text; ``None`` when nothing changed."""
    out = text
    if not out.isascii():
        out = _TAGS.sub(lambda m: "".join(chr(ord(c) - 0xE0000) for c in m.group(0)), out)
        out = _INVISIBLE.sub("", out)
        out = _STYLED.sub(lambda m: unicodedata.normalize("NFKC", m.group(0)), out)
        out = _MIXED_WORD.sub(lambda m: m.group(0).translate(_CONFUSABLES), out)
    for rx, decode in ((_BASE64, _base64), (_BINARY, _binary), (_HEX, _hex), (_MORSE, _morse)):
        out = rx.sub(lambda m, decode=decode: decode(m) or m.group(0), out)  # type: ignore[misc]
    out = _SPACED.sub(lambda m: _spaced(m) or m.group(0), out)
    out = _LEET_WORD.sub(_leet, out)
    tries = 0

    def letters(m: re.Match[str]) -> str:
        nonlocal tries
        span = m.group(0)
        if tries >= _MAX_LETTER_SPANS or len(_LONG_WORD.findall(span)) < 5 or _is_prose(span):
            return span
        tries += 1
        return _letter_transform(span) or span

    out = _LATIN_SPAN.sub(letters, out)
    return out if out != text else None
