"""Input filter against prompt injection: regex rules plus a small offline classifier.

The classifier is TF-IDF over character n-grams (2-5, word-bounded, so it reads the 17 languages
of the machine-translated attacks without a tokenizer) and a logistic regression, trained in this
repository from CyberSecEval's prompt-injection cases and our benign set (``benign.py``). It is
stored as JSON (vocabulary, idf, weights, threshold) — no pickle, nothing fetched from a hub.
Train it with ``python -m modelplane.serve.guards.injection train``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.serve._deps import require
from modelplane.serve.errors import ModelValidationFailed
from modelplane.serve.guards.base import Action, GuardDecision
from modelplane.serve.guards.benign import benign_prompts

DEFAULT_MODEL_PATH = Path(__file__).with_name("models") / "injection_tfidf_lr.json.gz"
CYBERSECEVAL_FILES = ("prompt_injection.json", "prompt_injection_multilingual_machine_translated.json")

# High-precision phrasings of known attacks; the regex-only baseline in benchmarks/serve_guard.py.
DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    ("ignore-instructions",
     r"\b(ignore|disregard|forget|skip|override|bypass)\b.{0,40}\b(previous|prior|above|earlier|preceding|all|any|your|the|these|those)\b"
     r".{0,25}\b(instructions?|rules|directions|directives|guidelines|constraints|prompts?)\b"),
    ("role-override", r"\byou are (now|no longer)\b|\bfrom now on,? you\b|\bact as (an? )?(unfiltered|unrestricted|evil)"),
    ("dan", r"\bDAN\b|\bdo anything now\b|\bjailbr(eak|oken)\b"),
    ("special-mode", r"\b(developer|admin|god|debug|maintenance|sudo)\s+mode\b"),
    ("exfiltrate-prompt",
     r"\b(reveal|show|print|repeat|output|tell me|what is|what's|give me)\b.{0,30}\b(system prompt|initial prompt|hidden instructions|secret key|password|your instructions)\b"),
    ("fake-system", r"^\s*(system|assistant)\s*:|\[\s*(system|admin)\s*\]|<\s*/?\s*system\s*>|\bnew instructions?\s*:"),
)


@dataclass(frozen=True)
class Sample:
    group: str
    text: str
    label: int  # 1 = injection


def load_cyberseceval(root: str | Path) -> list[Sample]:
    """Attacks (``user_input``) and the benign system prompts (``test_case_prompt``) of CyberSecEval.

    The group is the prompt id, shared by an English case and its translations, so a split by group
    never trains on a translation of a test case.
    """
    root = Path(root)
    out: list[Sample] = []
    for name in CYBERSECEVAL_FILES:
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; the dataset lives in ../shared/data/datasets/cyberseceval-prompt-injection/")
        for case in json.loads(path.read_text()):
            g = f"cse-{case['prompt_id']}"
            out.append(Sample(g, case["user_input"], 1))
            out.append(Sample(g, case["test_case_prompt"], 0))
    return out


def all_samples(cyberseceval_root: str | Path) -> list[Sample]:
    """CyberSecEval plus our benign prompts, deduplicated by text (first occurrence wins)."""
    seen: set[str] = set()
    out: list[Sample] = []
    for s in load_cyberseceval(cyberseceval_root) + [Sample(g, t, 0) for g, t in benign_prompts()]:
        key = s.text.strip()
        if key and key not in seen:
            seen.add(key)
            out.append(s)
    return out


def is_test_group(group: str, test_percent: int = 25) -> bool:
    """Deterministic held-out split by group."""
    return int(hashlib.sha256(group.encode()).hexdigest(), 16) % 100 < test_percent


class RegexRules:
    def __init__(self, rules: tuple[tuple[str, str], ...] = DEFAULT_RULES) -> None:
        self.rules = [(name, re.compile(p, re.IGNORECASE | re.DOTALL | re.MULTILINE)) for name, p in rules]

    def matches(self, text: str) -> list[str]:
        return [name for name, rx in self.rules if rx.search(text)]


class InjectionClassifier:
    """TF-IDF char n-grams + logistic regression, (de)serialised as JSON."""

    # Chosen by grouped 5-fold CV on the training split (recall at 1% FPR 0.887 vs 0.832 for 2-5/20k).
    VECTORIZER: dict[str, Any] = {"analyzer": "char_wb", "ngram_range": [1, 5], "min_df": 2, "sublinear_tf": True, "max_features": 50000, "lowercase": True}

    def __init__(self, vectorizer: Any, coef: np.ndarray, intercept: float, threshold: float) -> None:
        self._vec = vectorizer
        self._coef = coef
        self._intercept = intercept
        self.threshold = threshold

    def scores(self, texts: list[str]) -> np.ndarray:
        """Probability of injection for each text."""
        x = self._vec.transform(texts)
        z = np.asarray(x @ self._coef).ravel() + self._intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    @classmethod
    def train(cls, samples: list[Sample], *, target_fpr: float = 0.01, seed: int = 0) -> InjectionClassifier:
        """Fit on ``samples``; the threshold is the (1 - target_fpr) quantile of grouped-CV benign scores."""
        text_mod = require("sklearn.feature_extraction.text", package="scikit-learn")
        lm = require("sklearn.linear_model", package="scikit-learn")
        ms = require("sklearn.model_selection", package="scikit-learn")
        texts = [s.text for s in samples]
        y = np.array([s.label for s in samples])
        groups = [s.group for s in samples]

        def fit(tx: list[str], ty: np.ndarray) -> tuple[Any, Any]:
            params = dict(cls.VECTORIZER)
            params["ngram_range"] = tuple(params["ngram_range"])
            vec = text_mod.TfidfVectorizer(**params)
            clf = lm.LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000, random_state=seed)
            clf.fit(vec.fit_transform(tx), ty)
            return vec, clf

        cv_scores = np.zeros(len(texts))
        for tr, te in ms.GroupKFold(n_splits=5).split(texts, y, groups):
            vec, clf = fit([texts[i] for i in tr], y[tr])
            cv_scores[te] = clf.predict_proba(vec.transform([texts[i] for i in te]))[:, 1]
        benign = np.sort(cv_scores[y == 0])
        threshold = float(np.quantile(benign, 1.0 - target_fpr, method="higher")) + 1e-6
        vec, clf = fit(texts, y)
        return cls(vec, clf.coef_.ravel().astype(np.float64), float(clf.intercept_[0]), threshold)

    def to_json(self) -> str:
        vocab = {k: int(v) for k, v in sorted(self._vec.vocabulary_.items(), key=lambda kv: kv[1])}
        return json.dumps({
            "format": "modelplane-injection-tfidf-lr/1",
            "vectorizer": self.VECTORIZER,
            "vocabulary": vocab,
            "idf": [round(float(v), 6) for v in self._vec.idf_],
            "coef": [round(float(v), 6) for v in self._coef],
            "intercept": self._intercept,
            "threshold": self.threshold,
        }, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> InjectionClassifier:
        text_mod = require("sklearn.feature_extraction.text", package="scikit-learn")
        d = json.loads(text)
        if d.get("format") != "modelplane-injection-tfidf-lr/1":
            raise ModelValidationFailed("not an injection classifier file", hint="train one with python -m modelplane.serve.guards.injection train")
        params = dict(d["vectorizer"])
        params["ngram_range"] = tuple(params["ngram_range"])
        params.pop("max_features", None)
        params.pop("min_df", None)
        vec = text_mod.TfidfVectorizer(vocabulary=d["vocabulary"], **params)
        vec.idf_ = np.asarray(d["idf"], dtype=np.float64)
        return cls(vec, np.asarray(d["coef"], dtype=np.float64), float(d["intercept"]), float(d["threshold"]))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL_PATH) -> InjectionClassifier:
        p = Path(path)
        if not p.exists():
            raise ModelValidationFailed(
                f"injection classifier {p} not found",
                hint="train it: python -m modelplane.serve.guards.injection train --data ../shared/data/datasets/cyberseceval-prompt-injection",
            )
        return cls.from_json(gzip.decompress(p.read_bytes()).decode() if p.suffix == ".gz" else p.read_text())


class InjectionFilter:
    """Guard: block when a regex rule matches or the classifier's score reaches its threshold.

    ``mode`` picks "combined" (default), "regex" or "classifier" so each part can be measured alone.
    """

    name = "injection"

    def __init__(self, classifier: InjectionClassifier | None = None, *, rules: RegexRules | None = None,
                 mode: str = "combined", threshold: float | None = None) -> None:
        if mode not in ("combined", "regex", "classifier"):
            raise ValueError(f"unknown mode {mode!r}; use combined, regex or classifier")
        self.mode = mode
        self.rules = rules or RegexRules()
        self.classifier = classifier if classifier is not None or mode == "regex" else InjectionClassifier.load()
        self.threshold = threshold if threshold is not None else (self.classifier.threshold if self.classifier else 0.5)

    def score(self, text: str) -> tuple[float, list[str]]:
        hits = self.rules.matches(text) if self.mode != "classifier" else []
        p = float(self.classifier.scores([text])[0]) if self.classifier is not None and self.mode != "regex" else 0.0
        return p, hits

    def check(self, text: str) -> GuardDecision:
        p, hits = self.score(text)
        reasons = [f"rule:{h}" for h in hits]
        if p >= self.threshold:
            reasons.append(f"classifier:{p:.3f}")
        return GuardDecision(self.name, "input", Action.BLOCK if reasons else Action.ALLOW, p, tuple(reasons))


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Train the prompt-injection classifier on the training split")
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--data", default="../shared/data/datasets/cyberseceval-prompt-injection")
    ap.add_argument("--out", default=str(DEFAULT_MODEL_PATH))
    a = ap.parse_args(argv)
    train = [s for s in all_samples(a.data) if not is_test_group(s.group)]
    clf = InjectionClassifier.train(train)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    out = Path(a.out)
    # mtime=0 keeps the gzip bytes identical across runs of the same training.
    out.write_bytes(gzip.compress(clf.to_json().encode(), mtime=0) if out.suffix == ".gz" else clf.to_json().encode())
    print(json.dumps({"out": a.out, "train_samples": len(train), "threshold": clf.threshold}))


if __name__ == "__main__":
    main()
