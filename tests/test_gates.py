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

from include.evaluation.config import GateConfig
from include.evaluation.gates import evaluate_gates
from include.evaluation.metrics import NO_INTENT, Prediction, label_from_scores
from include.evaluation.names import GATE_ORDER, GATE_PROFILES
from include.evaluation.report import REPORT_FILES, write_gate_report
from include.evaluation.results import GateReport
from include.evaluation.statistics import (
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


def texts_of(rows) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for text, intent in rows:
        texts.setdefault(intent, []).append(text)
    return texts


FIRST_MODEL = GateConfig(allow_unevaluated=["champion_regression"])  # no champion serves yet


def run(challenger, champion=None, training=None, feedback=None, config=None, texts=None, **kwargs) -> GateReport:
    return evaluate_gates(
        challenger,
        champion,
        INTENTS,
        training if training is not None else counts_of(subset()),
        feedback,
        config or GateConfig(),
        training_texts=texts if texts is not None else texts_of(subset()),
        **kwargs,
    )


# --- configuration ---------------------------------------------------------------------------------------


def test_defaults_are_documented_and_bounded():
    config = GateConfig()
    assert (config.precision_floor, config.recall_floor, config.pr_balance_tolerance) == (0.80, 0.80, 0.05)
    assert config.bias_slices is None  # every slice dimension present in the held-out predictions
    assert config.allow_unevaluated == [] and config.max_leakage_share == 0.01
    assert "overstates accuracy" in GateConfig.model_fields["max_leakage_share"].description
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
    report = run(predictions, config=FIRST_MODEL)
    assert report.passed, [g.reason for g in report.gates if not g.passed]
    balance = report.gate("precision_recall_balance")
    macro_p, macro_r = report.metrics["macro"]["precision"], report.metrics["macro"]["recall"]
    assert 0.80 <= min(macro_p, macro_r) < 0.95  # a realistic model: good, not perfect
    assert f"{macro_p:.3f}" in balance.reason and f"{macro_r:.3f}" in balance.reason
    regression = report.gate("champion_regression")
    assert regression.status == "not_evaluated" and regression.skipped and regression.passed
    assert "no champion predictions" in regression.reason and "allowed by allow_unevaluated" in regression.reason
    assert [g.status for g in report.gates if g.name != "champion_regression" and g.blocking] == ["passed"] * 6

    strict = run(predictions, config=GateConfig.profile("strict", allow_unevaluated=["champion_regression"]))
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
    report = run(predictions, feedback=FEEDBACK, config=FIRST_MODEL)
    gate = report.gate("platform_feedback")
    assert not gate.passed and not gate.blocking and gate.status == "failed"
    assert report.passed and report.warning_gates == ["platform_feedback"]
    assert "poorAccuracy (flow)" in gate.reason
    assert "strongOverlap (intent card_lost with report_fraud)" in gate.reason
    assert "flow accuracy 0.71, flow fScore 0.69" in gate.reason

    blocking_config = GateConfig(block_on_feedback_findings=True, allow_unevaluated=["champion_regression"])
    blocking = run(predictions, feedback=FEEDBACK, config=blocking_config)
    assert not blocking.passed and blocking.failed_gates == ["platform_feedback"]
    without = run(predictions).gate("platform_feedback")
    assert without.skipped and without.status == "not_evaluated" and not without.passed


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
    assert summary["not_evaluated_gates"] == {} and summary["leaked_share"] == 0.0

    paths = write_gate_report(report, tmp_path / "out")
    assert list(paths) == list(REPORT_FILES)
    assert {"top_confusions.csv", "top_confusions.md", "top_confusions.png", "per_intent_f1_change.png"} <= set(paths)
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


# --- a gate that cannot measure does not pass -------------------------------------------------------------


def _hand_built(per_intent: int, slices=None, right=lambda i, k: True) -> list[Prediction]:
    """``per_intent`` utterances per intent; ``right(intent_index, k)`` decides whether it is predicted right."""
    predictions = []
    for i, intent in enumerate(INTENTS):
        for k in range(per_intent):
            predicted = intent if right(i, k) else INTENTS[(i + 1) % len(INTENTS)]
            extra = slices(i, k) if slices else {}
            predictions.append(Prediction(f"{intent} utterance {k}", intent, predicted, 0.9, extra))
    return predictions


def test_first_model_without_champion_is_not_evaluated_and_blocks_unless_allowed(tmp_path):
    predictions = predict(full_model())
    report = run(predictions)
    gate = report.gate("champion_regression")
    assert gate.status == "not_evaluated" and not gate.passed and gate.blocking
    assert not report.passed and report.failed_gates == ["champion_regression"]
    assert gate.reason.startswith("Not evaluated: no champion predictions were given")
    assert "blocks promotion" in gate.reason
    summary = report.summary()
    assert list(summary["not_evaluated_gates"]) == ["champion_regression", "platform_feedback"]
    assert summary["not_evaluated_gates"]["champion_regression"] == (
        "not evaluated: no champion predictions were given (no model is serving yet), so there is nothing to "
        "regress against"
    )
    assert summary["failed_gates"] == ["champion_regression"] and summary["warning_gates"] == []
    markdown = write_gate_report(report, tmp_path)["per_intent.md"].read_text()
    assert "| champion_regression | NOT EVALUATED (blocks) |" in markdown
    assert "| platform_feedback | not evaluated (not blocking) |" in markdown
    assert "## Not evaluated" in markdown and "- **champion_regression**: Not evaluated" in markdown

    allowed = run(predictions, config=FIRST_MODEL)
    gate = allowed.gate("champion_regression")
    assert allowed.passed and gate.passed and gate.status == "not_evaluated"
    assert gate.result_label == "not evaluated (allowed by allow_unevaluated)"
    assert "champion_regression" in allowed.summary()["not_evaluated_gates"]
    assert "champion_regression" not in allowed.failed_gates


def test_perfect_on_chat_and_wrong_on_voice_with_few_utterances_does_not_pass_bias():
    # 8 chat utterances, all right; 8 voice utterances, all wrong: both groups are below the 20 utterances
    # the bias gate needs to measure a group, so the disparity is visible but cannot be measured.
    predictions = _hand_built(
        per_intent=2, slices=lambda i, k: {"channel": "chat" if k == 0 else "voice"}, right=lambda i, k: k == 0
    )[:16]
    report = run(predictions)
    gate = report.gate("bias")
    assert gate.status == "not_evaluated" and not gate.passed
    assert "bias" in report.failed_gates and not report.passed
    assert "chat 1.00 (n=8), voice 0.00 (n=8)" in gate.reason
    assert "fewer than 2 groups with ≥ 20 scored utterances" in gate.reason
    assert gate.values["unmeasured_slices"] == ["channel"] and gate.values["bias_score"] is None
    assert report.bias["slices"]["channel"]["raw_accuracy"] == {"chat": 1.0, "voice": 0.0}

    # allowed: reported as not evaluated, does not block, and never as "passed"
    allowed = run(predictions, config=GateConfig(allow_unevaluated=["bias"]))
    assert allowed.gate("bias").status == "not_evaluated" and "bias" not in allowed.failed_gates


def test_a_measured_slice_does_not_hide_an_unmeasurable_one():
    # locale: two big groups, equally good; channel: 50 chat all right, 10 voice all wrong (too few to measure)
    def slices(i, k):
        return {"locale": "en-US" if i % 2 else "en-GB", "channel": "voice" if k == 0 else "chat"}

    predictions = _hand_built(per_intent=6, slices=slices, right=lambda i, k: k != 0)
    report = run(predictions)
    gate = report.gate("bias")
    assert gate.values["evaluated_slices"] == ["locale"] and gate.values["unmeasured_slices"] == ["channel"]
    assert gate.status == "not_evaluated" and not gate.passed
    assert "could not be measured for channel" in gate.reason and "voice 0.00 (n=10)" in gate.reason


def test_bias_slices_come_from_the_data_and_none_are_invented():
    one_locale = _hand_built(per_intent=6, slices=lambda i, k: {"channel": ["chat", "voice"][k % 2], "locale": "de"})
    report = run(one_locale)
    gate = report.gate("bias")
    assert report.bias["slice_dimensions"] == ["channel", "locale"] and gate.values["slices_from"] == "data"
    assert gate.status == "passed" and gate.values["evaluated_slices"] == ["channel"]
    assert any("locale: not evaluated, one group only (de, n=60)" in w for w in gate.warnings)
    assert "length" not in report.bias["slices"]

    no_slices = run(_hand_built(per_intent=6))
    gate = no_slices.gate("bias")
    assert gate.status == "not_evaluated" and "bias" in no_slices.failed_gates
    assert gate.reason.startswith("Not evaluated: the held-out set has no slice columns.")

    explicit = run(one_locale, config=GateConfig(bias_slices=["channel"]))
    assert explicit.bias["slice_dimensions"] == ["channel"] and explicit.gate("bias").status == "passed"
    missing = run(one_locale, config=GateConfig(bias_slices=["length"])).gate("bias")
    assert missing.status == "not_evaluated" and "no scored held-out utterance has a 'length' slice" in missing.reason


def test_every_gate_that_cannot_measure_is_not_evaluated():
    empty = evaluate_gates([], [], INTENTS, {}, None, GateConfig(), training_texts=None)
    statuses = {g.name: g.status for g in empty.gates}
    assert statuses == dict.fromkeys(GATE_ORDER, "not_evaluated")
    assert not empty.passed and empty.failed_gates == [g for g in GATE_ORDER if g != "platform_feedback"]
    assert "0 utterances" in empty.gate("scoring_coverage").reason
    assert "no training counts were given" in empty.gate("training_balance").reason
    assert "no training sentences were given" in empty.gate("leakage").reason
    assert "no Cognigy feedback report" in empty.gate("platform_feedback").reason
    summary = empty.summary()
    assert list(summary["not_evaluated_gates"]) == list(GATE_ORDER) and len(json.dumps(summary)) < 2048
    assert summary["not_evaluated_gates"]["bias"] == "not evaluated: the held-out set has no slice columns"

    few = run(_hand_built(per_intent=3, slices=lambda i, k: {"channel": "chat"}))
    per_intent = few.gate("per_intent_floor")
    assert per_intent.status == "not_evaluated" and not per_intent.passed
    assert "no intent has the 5 test utterances needed to be judged (the most any intent has is 3)" in per_intent.reason

    predictions = predict(full_model())
    unscored_champion = [Prediction(p.text, p.true_intent, None, None, p.slices, "failed") for p in predictions]
    regression = run(predictions, unscored_champion).gate("champion_regression")
    assert (
        regression.status == "not_evaluated" and "none of the 600 champion predictions was scored" in regression.reason
    )


# --- leakage ---------------------------------------------------------------------------------------------


def test_held_out_utterances_seen_in_training_fail_leakage():
    predictions = _hand_built(per_intent=10, slices=lambda i, k: {"channel": ["chat", "voice"][k % 2]})
    training = {intent: [f"other sentence {k}" for k in range(5)] for intent in INTENTS}
    training["card_lost"].append("  CARD_LOST   utterance 3 ")  # same text after casefold and whitespace
    training["loan_info"].append("check_balance utterance 7")  # and one labelled differently in training
    report = run(predictions, texts=training)
    gate = report.gate("leakage")
    assert GATE_ORDER.index("leakage") == GATE_ORDER.index("scoring_coverage") + 1
    assert gate.status == "failed" and "leakage" in report.failed_gates
    assert gate.values["leaked"] == 2 and gate.values["leaked_share"] == pytest.approx(0.02)
    assert gate.values["leaked_utterances"] == [
        {"text": "card_lost utterance 3", "intent": "card_lost", "training_intents": ["card_lost"]},
        {"text": "check_balance utterance 7", "intent": "check_balance", "training_intents": ["loan_info"]},
    ]
    assert "2 of 100 held-out utterances (2.0%) also appear among the training sentences" in gate.reason
    assert "above the 1.0% allowed" in gate.reason
    assert any("different intent in training" in w for w in gate.warnings)
    assert report.summary()["leaked_share"] == 0.02

    training["loan_info"].pop()
    one = run(predictions, texts=training).gate("leakage")
    assert one.status == "passed" and one.values["leaked_share"] == pytest.approx(0.01)

    clean = run(predictions, texts={"card_lost": ["nothing alike"]}).gate("leakage")
    assert clean.passed and "None of the 100 held-out utterances" in clean.reason


def test_leakage_lists_at_most_fifty_utterances():
    predictions = _hand_built(per_intent=10)
    training = {"any": [p.text.upper() for p in predictions[:60]]}
    gate = run(predictions, texts=training).gate("leakage")
    assert gate.values["leaked"] == 60 and gate.values["listed"] == 50
    assert len(gate.values["leaked_utterances"]) == 50 and gate.values["leaked_share"] == pytest.approx(0.6)


# --- platform feedback as the client returns it -------------------------------------------------------------

CLIENT_FEEDBACK = {  # include.cognigy.rest_v2.feedback(): the flow's feedbackReport plus the intents
    "info": {"accuracy": 0.8123, "fScore": 0.79},
    "findings": [{"type": "fairAccuracy"}, {"type": "lowDataIntents", "intents": ["loan_info"]}],
    "isTrainingOutOfDate": True,
    "intents": [
        {"name": "card_lost", "feedbackReport": {"info": {"fScore": 0.55}, "findings": [{"type": "poorFScore"}]}},
        {"name": "loan_info", "feedbackReport": {"info": {"fScore": 0.7}, "findings": [{"type": "fewSentences"}]}},
        {
            "name": "report_fraud",
            "feedbackReport": {
                "info": {"fScore": 0.9},
                "findings": [{"type": "goodFScore"}, {"type": "someOverlap", "overlappingIntentName": "card_lost"}],
            },
        },
    ],
}


def test_platform_feedback_counts_only_problem_findings_and_reads_the_flow_numbers():
    gate = run(predict(full_model()), feedback=CLIENT_FEEDBACK).gate("platform_feedback")
    assert gate.status == "failed"
    assert [f["type"] for f in gate.values["findings"]] == ["lowDataIntents", "poorFScore", "fewSentences"]
    assert "3 problem finding(s)" in gate.reason and "lowDataIntents (flow: loan_info)" in gate.reason
    assert "flow accuracy 0.812, flow fScore 0.79" in gate.reason and "None" not in gate.reason
    assert gate.values["accuracy"] == 0.8123 and gate.values["f_score"] == 0.79
    assert gate.values["good_findings"] == ["goodFScore"]
    assert [f["type"] for f in gate.values["warning_findings"]] == ["fairAccuracy", "someOverlap"]
    assert any(w.startswith("fairAccuracy (flow)") for w in gate.warnings)
    assert any("training is out of date" in w for w in gate.warnings)
    assert gate.values["intent_f_scores"] == {"card_lost": 0.55, "loan_info": 0.7, "report_fraud": 0.9}

    only_fair = {"info": {"accuracy": 0.75, "fScore": None}, "findings": [{"type": "fairAccuracy"}], "intents": []}
    fair = run(predict(full_model()), feedback=only_fair).gate("platform_feedback")
    assert fair.status == "passed" and fair.values["findings"] == []
    assert fair.reason == "The Cognigy feedback report has no problem findings; flow accuracy 0.75."

    server_only = run(predict(full_model()), feedback={"serverMetrics": {"accuracy": 0.9}}).gate("platform_feedback")
    assert server_only.status == "not_evaluated" and "server-side metrics only" in server_only.reason
    blocking = run(predict(full_model()), config=GateConfig(block_on_feedback_findings=True))
    assert blocking.gate("platform_feedback").status == "not_evaluated"
    assert "platform_feedback" in blocking.failed_gates


# --- profiles, fingerprint, provenance ---------------------------------------------------------------------


def test_profiles_and_fingerprint():
    assert GATE_PROFILES == ("default", "strict", "lenient")
    # issue 25: the specification's thresholds are the default profile; lenient is GateConfig's field defaults
    assert GateConfig.profile("lenient") == GateConfig()
    assert GateConfig.profile("default") == GateConfig.profile("strict")
    strict = GateConfig.profile("strict")
    assert (strict.precision_floor, strict.recall_floor) == (pytest.approx(0.95), pytest.approx(0.95))
    assert (strict.pr_balance_tolerance, strict.bias_ceiling) == (0.05, 0.15)
    assert GateConfig.spec_strict() == strict
    assert GateConfig.profile("strict", recall_floor=0.9).recall_floor == 0.9
    with pytest.raises(ValueError, match="unknown gate profile"):
        GateConfig.profile("loose")
    with pytest.raises(ValidationError):
        GateConfig(allow_unevaluated=["bias", "champion_regresion"])  # typo is an error

    fingerprint = GateConfig().fingerprint()
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert fingerprint == GateConfig().fingerprint() == GateConfig(**GateConfig().model_dump()).fingerprint()
    assert fingerprint != strict.fingerprint() != GateConfig(seed=1).fingerprint()


def test_held_out_provenance_is_stored_and_written(tmp_path):
    provenance = {"name": "held_out_en.jsonl", "sha256": "ab" * 32, "rows": 600, "intents": len(INTENTS)}
    report = run(predict(full_model()), config=FIRST_MODEL, held_out=provenance)
    assert report.held_out == provenance
    summary = report.summary()
    assert summary["held_out_sha256"] == "ab" * 32 and summary["config_fingerprint"] == FIRST_MODEL.fingerprint()
    paths = write_gate_report(report, tmp_path)
    loaded = json.loads(paths["gate_report.json"].read_text())
    assert loaded["held_out"] == provenance and loaded["config_fingerprint"] == FIRST_MODEL.fingerprint()
    assert GateReport.from_dict(loaded).held_out == provenance
    markdown = paths["per_intent.md"].read_text()
    assert "| sha256 | " + "ab" * 32 + " |" in markdown and "| rows | 600 |" in markdown
    assert f"`{FIRST_MODEL.fingerprint()}`" in markdown
    with pytest.raises(TypeError, match="JSON-safe"):
        run(predict(full_model()), held_out={"opened": object()})
