"""The `evaluate` task: the challenger's training proven, the held-out set scored against it, every gate run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException
from cognigy_provider.hooks.cognigy import CognigyHook

from cognigy_airflow.auditing import audit
from cognigy_airflow.data_files import HELD_OUT, load_frozen
from cognigy_airflow.record import resolve_plan, retrain_record
from cognigy_airflow.run_files import request_of, run_folder, trained_intents, training_target
from include.cognigy.client import CognigyClient
from include.cognigy.errors import NotFound
from include.cognigy.model import Target
from include.cognigy.proof import PROOF_WAIT_SECONDS
from include.evaluation.held_out import load_predictions, save_predictions, score_utterances
from include.results import Evaluated
from include.state import state_store


def evaluate(target: dict[str, Any], plan: dict[str, Any], waited: Any, **context: Any) -> dict[str, Any]:
    """Score the held-out set against the challenger (the staging flow, or production in place) and run every
    gate; `promote` and `rollback` act on this result only."""
    plan = resolve_plan(plan)
    from include.evaluation.config import GateConfig
    from include.evaluation.gates import evaluate_gates
    from include.evaluation.report import write_gate_report

    record = retrain_record(context, target, plan, waited=waited)
    captured, submitted, waited = record.captured, record.submitted, record.waited
    if plan.get("dry_run") or not captured:
        # No rollback point means `capture` did not finish, so nothing was changed and nothing is restored.
        raise AirflowSkipException("dry run" if plan.get("dry_run") else "no rollback point: nothing was changed")
    if captured.unchanged:
        raise AirflowSkipException("unchanged since the last successful training: nothing to judge")
    if not waited or waited.state != "succeeded":
        state = waited.state if waited else "not run"
        reason = f"training {state}: {(waited and waited.reason) or 'no model to evaluate'}"
        audit(context, "validation_failed", plan, target, reason=reason, cognigy_job_id=waited and waited.job_id)
        return Evaluated(passed=False, training_state=state, reason=reason, decided_at=time.time()).to_xcom()
    t, judged = Target.from_dict(target), training_target(plan, target)
    folder = run_folder(context, plan, target)
    request = request_of(plan)
    client = CognigyHook(plan["conn_id"], plan.get("requests_per_second")).get_client()
    # Nothing is scored before the platform shows that the judged flow serves the training of the staged intents.
    proof = client.prove_training(judged, waited.job_id, submitted.fingerprint, wait_seconds=PROOF_WAIT_SECONDS)
    if not proof.proven:
        reason = f"not evaluated: the challenger's training is not proven ({proof.why_not()})"
        audit(context, "validation_failed", plan, target, reason=reason, cognigy_job_id=waited.job_id,
              training_proof=proof.to_dict())  # fmt: skip
        return Evaluated(passed=False, training_state="unproven", reason=reason, decided_at=time.time()).to_xcom()
    held = load_frozen(plan["data"][t.locale][HELD_OUT])
    version = waited.version_id
    if held is None:  # training-jobs without a held-out set: the specification's gates on the platform's numbers
        return _evaluate_platform_reported(context, client, judged, plan, target, waited, folder)
    predictions, seconds = score_utterances(
        list(held.utterances), lambda s: client.score(judged, s, version_id=version), request.heldOut.threshold
    )
    save_predictions(folder / "challenger_predictions.jsonl", predictions)
    champion = load_predictions(state_store.path_of(captured.champion_predictions_path))
    feedback = client.platform_feedback(judged, version)
    server = feedback.get("serverMetrics") if isinstance(feedback, dict) else None
    platform_metrics = None
    if server:  # XCom keeps the headline numbers; the whole answer is a report file
        state_store.write_text(folder / "report" / "platform_metrics.json", json.dumps(server, indent=2, default=str))
        dist = server.get("intent_distribution")
        platform_metrics = {k: server.get(k) for k in ("precision", "recall", "f1", "bias_score")}
        platform_metrics["intents"] = len(dist) if isinstance(dist, dict) else None
    trained = trained_intents(folder)
    counts = {k: len(v) for k, v in trained.items()} if trained else (submitted and submitted.training_counts) or {}
    labels = sorted(set(held.intents) | set(counts))
    report = evaluate_gates(
        predictions,
        champion,
        labels,
        counts,
        feedback,
        GateConfig(**plan["gates"]),
        training_texts=trained,
        held_out=held.summary(),
    )
    with state_store.local_dir(folder / "report") as out:  # the report's writers want local files
        written = write_gate_report(report, out)
    paths = {name: folder / "report" / Path(path).name for name, path in written.items()}
    summary = report.summary()
    event = "validation_passed" if report.passed else "validation_failed"
    audit(
        context,
        event,
        plan,
        target,
        cognigy_job_id=waited.job_id,
        metrics=summary,
        accuracy_delta=summary.get("accuracy_delta"),
        latency_seconds=waited.latency_seconds,
        judged_flow=judged.flow_id,
        held_out=held.summary(),
        platform_metrics=platform_metrics,
        gate_report=str(paths["gate_report.json"]) if "gate_report.json" in paths else None,
    )
    return Evaluated(
        passed=report.passed,
        training_state="succeeded",
        summary=summary,
        reason="all blocking gates passed" if report.passed else f"failed: {', '.join(report.failed_gates)}",
        eval_seconds=round(seconds, 2),
        artifacts={k: str(v) for k, v in paths.items()},
        platform_metrics=platform_metrics,  # training-jobs: the server's own /metrics, recorded beside ours
        decided_at=time.time(),
    ).to_xcom()


def _evaluate_platform_reported(
    context: Any,
    client: CognigyClient,
    judged: Target,
    plan: dict[str, Any],
    target: dict[str, Any],
    waited: Any,
    folder: Any,
) -> dict[str, Any]:
    """training-jobs, no held-out set (no predict call in the specification): the version's `/metrics` judged by
    `platform_reported_gates`; its `[VALIDATION]` warnings go to the task log, the report says "platform-reported".
    A version whose metrics cannot be read (404: "not found or metrics generation failed") is not evaluated."""
    from include.evaluation.config import GateConfig
    from include.evaluation.gates import platform_reported_gates

    try:
        server = client.platform_feedback(judged, waited.version_id).get("serverMetrics") or {}
    except NotFound as exc:
        server = {}
        context["task"].log.warning("[VALIDATION] metrics of version %s could not be read: %s", waited.version_id, exc)
    report = platform_reported_gates(server, GateConfig(**plan["gates"]))
    for warning in report["warnings"]:
        context["task"].log.warning("%s", warning)
    report["model_version_id"] = waited.version_id
    report["platform_metrics"] = server
    report_file = folder / "report" / "gate_report.json"
    state_store.write_text(report_file, json.dumps(report, indent=2, default=str))
    summary = report["summary"]
    platform_metrics = {k: server.get(k) for k in ("precision", "recall", "f1", "bias_score")} if server else None
    if platform_metrics is not None:
        dist = server.get("intent_distribution")
        platform_metrics["intents"] = len(dist) if isinstance(dist, dict) else None
    passed = bool(server) and report["passed"]
    reason = "all blocking gates passed (platform-reported)" if passed else (
        f"failed (platform-reported): {', '.join(report['failed_gates']) or 'metrics not readable'}")  # fmt: skip
    audit(context, "validation_passed" if passed else "validation_failed", plan, target, cognigy_job_id=waited.job_id,
          model_version_id=waited.version_id, metrics=summary, accuracy_delta=summary.get("accuracy_delta"),
          latency_seconds=waited.latency_seconds, gate_source="platform-reported", warnings=report["warnings"],
          platform_metrics=platform_metrics, gate_report=str(report_file), reason=reason)  # fmt: skip
    return Evaluated(
        passed=passed,
        training_state="succeeded",
        summary=summary,
        reason=reason,
        artifacts={"gate_report.json": str(report_file)},
        platform_metrics=platform_metrics,
        decided_at=time.time(),
    ).to_xcom()
