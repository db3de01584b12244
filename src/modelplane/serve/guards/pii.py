"""Output monitor for personal data: emails, phone numbers, card numbers, ID numbers, deny lists.

Two engines, picked by name:
- ``presidio``: Presidio's pattern recognizers (email, credit card with Luhn, phone via
  ``phonenumbers``, US SSN, IBAN, IP, UK NINO) run directly, without an NLP engine or spaCy model,
  so nothing is downloaded. tldextract (used by the email recognizer) is told to use its bundled
  suffix list instead of fetching one.
- ``regex``: our own recognizers for the same entities (Luhn-checked cards), for installs without
  presidio-analyzer.
Deny lists (exact terms, case-insensitive) are checked by both engines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from modelplane.serve.guards.base import Action, GuardDecision


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int
    score: float


def luhn_ok(digits: str) -> bool:
    nums = [int(c) for c in digits if c.isdigit()]
    if len(nums) < 12:
        return False
    total = 0
    for i, n in enumerate(reversed(nums)):
        if i % 2 == 1:
            n = n * 2 - 9 if n * 2 > 9 else n * 2
        total += n
    return total % 10 == 0


_REGEX: dict[str, tuple[re.Pattern[str], Callable[[str], bool] | None]] = {
    "EMAIL_ADDRESS": (re.compile(r"\b[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}\b"), None),
    "CREDIT_CARD": (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), luhn_ok),
    "PHONE_NUMBER": (
        re.compile(
            r"(?<![\w-])(\+\d{1,3}[ .-]?)?(\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w-])"
        ),
        None,
    ),
    "US_SSN": (re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"), None),
    "IBAN_CODE": (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), None),
}

DEFAULT_ENTITIES = ("EMAIL_ADDRESS", "CREDIT_CARD", "PHONE_NUMBER", "US_SSN", "IBAN_CODE")


class RegexPiiEngine:
    name = "regex"

    def __init__(self, entities: tuple[str, ...] = DEFAULT_ENTITIES) -> None:
        unknown = set(entities) - set(_REGEX)
        if unknown:
            raise ValueError(f"regex engine has no recognizer for {sorted(unknown)}; known: {sorted(_REGEX)}")
        self.entities = entities

    def find(self, text: str) -> list[Finding]:
        out = []
        for ent in self.entities:
            rx, check = _REGEX[ent]
            for m in rx.finditer(text):
                if check is None or check(m.group(0)):
                    out.append(Finding(ent, m.start(), m.end(), 1.0))
        return out


# The least a text must hold before a Presidio recognizer can find anything in it, read off the
# recognizers' own patterns (``str.isdigit`` counts every character their ``\d`` can match, and
# more): an email needs "@"; a card 13 digits; a US SSN 9; an IBAN 2 (check digits); a UK NINO 6;
# an IPv4 address 4, an IPv6 one a ":" (it may be all hex letters); phonenumbers' matcher needs
# at least 2 digits for a national number and finds no letters-only (vanity) numbers. Most text a
# model returns (labels, tensor names, prose) has none of these, so the recognizers are skipped.
_MIN_DIGITS = {"CREDIT_CARD": 13, "US_SSN": 9, "IBAN_CODE": 2, "UK_NINO": 6, "PHONE_NUMBER": 2}


def _may_match(entity: str, text: str, digits: int) -> bool:
    if entity == "EMAIL_ADDRESS":
        return "@" in text
    if entity == "IP_ADDRESS":
        return digits >= 4 or ":" in text
    return digits >= _MIN_DIGITS.get(entity, 0)


class PresidioPatternEngine:
    """Presidio's predefined pattern recognizers, called without an NLP engine (no spaCy model).

    The recognizers are built once per engine and reused for every text; a cheap pre-check
    (``_may_match``) skips a recognizer when the text cannot hold its entity, which keeps the
    output monitor to microseconds on answers without digits or "@".
    """

    name = "presidio"

    def __init__(self, entities: tuple[str, ...] = DEFAULT_ENTITIES, *, min_score: float = 0.4) -> None:
        # Use tldextract's bundled public-suffix snapshot: never fetch the list at run time.
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        from modelplane.serve._deps import require

        rec = require("presidio_analyzer.predefined_recognizers", package="presidio-analyzer")
        classes = {
            "EMAIL_ADDRESS": rec.EmailRecognizer,
            "CREDIT_CARD": rec.CreditCardRecognizer,
            "PHONE_NUMBER": rec.PhoneRecognizer,
            "US_SSN": rec.UsSsnRecognizer,
            "IBAN_CODE": rec.IbanRecognizer,
            "IP_ADDRESS": rec.IpRecognizer,
            "UK_NINO": rec.UkNinoRecognizer,
        }
        unknown = set(entities) - set(classes)
        if unknown:
            raise ValueError(f"presidio engine: unknown entities {sorted(unknown)}; known: {sorted(classes)}")
        self.entities = entities
        self._recognizers = [(e, classes[e]()) for e in entities]
        self.min_score = min_score

    def find(self, text: str) -> list[Finding]:
        out = []
        digits = sum(c.isdigit() for c in text)
        for ent, r in self._recognizers:
            if not _may_match(ent, text, digits):
                continue
            for res in r.analyze(text, entities=[ent], nlp_artifacts=None) or []:
                if res.score >= self.min_score:
                    out.append(Finding(res.entity_type, res.start, res.end, float(res.score)))
        return out


PII_ENGINES: dict[str, Callable[..., RegexPiiEngine | PresidioPatternEngine]] = {
    "regex": RegexPiiEngine,
    "presidio": PresidioPatternEngine,
}


class PiiMonitor:
    """Guard on model output: redact (default), flag or block personal data and deny-listed terms."""

    name = "pii"

    def __init__(
        self,
        *,
        engine: str = "presidio",
        entities: tuple[str, ...] = DEFAULT_ENTITIES,
        deny_list: tuple[str, ...] = (),
        action: Action = Action.REDACT,
    ) -> None:
        if engine not in PII_ENGINES:
            raise ValueError(f"unknown PII engine {engine!r}; use one of {sorted(PII_ENGINES)}")
        if action is Action.ALLOW:
            raise ValueError("action must be flag, redact or block")
        self.engine = PII_ENGINES[engine](entities)
        self.action = action
        self._deny = [re.compile(r"\b" + re.escape(t) + r"\b", re.IGNORECASE) for t in deny_list if t.strip()]

    def findings(self, text: str) -> list[Finding]:
        found = self.engine.find(text)
        for rx in self._deny:
            found.extend(Finding("DENY_LIST", m.start(), m.end(), 1.0) for m in rx.finditer(text))
        return _drop_overlaps(found)

    def check(self, text: str) -> GuardDecision:
        found = self.findings(text)
        if not found:
            return GuardDecision(self.name, "output", Action.ALLOW)
        reasons = tuple(sorted({f.entity for f in found}))
        score = max(f.score for f in found)
        if self.action is Action.REDACT:
            out = text
            for f in sorted(found, key=lambda f: f.start, reverse=True):
                out = out[: f.start] + f"<{f.entity}>" + out[f.end :]
            return GuardDecision(self.name, "output", Action.REDACT, score, reasons, out)
        return GuardDecision(self.name, "output", self.action, score, reasons)


def _drop_overlaps(found: list[Finding]) -> list[Finding]:
    """Keep the highest-scoring (then longest) finding where spans overlap."""
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)
