"""Promotion gates on predictions of real TF-IDF + LogisticRegression models trained here.

The data are synthetic banking-style utterances: each intent has its own vocabulary, ~10 % of the content
words come from another intent (so models make real mistakes) and filler words vary the length. Every test
trains the models it needs on this data and scores a held-out set, as the pipeline does with Cognigy.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from functools import cache

import numpy as np
import pytest
from fairlearn.metrics import equalized_odds_difference
from PIL import Image
from pydantic import ValidationError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline
from threadpoolctl import threadpool_limits

from include.evaluation import NO_INTENT, Prediction, label_from_scores
from include.gate_report import write_gate_report
from include.gates import (
    GateConfig,
    GateReport,
    evaluate_gates,
    macro_f1_per_resample,
    mcnemar_exact,
    one_vs_rest_equalized_odds,
    paired_bootstrap_f1_delta,
)

VOCABULARY = {
    "check_balance": "balance money account funds available savings checking left remaining total statement",
    "transfer_money": "transfer send move wire payment pay recipient iban between routing deposit",
    "card_lost": "card lost stolen missing block freeze debit wallet disappeared replace emergency",
    "opening_hours": "open hours close closing time branch weekend sunday holiday office",
    "reset_password": "password reset forgot login locked pin username credentials unlock sign",
    "book_appointment": "appointment book meeting advisor slot calendar consultation reserve tomorrow",
    "report_fraud": "fraud suspicious unknown charge scam unauthorized dispute strange hacked alert",
    "update_address": "address moved change street postal zip city relocate home mailing",
    "loan_info": "loan mortgage interest rate borrow installment financing repay term credit",
    "speak_agent": "agent human person representative operator talk speak someone real support",
}
INTENTS = sorted(VOCABULARY)
FILLER_TEXT = "please i want to can you my the would like need help me with a now today could hey thanks about for on"
FILLER = FILLER_TEXT.split()
CONFUSION = 0.10
TRAIN_PER_INTENT = 150
TEST_PER_INTENT = 60


def _utterance(rng: random.Random, intent: str) -> str:
    words = []
    for _ in range(rng.choice([1, 1, 2, 2, 3])):
        source = intent if rng.random() >= CONFUSION else rng.choice(INTENTS)
        words.append(rng.choice(VOCABULARY[source].split()))
    words += rng.sample(FILLER, rng.randint(1, 7))
    rng.shuffle(words)
    return " ".join(words)


def _length(text: str) -> str:
    n = len(text.split())
    return "short" if n <= 3 else "long" if n >= 8 else "medium"


@cache
def training_data() -> tuple[tuple[str, str], ...]:
    rng = random.Random(1)
    return tuple((_utterance(rng, i), i) for _ in range(TRAIN_PER_INTENT) for i in INTENTS)


@cache
def held_out() -> tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]:
    """(text, intent, slices) with locale and channel assigned at random, length from the word count."""
    rng = random.Random(2)
    rows = []
    for _ in range(TEST_PER_INTENT):
        for intent in INTENTS:
            text = _utterance(rng, intent)
            slices = {
                "locale": rng.choice(["en-US", "en-GB"]),
                "channel": rng.choice(["chat", "voice"]),
                "length": _length(text),
            }
            rows.append((text, intent, tuple(sorted(slices.items()))))
    return tuple(rows)


def subset(per_intent: int | None = None, drop: str | None = None, seed: int | None = None, share: float = 1.0):
    """Training rows: the first ``per_intent`` of each intent, without ``drop``, or a random ``share``."""
    rows = [r for r in training_data() if r[1] != drop]
    if per_intent is not None:
        seen: Counter[str] = Counter()
        kept = []
        for text, intent in rows:
            if seen[intent] < per_intent:
                kept.append((text, intent))
                seen[intent] += 1
        rows = kept
    if seed is not None:
        rows = random.Random(seed).sample(rows, int(len(rows) * share))
    return rows


def train(rows: list[tuple[str, str]]) -> Pipeline:
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=1000, C=5.0)
    )
    with threadpool_limits(1):  # BLAS threads oversubscribe small fits on a shared 2-core box (10x slower)
        model.fit([t for t, _ in rows], [i for _, i in rows])
    return model


def typo(word: str, rng: random.Random) -> str:
    """A speech-to-text style corruption: swap, drop or double a character."""
    if len(word) < 3:
        return word
    k = rng.randrange(1, len(word) - 1)
    op = rng.choice(["swap", "drop", "double"])
    if op == "swap":
        return word[: k - 1] + word[k] + word[k - 1] + word[k + 1 :]
    if op == "drop":
        return word[:k] + word[k + 1 :]
    return word[:k] + word[k] + word[k:]


def predict(model: Pipeline, threshold: float = 0.0, noisy_voice: bool = False, rows=None) -> list[Prediction]:
    """Score the held-out set like the pipeline: Cognigy-style score lists, thresholded to a label."""
    rows = rows if rows is not None else held_out()
    rng = random.Random(7)
    texts = []
    for text, _, slices in rows:
        if noisy_voice and dict(slices)["channel"] == "voice":
            text = " ".join(typo(w, rng) if rng.random() < 0.8 else w for w in text.split())
        texts.append(text)
    probabilities = model.predict_proba(texts)
    predictions = []
    for (_, intent, slices), text, probs in zip(rows, texts, probabilities, strict=True):
        scores = [{"name": c, "score": float(s), "negated": False} for c, s in zip(model.classes_, probs, strict=True)]
        label, score = label_from_scores(scores, threshold)
        predictions.append(Prediction(text, intent, label, score, dict(slices)))
    return predictions


@cache
def full_model() -> Pipeline:
    return train(subset())


def counts_of(rows) -> dict[str, int]:
    return dict(Counter(intent for _, intent in rows))


def run(challenger, champion=None, training=None, feedback=None, config=None) -> GateReport:
    return evaluate_gates(
        challenger,
        champion,
        INTENTS,
        training if training is not None else counts_of(subset()),
        feedback,
        config or GateConfig(),
    )


# --- configuration ---------------------------------------------------------------------------------------


def test_defaults_are_documented_and_bounded():
    config = GateConfig()
    assert (config.precision_floor, config.recall_floor, config.pr_balance_tolerance) == (0.80, 0.80, 0.05)
    assert config.bias_slices == ["locale", "channel", "length"]
    assert all(field.description for field in GateConfig.model_fields.values())
    with pytest.raises(ValidationError):
        GateConfig(precision_floor=1.2)
    with pytest.raises(ValidationError):
        GateConfig(bias_min_group_size=0)
    with pytest.raises(ValidationError):
        GateConfig(recal_floor=0.9)  # typo in a setting is an error, not silently ignored
    strict = GateConfig.spec_strict()
    assert strict.precision_floor == strict.recall_floor == pytest.approx(1 - strict.pr_balance_tolerance)
    assert strict.precision_floor == pytest.approx(0.95)


# --- gates on a good model ------------------------------------------------------------------------------


def test_good_model_passes_default_gates_but_not_the_strict_specification():
    predictions = predict(full_model())
    report = run(predictions)
    assert report.passed, [g.reason for g in report.gates if not g.passed]
    balance = report.gate("precision_recall_balance")
    macro_p, macro_r = report.metrics["macro"]["precision"], report.metrics["macro"]["recall"]
    assert 0.80 <= min(macro_p, macro_r) < 0.95  # a realistic model: good, not perfect
    assert f"{macro_p:.3f}" in balance.reason and f"{macro_r:.3f}" in balance.reason
    assert report.gate("champion_regression").skipped
    assert "no champion" in report.gate("champion_regression").reason

    strict = run(predictions, config=GateConfig.spec_strict())
    assert not strict.passed
    assert strict.failed_gates == ["precision_recall_balance"]
    assert "below the floor 0.95" in strict.gate("precision_recall_balance").reason


def test_high_threshold_trades_recall_for_precision_and_fails_balance():
    predictions = predict(full_model(), threshold=0.75)
    report = run(predictions)
    no_intent = sum(p.predicted_intent == NO_INTENT for p in predictions)
    assert no_intent > 0 and report.metrics["no_intent_predictions"] == no_intent
    macro = report.metrics["macro"]
    assert macro["precision"] - macro["recall"] > 0.05
    gate = report.gate("precision_recall_balance")
    assert not gate.passed
    assert "|P − R|" in gate.reason and f"{abs(macro['precision'] - macro['recall']):.3f}" in gate.reason


# --- per intent -------------------------------------------------------------------------------------------


def test_challenger_trained_without_an_intent_fails_per_intent_floor_naming_it():
    challenger = predict(train(subset(drop="card_lost")))
    report = run(challenger, training=counts_of(subset(drop="card_lost")))
    gate = report.gate("per_intent_floor")
    assert not gate.passed
    assert list(gate.values["offenders"]) == ["card_lost"]
    assert "card_lost: recall 0.00" in gate.reason
    confusion = report.metrics["per_intent"]["card_lost"]["top_confusions"][0]["intent"]
    assert f"mostly predicted as {confusion}" in gate.reason
    # the same data gap shows up in the training distribution as a missing intent
    training = report.gate("training_balance")
    assert not training.passed and training.values["missing"] == ["card_lost"]
    assert not report.passed


# --- bias ------------------------------------------------------------------------------------------------


def test_voice_utterances_with_transcription_noise_fail_bias_on_channel():
    report = run(predict(full_model(), noisy_voice=True))
    gate = report.gate("bias")
    assert not gate.passed and not report.passed
    assert gate.values["failed_slices"] == ["channel"]
    channel = report.bias["slices"]["channel"]
    assert channel["worst_group"] == "voice"
    assert channel["by_group"]["voice"]["accuracy"] < channel["by_group"]["chat"]["accuracy"] - 0.15
    assert f"{channel['accuracy_difference']:.3f}" in gate.reason and "voice" in gate.reason
    assert report.bias["bias_score"] == pytest.approx(channel["accuracy_difference"])
    low, high = channel["accuracy_difference_ci"]
    assert low <= channel["accuracy_difference"] <= high
    # macro recall disparity is reported as a warning, never as the reason to block
    assert any("macro recall differs" in w for w in gate.warnings)


def test_clean_model_has_small_disparity_and_small_groups_are_excluded():
    predictions = predict(full_model())
    for p in predictions[:12]:  # a rare locale with too few utterances to judge
        p.slices["locale"] = "en-IE"
    report = run(predictions)
    gate = report.gate("bias")
    assert gate.passed
    assert gate.values["bias_score"] <= 0.15
    locale = report.bias["slices"]["locale"]
    assert locale["excluded_groups"] == {"en-IE": 12}
    assert "en-IE" not in locale["by_group"]
    assert any("en-IE" in w for w in gate.warnings)


def test_bias_can_require_the_interval_to_clear_the_ceiling():
    # A disparity just above the ceiling on groups of ~100-300 utterances is within sampling noise: the
    # point estimate blocks, the interval-based rule does not.
    predictions = predict(full_model())
    bias_score = run(predictions).bias["bias_score"]
    tight = {"bias_ceiling": bias_score - 0.01, "bias_ratio_floor": 0.0}
    point = run(predictions, config=GateConfig(**tight))
    with_ci = run(predictions, config=GateConfig(**tight, bias_require_ci_above_ceiling=True))
    assert not point.gate("bias").passed
    assert with_ci.gate("bias").passed
    worst = point.gate("bias").values["failed_slices"][0]
    assert point.bias["slices"][worst]["accuracy_difference_ci"][0] < tight["bias_ceiling"]


def test_one_vs_rest_equalized_odds_matches_fairlearn_per_intent():
    predictions = predict(full_model(), noisy_voice=True)
    y_true = np.array([p.true_intent for p in predictions])
    y_pred = np.array([p.label for p in predictions])
    groups = np.array([p.slices["channel"] for p in predictions])
    expected = {
        intent: equalized_odds_difference(y_true == intent, y_pred == intent, sensitive_features=groups)
        for intent in INTENTS
    }
    worst = max(expected, key=expected.get)
    result = one_vs_rest_equalized_odds(y_true, y_pred, groups)
    assert result["intent"] == worst
    assert result["max"] == pytest.approx(expected[worst])


# --- training balance --------------------------------------------------------------------------------------


def test_skewed_training_counts_fail_training_balance():
    skewed = subset(per_intent=150)
    skewed = [r for r in skewed if r[1] != "loan_info"] + [r for r in skewed if r[1] == "loan_info"][:8]
    counts = counts_of(skewed)
    report = run(predict(train(skewed)), training=counts)
    gate = report.gate("training_balance")
    assert not gate.passed
    assert gate.values["imbalance_ratio"] == pytest.approx(150 / 8)
    assert "loan_info 8" in gate.reason and "exceeds 10.0" in gate.reason
    assert report.training_distribution["smallest"] == {"intent": "loan_info", "count": 8}

    few = {**counts, "loan_info": 3}
    assert (
        "fewer than 5 examples: loan_info (3)"
        in run(predict(full_model()), training=few).gate("training_balance").reason
    )
    balanced = run(predict(full_model()))
    assert balanced.gate("training_balance").passed
    assert balanced.training_distribution["imbalance_ratio"] == pytest.approx(1.0)


# --- champion regression ------------------------------------------------------------------------------------


def test_champion_clearly_better_blocks_with_significant_mcnemar():
    champion = predict(full_model())
    challenger = predict(train(subset(per_intent=4)))
    report = run(challenger, champion, training=counts_of(subset(per_intent=4)))
    gate = report.gate("champion_regression")
    assert not gate.passed and not report.passed
    assert gate.values["p_value"] < 0.05
    b, c = gate.values["discordant"]
    assert b > c
    assert gate.values["accuracy_delta"] < -0.01
    assert gate.values["macro_f1_delta_ci"][1] < -0.01
    assert "McNemar" in gate.reason and "significantly worse" in gate.reason
    assert report.comparison["verdict"] == "worse"
    summary = report.summary()
    assert "champion_regression" in summary["failed_gates"]
    assert 0 < summary["p_value"] == pytest.approx(gate.values["p_value"], rel=0.01)


def test_models_differing_only_by_training_seed_do_not_block():
    champion = predict(train(subset(seed=11, share=0.8)))
    challenger = predict(train(subset(seed=12, share=0.8)))
    report = run(challenger, champion)
    gate = report.gate("champion_regression")
    assert gate.values["discordant"][0] + gate.values["discordant"][1] > 0  # the models do disagree
    assert gate.passed
    assert gate.values["p_value"] >= 0.05
    assert report.comparison["verdict"] == "noise"
    assert "not statistically significant" in gate.reason and "nor counts as an improvement" in gate.reason


def test_challenger_clearly_better_passes_as_improvement():
    champion = predict(train(subset(per_intent=8)))
    challenger = predict(full_model())
    report = run(challenger, champion)
    gate = report.gate("champion_regression")
    assert gate.passed and report.comparison["verdict"] == "better"
    assert gate.values["p_value"] < 0.05 and gate.values["accuracy_delta"] > 0
    assert "significantly better" in gate.reason


def test_losing_an_intent_is_a_significant_per_intent_regression():
    champion = predict(full_model())
    challenger = predict(train(subset(drop="opening_hours")))
    report = run(challenger, champion)
    gate = report.gate("champion_regression")
    assert not gate.passed
    assert gate.values["intent_regressions"] == ["opening_hours"]
    assert "opening_hours" in gate.reason and "lost more than 0.10 F1" in gate.reason
    assert report.comparison["per_intent"]["opening_hours"]["challenger_f1"] == 0.0


def test_pairing_uses_only_utterances_scored_by_both_models():
    champion = predict(full_model())
    challenger = predict(full_model())
    challenger[0].status = "failed"
    shuffled = list(reversed(champion[5:]))  # order does not matter, text + intent does
    report = run(challenger, shuffled)
    assert report.comparison["n_paired"] == len(challenger) - 5
    assert report.comparison["unpaired_challenger"] == 4
    assert report.comparison["accuracy"]["delta"] == 0.0
    assert report.gate("champion_regression").passed


def test_mcnemar_matches_exact_binomial_on_discordant_pairs():
    champion = np.array([True] * 30 + [False] * 5 + [True] * 60)
    challenger = np.array([False] * 30 + [True] * 5 + [True] * 60)
    result = mcnemar_exact(challenger, champion)
    assert (result["b_champion_only_right"], result["c_challenger_only_right"]) == (30, 5)
    assert result["p_value"] < 0.001
    assert mcnemar_exact(champion, champion)["p_value"] == 1.0


def test_vectorized_bootstrap_matches_sklearn_on_the_same_resamples():
    predictions = predict(full_model())
    y_true = np.array([p.true_intent for p in predictions])
    y_pred = np.array([p.label for p in predictions])
    codes = {label: i for i, label in enumerate(INTENTS)}
    true_codes = np.array([codes[y] for y in y_true])
    pred_codes = np.array([codes.get(y, len(INTENTS)) for y in y_pred])
    indices = np.random.default_rng(3).integers(0, len(y_true), size=(5, len(y_true)))
    _, macro = macro_f1_per_resample(true_codes, pred_codes, indices, len(INTENTS))
    for row, idx in zip(macro, indices, strict=True):
        expected = f1_score(y_true[idx], y_pred[idx], labels=INTENTS, average="macro", zero_division=0)
        assert row == pytest.approx(expected)


def test_bootstrap_of_thousands_of_utterances_is_fast():
    import time

    rng = np.random.default_rng(0)
    labels = [f"intent_{i}" for i in range(40)]
    y_true = rng.choice(labels, 3000)
    a = np.where(rng.random(3000) < 0.9, y_true, rng.choice(labels, 3000))
    b = np.where(rng.random(3000) < 0.88, y_true, rng.choice(labels, 3000))
    started = time.perf_counter()
    result = paired_bootstrap_f1_delta(y_true, a, b, labels, n_resamples=2000, seed=0)
    assert time.perf_counter() - started < 10
    assert result["ci_low"] < result["mean"] < result["ci_high"]


# --- platform feedback, coverage, report ------------------------------------------------------------------

FEEDBACK = {
    "feedbackReport": {"info": {"accuracy": 0.71, "fScore": 0.69}, "findings": [{"type": "poorAccuracy"}]},
    "intents": [
        {
            "name": "card_lost",
            "feedbackReport": {
                "info": {"fScore": 0.55},
                "findings": [{"type": "strongOverlap", "overlappingIntentName": "report_fraud"}],
            },
        },
        {"name": "loan_info", "feedbackReport": {"info": {"fScore": 0.92}, "findings": []}},
    ],
}


def test_platform_feedback_is_listed_and_blocks_only_when_configured():
    predictions = predict(full_model())
    report = run(predictions, feedback=FEEDBACK)
    gate = report.gate("platform_feedback")
    assert not gate.passed and not gate.blocking
    assert report.passed and report.warning_gates == ["platform_feedback"]
    assert "poorAccuracy (flow)" in gate.reason
    assert "strongOverlap (intent card_lost with report_fraud)" in gate.reason

    blocking = run(predictions, feedback=FEEDBACK, config=GateConfig(block_on_feedback_findings=True))
    assert not blocking.passed and blocking.failed_gates == ["platform_feedback"]
    assert run(predictions).gate("platform_feedback").skipped


def test_many_unscored_utterances_fail_scoring_coverage():
    predictions = predict(full_model())
    for p in predictions[::10]:
        p.status, p.predicted_intent, p.score = "failed", None, None
    report = run(predictions)
    gate = report.gate("scoring_coverage")
    assert not gate.passed
    assert report.metrics["counts"]["failed"] == len(predictions[::10])
    assert "failed (10.0% unscored" in gate.reason


def test_summary_is_small_and_report_files_round_trip(tmp_path):
    champion = predict(train(subset(per_intent=4)))
    challenger = predict(full_model(), noisy_voice=True)
    report = run(challenger, champion, feedback=FEEDBACK)

    summary = report.summary()
    assert len(json.dumps(summary)) < 2048
    assert summary["passed"] is False and "bias" in summary["failed_gates"]
    assert summary["accuracy_delta"] > 0 and summary["bias_score"] > 0.15

    paths = write_gate_report(report, tmp_path / "out")
    assert set(paths) == {"gate_report.json", "confusion_matrix.png", "per_intent.csv", "per_intent.md"}
    assert all(path.parent == tmp_path / "out" and path.name == name for name, path in paths.items())
    with Image.open(paths["confusion_matrix.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 500
    loaded = json.loads(paths["gate_report.json"].read_text())
    assert loaded == report.to_dict()
    assert GateReport.from_dict(loaded).to_dict() == loaded
    csv_lines = paths["per_intent.csv"].read_text().splitlines()
    assert csv_lines[0] == "intent,support,precision,recall,f1,champion_f1,f1_delta,top_confusion"
    assert len(csv_lines) == 1 + len(INTENTS)
    markdown = paths["per_intent.md"].read_text()
    assert "# Gate report: BLOCKED" in markdown and "| bias | FAIL |" in markdown
    assert all(f"| {intent} |" in markdown for intent in INTENTS)
