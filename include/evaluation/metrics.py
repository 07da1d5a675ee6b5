"""Predictions on the frozen held-out set and the metrics computed from them.

Only predictions with ``status == "scored"`` enter the metrics; skipped and failed ones are counted.
"No intent / below threshold" is its own outcome (``NO_INTENT``): it is always wrong, appears as a predicted
column of the confusion matrix and is never a true label, so it never enters the macro averages.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NO_INTENT = "__no_intent__"
STATUSES = ("scored", "skipped", "failed")
TOP_CONFUSIONS = 3

Status = Literal["scored", "skipped", "failed"]


@dataclass
class Prediction:
    """One held-out utterance scored by one model."""

    text: str
    true_intent: str
    predicted_intent: str | None
    score: float | None
    slices: dict[str, str] = field(default_factory=dict)
    status: Status = "scored"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.true_intent == NO_INTENT:
            raise ValueError(f"{NO_INTENT!r} is an outcome, not a true intent")

    @property
    def label(self) -> str:
        """The predicted label, with a missing prediction counted as ``NO_INTENT``."""
        return self.predicted_intent or NO_INTENT

    @property
    def correct(self) -> bool:
        return self.status == "scored" and self.label == self.true_intent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prediction:
        score = d.get("score")
        return cls(
            text=str(d["text"]),
            true_intent=str(d["true_intent"]),
            predicted_intent=d.get("predicted_intent"),
            score=None if score is None else float(score),
            slices={str(k): str(v) for k, v in (d.get("slices") or {}).items()},
            status=d.get("status", "scored"),
        )


def label_from_scores(scores: Sequence[dict[str, Any]], threshold: float) -> tuple[str, float | None]:
    """Turn a Cognigy ``nlu/scores`` list into (label, top score).

    Negated entries and entries without a numeric score are ignored. An empty list gives ``(NO_INTENT,
    None)``; a top score below ``threshold`` gives ``(NO_INTENT, top score)``. On ties the first entry wins.
    """
    best_name: str | None = None
    best_score: float | None = None
    for entry in scores:
        if entry.get("negated"):
            continue
        score = entry.get("score")
        name = entry.get("name")
        if not name or not isinstance(score, int | float) or isinstance(score, bool) or math.isnan(score):
            continue
        if best_score is None or score > best_score:
            best_name, best_score = str(name), float(score)
    if best_name is None or best_score is None or best_score < threshold:
        return NO_INTENT, best_score
    return best_name, best_score


def status_counts(predictions: Iterable[Prediction]) -> dict[str, int]:
    counts = Counter(p.status for p in predictions)
    result = {status: counts.get(status, 0) for status in STATUSES}
    result["total"] = sum(result.values())
    return result


def true_labels(predictions: Iterable[Prediction], labels: Sequence[str] | None = None) -> list[str]:
    """The true-intent label set: ``labels`` (order kept) plus any true intent they do not list, sorted."""
    base = list(dict.fromkeys(label for label in (labels or []) if label != NO_INTENT))
    seen = set(base)
    extra = sorted({p.true_intent for p in predictions} - seen)
    return base + extra


def top_confusions(y_true: Sequence[str], y_pred: Sequence[str], intent: str, k: int = TOP_CONFUSIONS) -> list:
    """The ``k`` most frequent wrong predictions for utterances whose true intent is ``intent``."""
    wrong = Counter(p for t, p in zip(y_true, y_pred, strict=True) if t == intent and p != intent)
    ranked = sorted(wrong.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [{"intent": name, "count": count} for name, count in ranked]


def compute_metrics(predictions: list[Prediction], labels: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, macro/weighted P/R/F1, per-intent metrics and the confusion matrix (scikit-learn).

    ``labels`` are the model's intents. True intents missing from ``labels`` are added. Macro and weighted
    averages run over the true intents that have at least one scored utterance (an intent without test
    utterances cannot be judged; it is listed under ``labels_without_support``). ``zero_division=0``.
    """
    import numpy as np  # imported here: the DAG file's parse must not load scikit-learn
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    scored = [p for p in predictions if p.status == "scored"]
    label_set = true_labels(scored, labels)
    y_true = [p.true_intent for p in scored]
    y_pred = [p.label for p in scored]
    counts = status_counts(predictions)

    predicted_extra = sorted({p for p in y_pred if p not in label_set and p != NO_INTENT})
    matrix_labels = [*label_set, *predicted_extra, NO_INTENT]

    if not scored:
        return {
            "accuracy": 0.0,
            "macro": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
            "weighted": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
            "per_intent": {},
            "labels": label_set,
            "labels_without_support": label_set,
            "confusion_matrix": {"labels": matrix_labels, "matrix": []},
            "no_intent_predictions": 0,
            "counts": counts,
        }

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=label_set, average=None, zero_division=0
    )
    supported = support > 0
    weights = support[supported] / support[supported].sum()

    def macro(values: np.ndarray) -> float:
        return float(values[supported].mean())

    def weighted(values: np.ndarray) -> float:
        return float((values[supported] * weights).sum())

    per_intent = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "top_confusions": top_confusions(y_true, y_pred, label),
        }
        for i, label in enumerate(label_set)
    }
    matrix = confusion_matrix(y_true, y_pred, labels=matrix_labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro": {"precision": macro(precision), "recall": macro(recall), "f1": macro(f1)},
        "weighted": {"precision": weighted(precision), "recall": weighted(recall), "f1": weighted(f1)},
        "per_intent": per_intent,
        "labels": label_set,
        "labels_without_support": [label for label, s in zip(label_set, support, strict=True) if s == 0],
        "confusion_matrix": {"labels": matrix_labels, "matrix": matrix.astype(int).tolist()},
        "no_intent_predictions": sum(1 for p in y_pred if p == NO_INTENT),
        "counts": counts,
    }
