"""The emulator's real NLU model: a small scikit-learn text classifier, its feedback report and metrics.

Everything here is pure (no I/O): the store persists the pickled pipeline and the JSON reports.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline
from threadpoolctl import ThreadpoolController

RANDOM_STATE = 0
CV_FOLDS = 3
FEW_SENTENCES = 5  # fewer example sentences than this -> fewSentences / lowDataIntents
POOR, FAIR = 0.6, 0.8  # score < POOR -> poor*, < FAIR -> fair*, else good*
STRONG_OVERLAP, SOME_OVERLAP = 0.30, 0.15  # share of an intent's sentences predicted as one other intent


_threadpools: ThreadpoolController | None = None


@contextmanager
def single_threaded() -> Iterator[None]:
    """Small sparse problems: multi-threaded BLAS only adds contention (lbfgs ran ~30x slower on 2 CPUs)."""
    global _threadpools
    if _threadpools is None:
        _threadpools = ThreadpoolController()
    with _threadpools.limit(limits=1):
        yield


class TrainingDataError(ValueError):
    """The examples cannot train a classifier (e.g. fewer than two intents with sentences)."""


def build_pipeline() -> Pipeline:
    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        ]
    )
    model = LogisticRegression(C=10, max_iter=2000, random_state=RANDOM_STATE)
    return Pipeline([("features", features), ("clf", model)])


def _flatten(examples: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    for intent, sentences in examples.items():
        for sentence in sentences:
            texts.append(sentence)
            labels.append(intent)
    return texts, labels


def check_trainable(examples: Mapping[str, Sequence[str]]) -> None:
    usable = [name for name, sentences in examples.items() if sentences]
    if len(usable) < 2:
        raise TrainingDataError(f"Training needs at least 2 intents with example sentences, found {len(usable)}")


def train(examples: Mapping[str, Sequence[str]]) -> Pipeline:
    """Fit a fresh pipeline on {intent: [sentences]}."""
    check_trainable(examples)
    texts, labels = _flatten(examples)
    with single_threaded():
        return build_pipeline().fit(texts, labels)


def score(pipeline: Pipeline, sentence: str) -> list[tuple[str, float]]:
    """All intents with their probability for one sentence, best first."""
    probabilities = pipeline.predict_proba([sentence])[0]
    ranked = sorted(zip(pipeline.classes_, probabilities, strict=True), key=lambda item: -item[1])
    return [(str(name), float(value)) for name, value in ranked]


def dumps(pipeline: Pipeline) -> bytes:
    return pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes) -> Pipeline:
    return pickle.loads(blob)


def _level(value: float | None, prefix: str) -> str | None:
    if value is None:
        return None
    if value < POOR:
        return f"poor{prefix}"
    if value < FAIR:
        return f"fair{prefix}"
    return f"good{prefix}"


def feedback_report(
    examples: Mapping[str, Sequence[str]],
    intent_id: Callable[[str], str],
    flow_id: str,
    flow_name: str,
) -> dict[str, Any]:
    """Cognigy-style feedback report from 3-fold stratified cross-validation on the training sentences.

    Intents with fewer than 3 sentences cannot be stratified into 3 folds and are left out of the
    cross-validation (their fScore is null). Returns {"flow": {info, findings}, "intents": {name: ...}}.
    """
    counts = {name: len(sentences) for name, sentences in examples.items()}
    cv_examples = {name: list(s) for name, s in examples.items() if len(s) >= CV_FOLDS}
    per_intent_f1: dict[str, float] = {}
    confusions: dict[str, Counter[str]] = {}
    accuracy: float | None = None
    macro_f1: float | None = None
    if len(cv_examples) >= 2:
        texts, labels = _flatten(cv_examples)
        folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=RANDOM_STATE)
        with single_threaded():
            predicted = cross_val_predict(build_pipeline(), texts, labels, cv=folds)
        names = sorted(cv_examples)
        f1s = f1_score(labels, predicted, labels=names, average=None, zero_division=0)
        per_intent_f1 = {name: float(value) for name, value in zip(names, f1s, strict=True)}
        accuracy = float(accuracy_score(labels, predicted))
        macro_f1 = float(f1_score(labels, predicted, labels=names, average="macro", zero_division=0))
        for truth, guess in zip(labels, predicted, strict=True):
            confusions.setdefault(truth, Counter())
            if guess != truth:
                confusions[truth][str(guess)] += 1

    low_data = sorted(name for name, n in counts.items() if n < FEW_SENTENCES)
    flow_findings: list[dict[str, Any]] = []
    if (level := _level(accuracy, "Accuracy")) is not None:
        flow_findings.append({"type": level})
    if low_data:
        flow_findings.append({"type": "lowDataIntents", "intents": low_data})

    intents: dict[str, Any] = {}
    for name, n in counts.items():
        findings: list[dict[str, Any]] = []
        f1 = per_intent_f1.get(name)
        if (level := _level(f1, "FScore")) is not None:
            findings.append({"type": level})
        if n < FEW_SENTENCES:
            findings.append({"type": "fewSentences"})
        if confusions.get(name):
            other, wrong = confusions[name].most_common(1)[0]
            share = wrong / n
            kind = "strongOverlap" if share > STRONG_OVERLAP else "someOverlap" if share > SOME_OVERLAP else None
            if kind:
                findings.append(
                    {
                        "type": kind,
                        "overlappingIntentName": other,
                        "overlappingIntentId": intent_id(other),
                        "overlappingFlowName": flow_name,
                        "overlappingFlowId": flow_id,
                    }
                )
        intents[name] = {"info": {"fScore": f1}, "findings": findings}
    return {"flow": {"info": {"accuracy": accuracy, "fScore": macro_f1}, "findings": flow_findings}, "intents": intents}


def evaluate(
    pipeline: Pipeline, texts: Sequence[str], labels: Sequence[str], channels: Iterable[str | None]
) -> dict[str, Any]:
    """Macro precision/recall/F1 over the held-out labels and bias = max - min accuracy across channels."""
    with single_threaded():
        predicted = [str(p) for p in pipeline.predict(list(texts))] if texts else []
    present = sorted(set(labels))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=present, average="macro", zero_division=0
    )
    by_channel: dict[str, list[bool]] = {}
    for channel, truth, guess in zip(channels, labels, predicted, strict=True):
        if channel is not None:
            by_channel.setdefault(str(channel), []).append(truth == guess)
    accuracies = {channel: sum(hits) / len(hits) for channel, hits in by_channel.items() if hits}
    bias = max(accuracies.values()) - min(accuracies.values()) if accuracies else 0.0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1Score": float(f1),
        "accuracy": float(accuracy_score(labels, predicted)) if labels else 0.0,
        "biasScore": float(bias),
        "accuracyByChannel": accuracies,
        "support": len(labels),
    }


def build_artifacts(
    examples: Mapping[str, Sequence[str]], intent_id: Callable[[str], str], flow_id: str, flow_name: str
) -> tuple[bytes, dict[str, Any], dict[str, int]]:
    """Train on `examples` and return what a model version stores: (pickle, feedback report, counts)."""
    pipeline = train(examples)
    report = feedback_report(examples, intent_id, flow_id, flow_name)
    counts = {name: len(sentences) for name, sentences in examples.items()}
    return dumps(pipeline), report, counts
