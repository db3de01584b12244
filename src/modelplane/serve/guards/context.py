# ruff: noqa: RUF001  (restriction words in 17 languages: their letters are meant)
"""Features of a (system prompt, user request) pair for the context-aware injection classifier.

Many attacks read as ordinary requests on their own ("How do I cook a cheese omelette?"); they are
attacks because the deployment's system prompt forbids exactly that (no recipes) or holds the
secret they fish for. A guard that knows the deployment's system prompt can score the request
against it (``InjectionFilter(system_prompt=...)``). The system prompt is parsed once per
deployment (``SystemPromptContext``); per request the cost is one character 3-gram count of the
request and a few sparse dot products.

Status: measured, not wired into the gateway. In grouped CV on the training split these features
lifted recall at 1% FPR from 0.656 to 0.721, but on the held-out split the context model did worse
than the text model on the same pairs (``benchmarks/guard_eval.py``, ``with_system_prompt``): the
character similarities also measure "same language as the system prompt", and non-English benign
requests are still rare next to the translated attacks. Lexical overlap cannot see that an
omelette is a recipe; that needs a semantic model. The one the text model reads (``embedding.py``,
shipped inside a pip package) is English-centric and this context model does not use it.
Re-measured for issue #7 (``benchmarks/guard_eval.py --cv-pairs``, grouped CV on the training
pairs only, all with the rules): the text model with de-obfuscation still beats every context
variant, including one with only language-invariant features (whether the request repeats the
system prompt's quoted terms or rare words) and one with the text model's blocks and decoding, so
the context model stays off the gateway.

Two kinds of features, both language-agnostic so they work on the 17 languages of the attacks:
dense similarities (character 3-gram cosine and overlap share between the request and the whole
system prompt, its restrictive clauses — those with a "do not / never / only / avoid" word — and
the rest), and ``overlap_words``: the request's words that also occur in the system prompt, which
the classifier weighs one by one (asking about "password" on a bot that holds one).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from modelplane.serve.guards.textgrams import WORD_RX, char_wb_ngrams

# Lowercased substrings that mark a clause as restrictive, per language of the attacks.
RESTRICTION_CUES: tuple[str, ...] = (
    "not ",
    "n't",
    "dont ",
    "never",
    "avoid",
    "refuse",
    "under no circumstances",
    "only",
    "secret",
    "private",
    "forbid",
    "prohibit",
    "no ",
    "nunca",
    "evit",
    "solo",
    "sólo",
    "secret",
    "ne ",
    "pas ",
    "jamais",
    "évit",
    "seulement",
    "uniquement",
    "nicht",
    "nie ",
    "kein",
    "vermeid",
    "nur ",
    "non ",
    "mai ",
    "não",
    "apenas",
    "somente",
    "не ",
    "никогда",
    "избега",
    "только",
    "секрет",
    "不",
    "禁止",
    "切勿",
    "避免",
    "只",
    "ない",
    "しない",
    "避け",
    "のみ",
    "だけ",
    "않",
    "말",
    "금지",
    "피하",
    "नहीं",
    "मत ",
    "कभी",
    "बच",
    "केवल",
    "গোপন",
    "না",
    "কখনো",
    "এড়িয়ে",
    "শুধু",
    "asla",
    "değil",
    "kaçın",
    "sadece",
    "yalnızca",
    "hiçbir",
    "gizli",
    "không",
    "đừng",
    "tránh",
    "chỉ",
    "bí mật",
    "tidak",
    "jangan",
    "hindari",
    "hanya",
    "rahasia",
    "ไม่",
    "ห้าม",
    "หลีกเลี่ยง",
    "เท่านั้น",
    "ความลับ",
    "لا ",
    "لن ",
    "أبدا",
    "تجنب",
    "فقط",
    "سر",
    "huwag",
    "hindi",
    "iwasan",
    "lamang",
    "lihim",
)
_CLAUSE_RX = re.compile(r"[.!?;:\n。！？；।|]+")
_QUOTED_RX = re.compile(r"['\"‘’“”«»「」『』]([^'\"‘’“”«»「」『』]{3,40})['\"‘’“”«»「」『』]")

DENSE_FEATURES: tuple[str, ...] = (
    "sim_all",
    "sim_restrict",
    "sim_other",
    "share_in_prompt",
    "share_in_restrict",
    "quoted_term_in_request",
    "rare_share_restrict",
    "rare_share_other",
    "rare_count_restrict",
    "rare_count_other",
)
# Scripts written without spaces: their "words" are whole phrases, so they are compared by
# character bigrams instead.
_UNSPACED_RX = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def tokens(lowered: str) -> list[str]:
    """Words, with runs of an unspaced script (Thai, Chinese, Japanese, Korean) cut into bigrams."""
    out: list[str] = []
    for w in WORD_RX.findall(lowered):
        if len(w) > 2 and _UNSPACED_RX.search(w):
            out += [w[i : i + 2] for i in range(len(w) - 1)]
        else:
            out.append(w)
    return out


def common_words(system_prompts: list[str], share: float = 0.03) -> frozenset[str]:
    """Tokens found in at least ``share`` of the distinct system prompts (and at least 3 of them)."""
    distinct = set(system_prompts)
    df: Counter[str] = Counter()
    for p in distinct:
        df.update(set(tokens(p.lower())))
    cut = max(3.0, share * len(distinct))
    return frozenset(t for t, c in df.items() if c >= cut)


def _grams(lowered: str) -> Counter[str]:
    return Counter(char_wb_ngrams(lowered, 3, 3))


def _norm(c: Counter[str]) -> float:
    return math.sqrt(sum(v * v for v in c.values()))


@dataclass(frozen=True)
class SystemPromptContext:
    """A system prompt parsed once: its character 3-grams (whole, restrictive clauses, the rest),
    its words and its quoted terms (where secrets and forbidden topics are usually named).

    ``common`` holds the words found in many system prompts of the training data ("do", "not",
    "user", "reveal"): the rare words left are what this system prompt is about — the secret, the
    person, the forbidden topic — and a request that repeats them is asking about exactly that.
    """

    text: str
    grams: Counter[str]
    restrict: Counter[str]
    other: Counter[str]
    norms: tuple[float, float, float]
    words: frozenset[str]
    quoted: tuple[str, ...]
    rare_restrict: frozenset[str] = frozenset()
    rare_other: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, system_prompt: str, common: frozenset[str] = frozenset()) -> SystemPromptContext:
        low = system_prompt.lower()
        restrict: Counter[str] = Counter()
        other: Counter[str] = Counter()
        rare_restrict: set[str] = set()
        rare_other: set[str] = set()
        for clause in _CLAUSE_RX.split(low):
            if clause.strip():
                is_restrict = any(c in clause + " " for c in RESTRICTION_CUES)
                (restrict if is_restrict else other).update(_grams(clause))
                (rare_restrict if is_restrict else rare_other).update(
                    t for t in tokens(clause) if t not in common
                )
        grams = _grams(low)
        quoted = tuple(sorted({q.strip().lower() for q in _QUOTED_RX.findall(system_prompt) if q.strip()}))
        return cls(
            system_prompt,
            grams,
            restrict,
            other,
            (_norm(grams), _norm(restrict), _norm(other)),
            frozenset(WORD_RX.findall(low)),
            quoted,
            frozenset(rare_restrict),
            frozenset(rare_other),
        )

    def dense(self, lowered: str, user_grams: Counter[str] | None = None) -> list[float]:
        """The ``DENSE_FEATURES`` of a request (lowercased)."""
        u = user_grams if user_grams is not None else _grams(lowered)
        nu = _norm(u)
        if nu == 0:
            return [0.0] * len(DENSE_FEATURES)
        sims = []
        for ref, n in zip((self.grams, self.restrict, self.other), self.norms, strict=True):
            sims.append(sum(v * ref[g] for g, v in u.items() if g in ref) / (nu * n) if n else 0.0)
        distinct = len(u)
        share_all = sum(1 for g in u if g in self.grams) / distinct
        share_restrict = sum(1 for g in u if g in self.restrict) / distinct
        quoted_hit = 1.0 if any(q in lowered for q in self.quoted) else 0.0
        toks = set(tokens(lowered))
        n_restrict = sum(1 for t in toks if t in self.rare_restrict)
        n_other = sum(1 for t in toks if t in self.rare_other)
        n = max(len(toks), 1)
        return [
            *sims,
            share_all,
            share_restrict,
            quoted_hit,
            n_restrict / n,
            n_other / n,
            math.log1p(n_restrict),
            math.log1p(n_other),
        ]

    def overlap_words(self, lowered: str) -> list[str]:
        """The request's words that also occur in the system prompt (as many times as in the request)."""
        return [w for w in WORD_RX.findall(lowered) if w in self.words]
