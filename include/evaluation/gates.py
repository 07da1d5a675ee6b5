"""Quality gates that decide whether a retrained intent model (challenger) may replace the serving one.

Both models are scored on the same frozen held-out set in the same run. Every gate returns a
``GateResult`` with a status ("passed", "failed" or "not_evaluated"), the numbers it used and a plain-language
reason; the model is promoted only when every *blocking* gate passed. **A gate that cannot measure does not
pass**: a blocking gate that is not evaluated blocks promotion unless ``GateConfig.allow_unevaluated`` names
it. Definitions and default thresholds follow Rasa/Azure/Lex practice, Dietterich 1998, Dror et al. 2018 and
fairlearn:

- ``scoring_coverage``: the share of held-out utterances that could not be scored stays small, so the
  metrics describe the whole set.
- ``leakage``: held-out utterances whose normalised text also appears in the training sentences stay rare
  (a test set that overlaps training overstates accuracy).
- ``precision_recall_balance``: macro P and macro R above their floors and |P − R| within a tolerance.
- ``per_intent_floor``: every intent with enough test utterances keeps recall and F1 above a floor.
- ``bias``: accuracy disparity over slices (by default every slice dimension present in the held-out
  predictions) measured with fairlearn ``MetricFrame``: between-groups difference ≤ ceiling and min/max
  ratio ≥ floor; macro-recall disparity is a warning only.
- ``training_balance``: training-data imbalance ratio max n_c / min n_c and the smallest class size.
- ``champion_regression``: paired comparison on the same utterances (McNemar exact test, paired bootstrap
  CI of the macro-F1 delta, per-intent F1 drop). Only a *significantly* worse challenger is blocked;
  a non-significant difference is noise and is neither a regression nor an improvement.
- ``platform_feedback``: problem findings of the Cognigy NLU feedback report, blocking only when configured.

The thresholds are ``GateConfig`` (``config.py``), the verdicts ``GateResult``/``GateReport`` (``results.py``),
the paired statistics are in ``statistics.py``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from fairlearn.metrics import MetricFrame, count
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, recall_score

from include.cognigy.training_jobs import SPEC_F1_BASELINE
from include.evaluation.config import GateConfig
from include.evaluation.metrics import NO_INTENT, Prediction, compute_metrics, true_labels
from include.evaluation.results import GateReport, GateResult, jsonable, round_value
from include.evaluation.statistics import (
    bootstrap_group_accuracy_difference,
    mcnemar_exact,
    one_vs_rest_equalized_odds,
    pair_predictions,
    paired_bootstrap_f1_delta,
)

MAX_LEAKED_LISTED = 50  # leaked held-out utterances listed in the report


def evaluate_gates(
    challenger: list[Prediction],
    champion: list[Prediction] | None,
    labels: list[str],
    training_counts: Mapping[str, int] | None,
    feedback: Mapping[str, Any] | None,
    config: GateConfig,
    *,
    training_texts: Mapping[str, Sequence[str]] | None = None,
    held_out: Mapping[str, Any] | None = None,
) -> GateReport:
    """Run every gate on the challenger's (and champion's) held-out predictions.

    ``training_texts`` (intent → training sentences) feeds the leakage gate (None: not evaluated).
    ``held_out`` is the provenance of the held-out file (e.g. name, sha256, rows, intents), JSON-safe; it is
    stored on the report as given.
    """
    provenance = _provenance(held_out)
    metrics = compute_metrics(challenger, labels)
    champion_metrics = compute_metrics(champion, labels) if champion is not None else None
    bias_gate, bias = _bias_gate(challenger, config)
    training_gate, distribution = _training_balance_gate(training_counts or {}, labels, config)
    regression_gate, comparison = _champion_regression_gate(challenger, champion, labels, config)
    gates = [
        _scoring_coverage_gate(metrics, config),
        _leakage_gate(challenger, training_texts, config),
        _precision_recall_gate(metrics, config),
        _per_intent_gate(metrics, config),
        bias_gate,
        training_gate,
        regression_gate,
        _platform_feedback_gate(feedback, config),
    ]
    return GateReport(
        passed=not any(g.blocks for g in gates),
        gates=gates,
        metrics=metrics,
        champion_metrics=champion_metrics,
        comparison=comparison,
        bias=bias,
        training_distribution=distribution,
        config=config,
        held_out=provenance,
    )


def _provenance(held_out: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if held_out is None:
        return None
    data = jsonable(dict(held_out))
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"held_out must be JSON-safe (name, sha256, rows, intents): {exc}") from exc
    return data


def _not_evaluated(
    name: str,
    blocking: bool,
    why: str,
    config: GateConfig,
    values: dict[str, Any] | None = None,
    thresholds: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> GateResult:
    """A gate that could not measure: it does not pass, and blocks when blocking unless allowed."""
    allowed = name in config.allow_unevaluated
    why = why.rstrip(".")
    if not blocking:
        effect = "This gate is not blocking."
    elif allowed:
        effect = "Not evaluated (allowed by allow_unevaluated), so it does not block promotion."
    else:
        effect = "A blocking gate that cannot measure blocks promotion; list it in allow_unevaluated to accept that."
    return GateResult(
        name=name,
        passed=allowed,
        blocking=blocking,
        values={**(values or {}), "not_evaluated_because": why},
        thresholds=thresholds or {},
        reason=f"Not evaluated: {why}. {effect}",
        warnings=warnings or [],
        status="not_evaluated",
        allowed_unevaluated=allowed,
    )


# --- gates on the challenger alone ---------------------------------------------------------------------


def _scoring_coverage_gate(metrics: dict[str, Any], config: GateConfig) -> GateResult:
    counts = metrics["counts"]
    total = counts["total"]
    thresholds = {"max_unscored_share": config.max_unscored_share}
    if total == 0:
        return _not_evaluated(
            "scoring_coverage",
            True,
            "no held-out predictions were given (0 utterances), so the challenger cannot be judged",
            config,
            values={**counts, "unscored_share": None},
            thresholds=thresholds,
        )
    unscored = counts["skipped"] + counts["failed"]
    share = unscored / total
    passed = counts["scored"] > 0 and share <= config.max_unscored_share
    verdict = "within" if passed else "above"
    reason = (
        f"{counts['scored']} of {total} held-out utterances were scored; {counts['skipped']} skipped and "
        f"{counts['failed']} failed ({share:.1%} unscored, {verdict} the {config.max_unscored_share:.1%} "
        "allowed)."
    )
    return GateResult(
        name="scoring_coverage",
        passed=passed,
        blocking=True,
        values={**counts, "unscored_share": share},
        thresholds=thresholds,
        reason=reason,
    )


_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """The form in which held-out and training sentences are compared: casefolded, whitespace collapsed."""
    return _WHITESPACE.sub(" ", text.casefold()).strip()


def _leakage_gate(
    predictions: Sequence[Prediction], training_texts: Mapping[str, Sequence[str]] | None, config: GateConfig
) -> GateResult:
    thresholds = {"max_leakage_share": config.max_leakage_share}
    if training_texts is None:
        return _not_evaluated(
            "leakage",
            True,
            "no training sentences were given, so overlap between the held-out set and training is unknown",
            config,
            thresholds=thresholds,
        )
    trained: dict[str, set[str]] = defaultdict(set)
    for intent, sentences in training_texts.items():
        for sentence in sentences:
            key = normalise_text(str(sentence))
            if key:
                trained[key].add(str(intent))
    held = [p for p in predictions if normalise_text(p.text)]
    if not trained or not held:
        why = "the training sentences are empty" if not trained else "the held-out set has no utterance"
        return _not_evaluated("leakage", True, why, config, thresholds=thresholds)
    leaked = [p for p in held if normalise_text(p.text) in trained]
    share = len(leaked) / len(held)
    listed = [
        {
            "text": p.text,
            "intent": p.true_intent,
            "training_intents": sorted(trained[normalise_text(p.text)]),
        }
        for p in leaked[:MAX_LEAKED_LISTED]
    ]
    mislabelled = sum(1 for p in leaked if p.true_intent not in trained[normalise_text(p.text)])
    passed = share <= config.max_leakage_share
    examples = ", ".join(f"{item['text']!r} ({item['intent']})" for item in listed[:5])
    if not leaked:
        reason = f"None of the {len(held)} held-out utterances appears among the training sentences."
    else:
        verdict = "within" if passed else "above"
        reason = (
            f"{len(leaked)} of {len(held)} held-out utterances ({share:.1%}) also appear among the training "
            f"sentences, {verdict} the {config.max_leakage_share:.1%} allowed; such utterances overstate "
            f"accuracy. Examples: {examples}."
        )
    warnings_ = []
    if mislabelled:
        warnings_.append(
            f"{mislabelled} leaked utterance(s) carry a different intent in training than in the held-out set"
        )
    return GateResult(
        name="leakage",
        passed=passed,
        blocking=True,
        values={
            "held_out_utterances": len(held),
            "leaked": len(leaked),
            "leaked_share": share,
            "leaked_intents": dict(sorted(Counter(p.true_intent for p in leaked).items())),
            "leaked_utterances": listed,
            "listed": len(listed),
            "normalisation": "casefold, whitespace collapsed, stripped",
        },
        thresholds=thresholds,
        reason=reason,
        warnings=warnings_,
    )


def _precision_recall_gate(metrics: dict[str, Any], config: GateConfig) -> GateResult:
    p, r = metrics["macro"]["precision"], metrics["macro"]["recall"]
    gap = abs(p - r)
    problems = []
    if p < config.precision_floor:
        problems.append(f"macro precision {p:.3f} is below the floor {config.precision_floor:.2f}")
    if r < config.recall_floor:
        problems.append(f"macro recall {r:.3f} is below the floor {config.recall_floor:.2f}")
    if gap > config.pr_balance_tolerance:
        problems.append(f"|P − R| = {gap:.3f} exceeds the tolerance {config.pr_balance_tolerance:.2f}")
    if metrics["counts"]["scored"] == 0:
        return _not_evaluated(
            "precision_recall_balance",
            True,
            "no held-out utterance was scored, so precision and recall cannot be measured",
            config,
            thresholds={
                "precision_floor": config.precision_floor,
                "recall_floor": config.recall_floor,
                "pr_balance_tolerance": config.pr_balance_tolerance,
            },
        )
    if problems:
        reason = "Failed: " + "; ".join(problems) + "."
    else:
        reason = (
            f"Macro precision {p:.3f} and macro recall {r:.3f} are above their floors "
            f"({config.precision_floor:.2f}/{config.recall_floor:.2f}) and differ by {gap:.3f} "
            f"(≤ {config.pr_balance_tolerance:.2f})."
        )
    return GateResult(
        name="precision_recall_balance",
        passed=not problems,
        blocking=True,
        values={
            "macro_precision": p,
            "macro_recall": r,
            "macro_f1": metrics["macro"]["f1"],
            "weighted_f1": metrics["weighted"]["f1"],
            "gap": gap,
        },
        thresholds={
            "precision_floor": config.precision_floor,
            "recall_floor": config.recall_floor,
            "pr_balance_tolerance": config.pr_balance_tolerance,
        },
        reason=reason,
    )


def _describe_confusion(stats: Mapping[str, Any]) -> str:
    confusions = stats.get("top_confusions") or []
    if not confusions:
        return "no dominant confusion"
    top = confusions[0]
    name = "no intent (below threshold)" if top["intent"] == NO_INTENT else top["intent"]
    return f"mostly predicted as {name} ({top['count']} of {stats['support']})"


def _per_intent_gate(metrics: dict[str, Any], config: GateConfig) -> GateResult:
    per_intent = metrics["per_intent"]
    judged = {k: v for k, v in per_intent.items() if v["support"] >= config.per_intent_min_support}
    too_small = sorted(k for k, v in per_intent.items() if 0 < v["support"] < config.per_intent_min_support)
    offenders = {
        name: stats
        for name, stats in judged.items()
        if stats["recall"] < config.per_intent_recall_floor or stats["f1"] < config.per_intent_f1_floor
    }
    notes = []
    if too_small:
        notes.append(f"not judged (fewer than {config.per_intent_min_support} test utterances): {too_small}")
    if metrics["labels_without_support"]:
        notes.append(f"intents without any test utterance: {metrics['labels_without_support']}")
    gaps = sorted(
        name for name, s in judged.items() if abs(s["precision"] - s["recall"]) > config.per_intent_pr_gap_warning
    )
    if gaps:
        notes.append(f"|precision − recall| > {config.per_intent_pr_gap_warning:.2f} for {gaps}")
    weak = sorted(name for name, s in judged.items() if s["f1"] <= config.weak_intent_f1)
    weak_share = len(weak) / len(judged) if judged else 0.0
    if weak_share > config.weak_intent_max_share:
        notes.append(
            f"{len(weak)} of {len(judged)} intents ({weak_share:.0%}) have F1 ≤ {config.weak_intent_f1:.2f} "
            f"(more than {config.weak_intent_max_share:.0%}): {weak}"
        )

    values = {
        "offenders": {
            name: {
                "recall": s["recall"],
                "f1": s["f1"],
                "support": s["support"],
                "top_confusions": s["top_confusions"],
            }
            for name, s in offenders.items()
        },
        "judged_intents": len(judged),
        "not_judged": too_small,
        "weak_intents": weak,
    }
    thresholds = {
        "per_intent_recall_floor": config.per_intent_recall_floor,
        "per_intent_f1_floor": config.per_intent_f1_floor,
        "per_intent_min_support": config.per_intent_min_support,
    }
    if not judged:
        most = max((v["support"] for v in per_intent.values()), default=0)
        return _not_evaluated(
            "per_intent_floor",
            True,
            f"no intent has the {config.per_intent_min_support} test utterances needed to be judged "
            f"(the most any intent has is {most})",
            config,
            values=values,
            thresholds=thresholds,
            warnings=notes,
        )
    if offenders:
        passed = False
        details = "; ".join(
            f"{name}: recall {s['recall']:.2f}, F1 {s['f1']:.2f}, {_describe_confusion(s)}"
            for name, s in sorted(offenders.items(), key=lambda item: (item[1]["recall"], item[0]))
        )
        reason = (
            f"{len(offenders)} of {len(judged)} intents are below the recall floor "
            f"{config.per_intent_recall_floor:.2f} or F1 floor {config.per_intent_f1_floor:.2f}: {details}."
        )
    else:
        passed = True
        worst_name, worst = min(judged.items(), key=lambda item: (item[1]["recall"], item[0]))
        reason = (
            f"All {len(judged)} judged intents keep recall ≥ {config.per_intent_recall_floor:.2f} and "
            f"F1 ≥ {config.per_intent_f1_floor:.2f}; the lowest recall is {worst['recall']:.2f} ({worst_name})."
        )
    return GateResult(
        name="per_intent_floor",
        passed=passed,
        blocking=True,
        values=values,
        thresholds=thresholds,
        reason=reason,
        warnings=notes,
    )


# --- bias ------------------------------------------------------------------------------------------------


def _macro_recall_present(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Macro recall over the intents that occur in this group (absent intents would count as 0)."""
    present = sorted(set(y_true))
    return float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def _bias_for_slice(scored: list[Prediction], slice_name: str, config: GateConfig) -> dict[str, Any]:
    """One slice dimension. ``state``: "measured" (≥ 2 groups big enough), "single_group" (the data hold one
    group only: nothing to compare) or "unmeasured" (the dimension is missing, or has several groups but fewer
    than two with ``bias_min_group_size`` scored utterances: disparity exists but cannot be measured)."""
    have = [p for p in scored if slice_name in p.slices]
    sizes = Counter(p.slices[slice_name] for p in have)
    hits = Counter(p.slices[slice_name] for p in have if p.correct)
    kept = {g for g, n in sizes.items() if n >= config.bias_min_group_size}
    excluded = {g: n for g, n in sorted(sizes.items()) if g not in kept}
    result: dict[str, Any] = {
        "slice": slice_name,
        "evaluated": False,
        "missing": len(scored) - len(have),
        "excluded_groups": excluded,
        "group_sizes": dict(sorted(sizes.items())),
        "raw_accuracy": {g: hits[g] / n for g, n in sorted(sizes.items())},
        "by_group": {},
    }
    if not sizes:
        result["state"] = "unmeasured"
        result["note"] = f"no scored held-out utterance has a {slice_name!r} slice value"
        return result
    if len(sizes) == 1:
        result["state"] = "single_group"
        result["note"] = f"one group only ({next(iter(sizes))}, n={len(have)}): nothing to compare"
        return result
    if len(kept) < 2:
        observed = ", ".join(f"{g} {hits[g] / n:.2f} (n={n})" for g, n in sorted(sizes.items()))
        result["state"] = "unmeasured"
        result["note"] = (
            f"fewer than 2 groups with ≥ {config.bias_min_group_size} scored utterances, so the disparity cannot "
            f"be measured (accuracy by group: {observed})"
        )
        return result
    result["state"] = "measured"
    rows = [p for p in have if p.slices[slice_name] in kept]
    y_true = np.array([p.true_intent for p in rows])
    y_pred = np.array([p.label for p in rows])
    groups = np.array([p.slices[slice_name] for p in rows])
    frame = MetricFrame(
        metrics={"accuracy": accuracy_score, "macro_recall": _macro_recall_present, "count": count},
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
    )
    difference = frame.difference(method="between_groups")
    ratio = frame.ratio(method="between_groups")
    by_group = {
        str(g): {"accuracy": float(r["accuracy"]), "macro_recall": float(r["macro_recall"]), "count": int(r["count"])}
        for g, r in frame.by_group.to_dict(orient="index").items()
    }
    ci_low, ci_high = bootstrap_group_accuracy_difference(
        y_true == y_pred, groups, config.bootstrap_resamples, config.seed, config.confidence_level
    )
    worst = min(by_group, key=lambda g: (by_group[g]["accuracy"], g))
    best = max(by_group, key=lambda g: (by_group[g]["accuracy"], g))
    result.update(
        {
            "evaluated": True,
            "by_group": by_group,
            "accuracy_difference": float(difference["accuracy"]),
            "accuracy_ratio": float(ratio["accuracy"]),
            "accuracy_difference_ci": [ci_low, ci_high],
            "macro_recall_difference": float(difference["macro_recall"]),
            "macro_recall_ratio": float(ratio["macro_recall"]),
            "worst_group": worst,
            "best_group": best,
            "equalized_odds_one_vs_rest": one_vs_rest_equalized_odds(y_true, y_pred, groups),
        }
    )
    return result


def _bias_gate(challenger: list[Prediction], config: GateConfig) -> tuple[GateResult, dict[str, Any]]:
    scored = [p for p in challenger if p.status == "scored"]
    from_data = config.bias_slices is None
    dimensions = sorted({k for p in challenger for k in p.slices}) if from_data else list(config.bias_slices or [])
    slices = {name: _bias_for_slice(scored, name, config) for name in dimensions}
    evaluated = {name: s for name, s in slices.items() if s["state"] == "measured"}
    unmeasured = {name: s for name, s in slices.items() if s["state"] == "unmeasured"}
    failures, notes = [], []
    for name, s in evaluated.items():
        too_different = s["accuracy_difference"] > config.bias_ceiling
        if config.bias_require_ci_above_ceiling:
            too_different = s["accuracy_difference_ci"][0] > config.bias_ceiling
        too_low_ratio = s["accuracy_ratio"] < config.bias_ratio_floor
        worst, best = s["worst_group"], s["best_group"]
        describe = (
            f"{name}: accuracy {s['by_group'][worst]['accuracy']:.2f} for {worst} "
            f"(n={s['by_group'][worst]['count']}) vs {s['by_group'][best]['accuracy']:.2f} for {best} "
            f"(n={s['by_group'][best]['count']}), difference {s['accuracy_difference']:.3f} "
            f"[{config.confidence_level:.0%} CI {s['accuracy_difference_ci'][0]:.3f}–"
            f"{s['accuracy_difference_ci'][1]:.3f}], ratio {s['accuracy_ratio']:.3f}"
        )
        s["passed"] = not (too_different or too_low_ratio)
        if not s["passed"]:
            failures.append(describe)
        if s["macro_recall_difference"] > config.bias_ceiling:
            notes.append(
                f"{name}: macro recall differs by {s['macro_recall_difference']:.3f} between groups "
                f"(ratio {s['macro_recall_ratio']:.3f}); warning only, per-intent recall in small groups is noisy"
            )
        if s["excluded_groups"]:
            notes.append(f"{name}: groups smaller than {config.bias_min_group_size} excluded: {s['excluded_groups']}")
    for name, s in slices.items():
        if s["state"] != "measured":
            notes.append(f"{name}: not evaluated, {s['note']}")
    bias_score = max((s["accuracy_difference"] for s in evaluated.values()), default=None)
    worst_ratio = min((s["accuracy_ratio"] for s in evaluated.values()), default=None)
    values = {
        "bias_score": bias_score,
        "worst_ratio": worst_ratio,
        "slice_dimensions": dimensions,
        "slices_from": "data" if from_data else "config",
        "evaluated_slices": sorted(evaluated),
        "not_evaluated_slices": sorted(n for n in slices if n not in evaluated),
        "unmeasured_slices": sorted(unmeasured),
        "failed_slices": sorted(n for n, s in evaluated.items() if not s["passed"]),
    }
    thresholds = {
        "bias_ceiling": config.bias_ceiling,
        "bias_ratio_floor": config.bias_ratio_floor,
        "bias_min_group_size": config.bias_min_group_size,
        "bias_slices": config.bias_slices,
    }
    bias = {
        "definition": (
            "Per slice dimension, fairlearn MetricFrame over groups with at least bias_min_group_size scored "
            "utterances; disparity = max − min group accuracy (difference, between_groups) and min / max "
            "(ratio). bias_score = largest accuracy difference over the slice dimensions. A dimension with "
            "several groups of which fewer than two are big enough cannot be measured, and the gate is then "
            "not evaluated."
        ),
        "bias_score": bias_score,
        "slice_dimensions": dimensions,
        "slices_from": values["slices_from"],
        "slices": slices,
    }
    if failures:
        reason = (
            f"Accuracy differs too much between groups (ceiling {config.bias_ceiling:.2f}, ratio floor "
            f"{config.bias_ratio_floor:.2f}): " + "; ".join(failures) + "."
        )
        if unmeasured:
            unmeasured_notes = "; ".join(f"{n}: {s['note']}" for n, s in unmeasured.items())
            reason += f" Not measured: {unmeasured_notes}."
        gate = GateResult(
            name="bias",
            passed=False,
            blocking=True,
            values=values,
            thresholds=thresholds,
            reason=reason,
            warnings=notes,
        )
        return gate, bias
    if not dimensions:
        why = (
            "the held-out set has no slice columns"
            if from_data
            else "bias_slices is empty, so no slice dimension is compared"
        )
        return _not_evaluated("bias", True, why, config, values, thresholds, notes), bias
    if unmeasured or not evaluated:
        parts = [f"{n}: {s['note']}" for n, s in slices.items() if s["state"] != "measured"]
        why = "disparity could not be measured for " + "; ".join(parts)
        if evaluated:
            why += f" (measured and within limits: {sorted(evaluated)}, largest difference {bias_score:.3f})"
        return _not_evaluated("bias", True, why, config, values, thresholds, notes), bias
    reason = (
        f"Largest between-groups accuracy difference is {bias_score:.3f} (≤ {config.bias_ceiling:.2f}) and "
        f"the lowest ratio {worst_ratio:.3f} (≥ {config.bias_ratio_floor:.2f}) over slices "
        f"{sorted(evaluated)}."
    )
    gate = GateResult(
        name="bias", passed=True, blocking=True, values=values, thresholds=thresholds, reason=reason, warnings=notes
    )
    return gate, bias


def _training_balance_gate(
    training_counts: Mapping[str, int], labels: Sequence[str], config: GateConfig
) -> tuple[GateResult, dict[str, Any]]:
    names = list(dict.fromkeys([*labels, *training_counts]))
    counts = {name: int(training_counts.get(name, 0)) for name in names}
    missing = sorted(name for name, n in counts.items() if n <= 0)
    values = list(counts.values())
    total = sum(values)
    smallest = min(counts.items(), key=lambda item: (item[1], item[0])) if counts else (None, 0)
    largest = max(counts.items(), key=lambda item: (item[1], item[0])) if counts else (None, 0)
    ratio = largest[1] / smallest[1] if smallest[1] > 0 else None  # None = infinite (missing intent)
    shares = np.array([n / total for n in values if n > 0]) if total else np.array([])
    entropy = float(-(shares * np.log(shares)).sum() / math.log(len(values))) if len(values) > 1 and total else None
    below_min = sorted(name for name, n in counts.items() if 0 < n < config.min_class_count)
    distribution = {
        "counts": counts,
        "total": total,
        "missing": missing,
        "below_min_class_count": below_min,
        "imbalance_ratio": ratio,
        "smallest": {"intent": smallest[0], "count": smallest[1]},
        "largest": {"intent": largest[0], "count": largest[1]},
        "normalized_entropy": entropy,
    }
    thresholds = {"imbalance_ratio_max": config.imbalance_ratio_max, "min_class_count": config.min_class_count}
    if not counts or total == 0:
        gate = _not_evaluated(
            "training_balance",
            True,
            "no training counts were given, so the class balance of the training data is unknown",
            config,
            thresholds=thresholds,
        )
        return gate, distribution
    problems = []
    if missing:
        problems.append(f"intents without training examples: {missing}")
    if below_min:
        detail = ", ".join(f"{n} ({counts[n]})" for n in below_min)
        problems.append(f"intents with fewer than {config.min_class_count} examples: {detail}")
    if ratio is not None and ratio > config.imbalance_ratio_max:
        problems.append(
            f"imbalance ratio {ratio:.1f} ({largest[0]} {largest[1]} / {smallest[0]} {smallest[1]}) "
            f"exceeds {config.imbalance_ratio_max:.1f}"
        )
    if problems:
        reason = "Training data is unbalanced: " + "; ".join(problems) + "."
    else:
        reason = (
            f"Training data of {len(counts)} intents is balanced enough: imbalance ratio {ratio:.1f} "
            f"(≤ {config.imbalance_ratio_max:.1f}), smallest intent {smallest[0]} has {smallest[1]} examples "
            f"(≥ {config.min_class_count})."
        )
    gate = GateResult(
        name="training_balance",
        passed=not problems,
        blocking=True,
        values={
            "imbalance_ratio": ratio,
            "min_count": smallest[1],
            "max_count": largest[1],
            "missing": missing,
            "below_min_class_count": below_min,
            "normalized_entropy": entropy,
        },
        thresholds=thresholds,
        reason=reason,
    )
    return gate, distribution


# --- champion vs challenger ---------------------------------------------------------------------------


def _champion_regression_gate(
    challenger: list[Prediction],
    champion: list[Prediction] | None,
    labels: list[str],
    config: GateConfig,
) -> tuple[GateResult, dict[str, Any] | None]:
    thresholds = {
        "max_accuracy_drop": config.max_accuracy_drop,
        "significance_alpha": config.significance_alpha,
        "max_intent_f1_drop": config.max_intent_f1_drop,
        "per_intent_min_support": config.per_intent_min_support,
        "confidence_level": config.confidence_level,
        "require_non_inferiority": config.require_non_inferiority,
    }
    if champion is None or not any(p.status == "scored" for p in champion):
        why = (
            "no champion predictions were given (no model is serving yet), so there is nothing to regress against"
            if not champion
            else f"none of the {len(champion)} champion predictions was scored, so the champion cannot be compared"
        )
        return _not_evaluated("champion_regression", True, why, config, thresholds=thresholds), None
    pairs, unpaired_chall, unpaired_champ = pair_predictions(challenger, champion)
    if not pairs:
        reason = (
            "No held-out utterance was scored by both models, so the challenger cannot be compared with the "
            "champion; both must be scored on the same frozen held-out set."
        )
        gate = GateResult(
            name="champion_regression",
            passed=False,
            blocking=True,
            values={"n_paired": 0, "unpaired_challenger": unpaired_chall, "unpaired_champion": unpaired_champ},
            thresholds=thresholds,
            reason=reason,
        )
        return gate, {"n_paired": 0, "verdict": "not_comparable"}

    y_true = [a.true_intent for a, _ in pairs]
    y_chall = [a.label for a, _ in pairs]
    y_champ = [b.label for _, b in pairs]
    label_set = true_labels([a for a, _ in pairs], labels)
    _, _, f1_chall, support = precision_recall_fscore_support(
        y_true, y_chall, labels=label_set, average=None, zero_division=0
    )
    _, _, f1_champ, _ = precision_recall_fscore_support(
        y_true, y_champ, labels=label_set, average=None, zero_division=0
    )
    supported = [label for label, s in zip(label_set, support, strict=True) if s > 0]
    mask = support > 0
    macro_chall, macro_champ = float(f1_chall[mask].mean()), float(f1_champ[mask].mean())
    correct_chall = np.array(y_chall) == np.array(y_true)
    correct_champ = np.array(y_champ) == np.array(y_true)
    acc_chall, acc_champ = float(correct_chall.mean()), float(correct_champ.mean())
    acc_delta, f1_delta = acc_chall - acc_champ, macro_chall - macro_champ
    mcnemar = mcnemar_exact(correct_chall, correct_champ)
    boot = paired_bootstrap_f1_delta(
        y_true, y_chall, y_champ, supported, config.bootstrap_resamples, config.seed, config.confidence_level
    )
    p_value = mcnemar["p_value"]
    significant = p_value < config.significance_alpha
    margin = config.max_accuracy_drop

    per_intent = {
        label: {
            "support": int(support[i]),
            "challenger_f1": float(f1_chall[i]),
            "champion_f1": float(f1_champ[i]),
            "delta": float(f1_chall[i] - f1_champ[i]),
            "delta_ci": boot["per_label_ci"].get(label),
        }
        for i, label in enumerate(label_set)
    }
    intent_drops = {
        label: s
        for label, s in per_intent.items()
        if s["support"] >= config.per_intent_min_support and -s["delta"] > config.max_intent_f1_drop
    }

    failures = []
    if acc_delta < -margin and significant:
        failures.append(
            f"accuracy fell by {-acc_delta:.3f} ({acc_champ:.3f} → {acc_chall:.3f}), more than the "
            f"{margin:.3f} margin, and McNemar's exact test says this is real (p = {p_value:.2g} < "
            f"{config.significance_alpha}; {mcnemar['b_champion_only_right']} utterances only the champion got "
            f"right vs {mcnemar['c_challenger_only_right']} only the challenger)"
        )
    if boot["ci_high"] < -margin:
        failures.append(
            f"the {config.confidence_level:.0%} bootstrap interval of the macro-F1 delta "
            f"[{boot['ci_low']:.3f}, {boot['ci_high']:.3f}] lies entirely below −{margin:.3f}"
        )
    # An intent's own drop must be real too: its bootstrap interval lies below zero. With a handful of
    # utterances per intent one miss moves F1 by ~0.1, and that alone must not block a better model.
    real_drops = {label: s for label, s in intent_drops.items() if s["delta_ci"] and s["delta_ci"][1] < 0}
    if real_drops:
        detail = ", ".join(
            f"{label} {s['champion_f1']:.2f} → {s['challenger_f1']:.2f} (95% CI of the change "
            f"[{s['delta_ci'][0]:.2f}, {s['delta_ci'][1]:.2f}])"
            for label, s in sorted(real_drops.items())
        )
        failures.append(f"intents lost more than {config.max_intent_f1_drop:.2f} F1 and the loss is real: {detail}")
    non_inferior = boot["ci_low"] >= -margin
    if config.require_non_inferiority and not non_inferior:
        failures.append(
            f"non-inferiority is not shown: the lower bound {boot['ci_low']:.3f} of the macro-F1 delta interval "
            f"is below −{margin:.3f}"
        )

    numbers = (
        f"accuracy {acc_champ:.3f} → {acc_chall:.3f} (Δ {acc_delta:+.3f}), macro F1 {macro_champ:.3f} → "
        f"{macro_chall:.3f} (Δ {f1_delta:+.3f}, {config.confidence_level:.0%} CI [{boot['ci_low']:+.3f}, "
        f"{boot['ci_high']:+.3f}]), McNemar p = {p_value:.3g} on {mcnemar['discordant']} discordant of "
        f"{len(pairs)} paired utterances"
    )
    if failures:
        verdict = "worse"
        reason = "The challenger is significantly worse than the champion: " + "; ".join(failures) + "."
    elif significant and acc_delta > 0:
        verdict = "better"
        reason = f"The challenger is significantly better than the champion: {numbers}."
    elif significant:
        verdict = "worse_within_margin"
        reason = (
            f"The challenger is significantly different but stays within the {margin:.3f} non-inferiority margin: "
            f"{numbers}."
        )
    else:
        verdict = "noise"
        reason = (
            f"The difference is not statistically significant (p ≥ {config.significance_alpha}), so it is treated "
            f"as noise: it neither blocks promotion nor counts as an improvement; {numbers}."
        )
    if intent_drops and not real_drops:
        reason += (
            f" Intents {sorted(intent_drops)} lost more than {config.max_intent_f1_drop:.2f} F1 on this set, but "
            "their bootstrap intervals include no change, so it is not counted as a regression."
        )

    comparison = {
        "n_paired": len(pairs),
        "unpaired_challenger": unpaired_chall,
        "unpaired_champion": unpaired_champ,
        "accuracy": {"challenger": acc_chall, "champion": acc_champ, "delta": acc_delta},
        "macro_f1": {
            "challenger": macro_chall,
            "champion": macro_champ,
            "delta": f1_delta,
            "ci_low": boot["ci_low"],
            "ci_high": boot["ci_high"],
            "ci_level": config.confidence_level,
            "bootstrap_resamples": config.bootstrap_resamples,
        },
        "mcnemar": mcnemar,
        "significant": significant,
        "non_inferiority_shown": non_inferior,
        "per_intent": per_intent,
        "intent_regressions": sorted(intent_drops),
        "verdict": verdict,
    }
    warnings_: list[str] = []
    if unpaired_chall or unpaired_champ:
        warnings_.append(
            f"{unpaired_chall} challenger and {unpaired_champ} champion predictions had no partner and were left "
            "out of the comparison"
        )
    gate = GateResult(
        name="champion_regression",
        passed=not failures,
        blocking=True,
        values={
            "accuracy_delta": acc_delta,
            "macro_f1_delta": f1_delta,
            "macro_f1_delta_ci": [boot["ci_low"], boot["ci_high"]],
            "p_value": p_value,
            "discordant": [mcnemar["b_champion_only_right"], mcnemar["c_challenger_only_right"]],
            "n_paired": len(pairs),
            "intent_regressions": sorted(intent_drops),
            "verdict": verdict,
        },
        thresholds=thresholds,
        reason=reason,
        warnings=warnings_,
    )
    return gate, comparison


# --- Cognigy feedback report ----------------------------------------------------------------------------


_PROBLEM_FINDINGS = frozenset({"lowDataIntents", "fewSentences", "unclearIntent", "strongOverlap"})


def feedback_finding_kind(finding_type: str) -> Literal["problem", "warning", "good"]:
    """How a Cognigy feedback finding type counts: ``poor*`` and data/overlap problems are findings,
    ``good*`` is no finding at all, ``fair*`` and anything else (e.g. ``someOverlap``) is a warning."""
    if finding_type.startswith("poor") or finding_type in _PROBLEM_FINDINGS:
        return "problem"
    if finding_type.startswith("good"):
        return "good"
    return "warning"


def _feedback_parts(feedback: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
    """(flow report with info/findings, [(intent name, intent report)]) from either shape the callers pass:
    the rest-v2 client's ``{info, findings, isTrainingOutOfDate, intents}`` or a flow with ``feedbackReport``."""
    flow: dict[str, Any] | None = None
    if isinstance(feedback.get("feedbackReport"), Mapping):
        flow = dict(feedback["feedbackReport"])
    elif "info" in feedback or "findings" in feedback:
        flow = {"info": feedback.get("info"), "findings": feedback.get("findings")}
    raw_intents = feedback.get("intents") or []
    if isinstance(raw_intents, Mapping):  # {name: report}
        intents = [(str(name), dict(report or {})) for name, report in raw_intents.items()]
    else:
        intents = [(str(i.get("name", "?")), dict(i.get("feedbackReport") or {})) for i in raw_intents]
    return flow, intents


def _platform_feedback_gate(feedback: Mapping[str, Any] | None, config: GateConfig) -> GateResult:
    thresholds = {"block_on_feedback_findings": config.block_on_feedback_findings}
    blocking = config.block_on_feedback_findings
    flow, intents = _feedback_parts(feedback or {})
    if flow is None and not intents:
        why = "no Cognigy feedback report was provided"
        if feedback and "serverMetrics" in feedback:
            why = "the platform returned server-side metrics only, no feedback report"
        values = {"server_metrics": feedback.get("serverMetrics")} if feedback and "serverMetrics" in feedback else {}
        return _not_evaluated("platform_feedback", blocking, why, config, values, thresholds)
    info = (flow or {}).get("info") or {}
    classified: dict[str, list[dict[str, Any]]] = {"problem": [], "warning": [], "good": []}
    for f in (flow or {}).get("findings") or []:
        finding = {"scope": "flow", "type": str(f.get("type", "unknown"))}
        if f.get("intents"):
            finding["intents"] = list(f["intents"])
        classified[feedback_finding_kind(finding["type"])].append(finding)
    intent_scores = {}
    for name, report in intents:
        if (report.get("info") or {}).get("fScore") is not None:
            intent_scores[name] = report["info"]["fScore"]
        for f in report.get("findings") or []:
            finding = {"scope": "intent", "intent": name, "type": str(f.get("type", "unknown"))}
            if f.get("overlappingIntentName"):
                finding["overlapping_intent"] = f["overlappingIntentName"]
            classified[feedback_finding_kind(finding["type"])].append(finding)
    findings, cautions = classified["problem"], classified["warning"]

    def describe(f: dict[str, Any]) -> str:
        where = "flow" if f["scope"] == "flow" else f"intent {f['intent']}"
        overlap = f" with {f['overlapping_intent']}" if f.get("overlapping_intent") else ""
        listed = f": {', '.join(map(str, f['intents']))}" if f.get("intents") else ""
        return f"{f['type']} ({where}{overlap}{listed})"

    numbers = [
        f"flow {label} {round_value(info[key], 3)}"
        for key, label in (("accuracy", "accuracy"), ("fScore", "fScore"))
        if isinstance(info.get(key), int | float) and not isinstance(info.get(key), bool)
    ]
    headline = ", ".join(numbers) if numbers else "the report gives no flow accuracy or fScore"
    warnings_ = [f"{describe(f)}: not a problem finding, reported as a warning" for f in cautions]
    out_of_date = feedback.get("isTrainingOutOfDate") if feedback else None
    if out_of_date:
        warnings_.append("the platform says the training is out of date: its feedback may describe an older model")
    if findings:
        effect = "blocking" if blocking else "not blocking (warning only)"
        reason = (
            f"The Cognigy feedback report has {len(findings)} problem finding(s), {effect}: "
            + ", ".join(describe(f) for f in findings)
            + f"; {headline}."
        )
    else:
        reason = f"The Cognigy feedback report has no problem findings; {headline}."
    return GateResult(
        name="platform_feedback",
        passed=not findings,
        blocking=blocking,
        values={
            "accuracy": info.get("accuracy"),
            "f_score": info.get("fScore"),
            "findings": findings,
            "finding_types": dict(Counter(f["type"] for f in findings)),
            "warning_findings": cautions,
            "good_findings": [f["type"] for f in classified["good"]],
            "is_training_out_of_date": out_of_date,
            "intent_f_scores": intent_scores,
        },
        thresholds=thresholds,
        reason=reason,
        warnings=warnings_,
    )


# --- platform-reported gates (training-jobs dialect without held-out scoring) --------------------------------


def platform_reported_gates(metrics: Mapping[str, Any], config: GateConfig) -> dict[str, Any]:
    """The specification's gates on the numbers the platform reports for a version (`/metrics`): precision and
    recall ≥ their floors (default profile: 1 − 0.05), bias ≤ the ceiling (0.15). Used when the product cannot
    score a held-out set itself. A missing number is "not evaluated" and blocks unless `allow_unevaluated` names
    its gate. Returns the gate report (JSON-safe) with `passed`, `failed_gates`, `summary` and the `[VALIDATION]`
    warnings the specification logs."""
    checks = (
        ("precision", "precision_recall_balance", metrics.get("precision"), config.precision_floor, ">="),
        ("recall", "precision_recall_balance", metrics.get("recall"), config.recall_floor, ">="),
        ("bias_score", "bias", metrics.get("bias_score"), config.bias_ceiling, "<="),
    )
    gates, warnings, failed = [], [], []
    for name, gate, value, threshold, op in checks:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            status = "passed" if gate in config.allow_unevaluated else "not_evaluated"
            warnings.append(f"[VALIDATION] {name}: the platform reported no value (gate {gate} not evaluated)")
        else:
            ok = value >= threshold if op == ">=" else value <= threshold
            status = "passed" if ok else "failed"
            if not ok:
                warnings.append(f"[VALIDATION] {name} {value:.4f} is not {op} {threshold:.4f}")
        if status != "passed":
            failed.append(name)
        gates.append({"name": name, "gate": gate, "value": value, "threshold": threshold, "rule": f"{op} threshold",
                      "status": status})  # fmt: skip
    f1 = metrics.get("f1")
    spec_delta = round(f1 - SPEC_F1_BASELINE, 6) if isinstance(f1, int | float) and not isinstance(f1, bool) else None
    summary = {
        "gate_source": "platform-reported",
        "macro_precision": metrics.get("precision"),
        "macro_recall": metrics.get("recall"),
        "macro_f1": f1,
        "bias_score": metrics.get("bias_score"),
        "accuracy_delta": spec_delta,
        "accuracy_delta_source": f"f1Score − {SPEC_F1_BASELINE} (the specification's; no champion was scored)",
        "failed_gates": failed,
    }
    return {"source": "platform-reported", "passed": not failed, "failed_gates": failed, "gates": gates,
            "warnings": warnings, "summary": summary, "thresholds": config.thresholds()}  # fmt: skip
