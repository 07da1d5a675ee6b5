"""The `capture` task: before any change, the rollback point proven restorable, the data checked against the
flow, the release path read, and the champion (what serves now) scored on the held-out set. Read-only."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from cognigy_provider.hooks.cognigy import CognigyHook

from cognigy_airflow.auditing import audit
from cognigy_airflow.data_files import HELD_OUT, TRAINING, load_frozen, training_intents
from cognigy_airflow.record import resolve_plan
from cognigy_airflow.run_files import request_of, run_folder
from include.cognigy import releases, rest_v2
from include.cognigy.client import CognigyClient
from include.cognigy.errors import CognigyError, NotFound
from include.cognigy.model import Target
from include.data.labelled_data import check_intents
from include.evaluation.held_out import load_predictions, save_predictions, score_utterances
from include.results import Captured
from include.state import state_store
from include.state.target_memory import cached_champion, champion_key, last_trained, released_snapshots, store_champion

log = logging.getLogger(__name__)


def check_staging(client: CognigyClient, production: Target, staging: Target) -> dict[str, Any]:
    """Refuse a staging flow that could hurt customers or judge the wrong thing (read-only; raises)."""
    problems = []
    if (staging.project_id, staging.flow_id) == (production.project_id, production.flow_id):
        problems.append(f"staging flow {staging.flow_id} is the production flow")
    try:  # the flow exists and has this locale (an export of a missing locale may answer an empty list)
        client.training_out_of_date(staging)
        client.flow_intents(staging)
    except NotFound as exc:
        problems.append(f"staging flow {staging.flow_id} / locale {staging.locale}: {exc}")
    if not problems:
        serving = client.endpoints_serving(staging)
        if serving:
            problems.append(
                f"staging flow {staging.flow_id} is served by endpoint(s) {', '.join(sorted(serving))}: customers "
                "would meet every challenger; point those endpoints elsewhere or name another staging flow"
            )
    if problems:
        raise AirflowFailException("staging flow refused (nothing was changed): " + "; ".join(problems))
    return {"flow_id": staging.flow_id, "project_id": staging.project_id}


def capture(target: dict[str, Any], plan: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Before any change: prove the rollback point restorable, check the data against the flow, decide whether
    anything changed since the last training, and score the held-out set against what serves now (the champion).
    Read-only on Cognigy."""
    plan = resolve_plan(plan)
    if plan.get("dry_run"):
        raise AirflowSkipException("dry run: the request is valid; nothing is sent to Cognigy")
    t = Target.from_dict(target)
    request = request_of(plan)
    folder = run_folder(context, plan, target)
    point_file, champion_file = folder / "rollback_point.json", folder / "champion_predictions.jsonl"
    client = CognigyHook(plan["conn_id"], plan.get("requests_per_second")).get_client()
    data = plan["data"][t.locale]
    held, training = load_frozen(data[HELD_OUT]), load_frozen(data[TRAINING])
    staging = request.staging_target(t)
    staged = check_staging(client, t, staging) if staging else None

    if state_store.exists(point_file):  # a retry must not overwrite the rollback point with a later state
        stored = state_store.read_bytes(point_file)
        point = json.loads(stored)
    else:
        point = client.capture_rollback_point(  # training-jobs without a held-out set: the spec's calls only
            t, request.rollbackTriggerVersionId and str(request.rollbackTriggerVersionId), read_serving=held is not None
        )
        if point["kind"] == "intents-export" and (problems := rest_v2.check_restorable(point["intents"])):
            raise AirflowFailException(f"the rollback point of {t.key} could not be restored: {'; '.join(problems)}")
        # Created once (a try racing this one keeps the first), then read back before any change to Cognigy.
        try:
            stored, _ = state_store.create_or_read_verified(point_file, json.dumps(point, ensure_ascii=False).encode())
            point = json.loads(stored)
        except (state_store.StateNotIntact, ValueError) as exc:
            raise AirflowFailException(f"the rollback point {point_file} did not read back intact: {exc}") from None

    # The judged intents: the training file's (uri/demo), else what the flow holds.
    flow_intents = [i["name"] for i in point.get("intents") or []]
    known = training.intents if training else flow_intents
    if (
        held
        and known
        and (problems := check_intents(held, known, "the training data" if training else f"flow {t.flow_id}"))
    ):
        raise AirflowFailException(
            "the held-out set does not fit this flow (nothing was changed):\n  - " + "\n  - ".join(problems[:50])
        )

    out_of_date = client.training_out_of_date(t)
    release = release_path(client, t, plan)
    endpoints = [e["name"] for e in release["endpoints"]] if release else client.endpoints_serving(t)
    candidate = (
        point["fingerprint"]
        if training is None
        else rest_v2.fingerprint(rest_v2.intents_file(training_intents(request, training)))
    )
    last = last_trained(t.key)
    common = {
        "rollback_point_path": str(point_file),
        "rollback_point_sha256": state_store.sha256(stored),  # checked again wherever the point is read
        "fingerprint": point["fingerprint"],
        "candidate_fingerprint": candidate,
        "training_out_of_date": out_of_date,
        "endpoints": endpoints,
        "staging": staged,
        "release": release,
        "held_out": (data[HELD_OUT] or {}).get("summary"),
        "training_data": (data[TRAINING] or {}).get("summary"),
    }
    if (
        not request.retrainUnchanged
        and point["kind"] == "intents-export"
        and not out_of_date
        and last is not None
        and last["fingerprint"] == candidate == point["fingerprint"]
    ):
        audit(
            context,
            "retrain_unchanged",
            plan,
            target,
            fingerprint=point["fingerprint"],
            last_trained_run=last["run_id"],
        )
        return Captured(**common, unchanged=True, last_trained_run=last["run_id"]).to_xcom()

    if held is None:  # training-jobs, no held-out set: the gates judge the platform's metrics, no champion is scored
        audit(context, "rollback_point_captured", plan, target, rollback_point=str(point_file),
              rollback_version_id=point.get("versionId"), champion_scored=0, held_out=None)  # fmt: skip
        return Captured(**common, serving_version=point.get("versionId")).to_xcom()
    threshold = request.heldOut.threshold
    cache_key = champion_key(point["fingerprint"], held.sha256, threshold)
    cached = None if out_of_date or point["kind"] != "intents-export" else cached_champion(t.key, cache_key)
    serving_snapshot = (release or {}).get("serving_snapshot") or {}
    snapshot_key = serving_snapshot.get("hash") and champion_key(f"snapshot:{serving_snapshot['hash']}", held.sha256,
                                                                 threshold)  # fmt: skip
    cached = (snapshot_key and cached_champion(t.key, snapshot_key)) or cached  # a scored snapshot, by its hash
    scored_on = None  # in words: what the champion's predictions came from (scored now)
    if state_store.exists(champion_file):  # scored before this retry: what serves now may already be the new model
        predictions, seconds, via = load_predictions(champion_file), 0.0, "earlier try"
    elif cached is not None:
        predictions, seconds, via = load_predictions(cached), 0.0, "cache"
        save_predictions(champion_file, predictions)
    else:
        scorer, scored_on = champion_scorer(client, t, release, held)
        predictions, seconds = score_utterances(list(held.utterances), scorer, threshold)
        state_store.write_with(champion_file, lambda local: save_predictions(local, predictions))
        via = "scored"
        live_flow = scored_on.startswith("the live flow")  # the cache is keyed by the live flow's intents
        if live_flow and not out_of_date and point["kind"] == "intents-export":
            store_champion(t.key, cache_key, champion_file)
        elif not live_flow and snapshot_key:  # the snapshot itself was scored: keyed by its hash
            store_champion(t.key, snapshot_key, champion_file)
    counts = point.get("intents") and {i["name"]: len(i.get("exampleSentences") or []) for i in point["intents"]}
    audit(
        context,
        "rollback_point_captured",
        plan,
        target,
        rollback_point=str(point_file),
        fingerprint=point["fingerprint"],
        champion_scored=len(predictions),
        champion_via=via,
        eval_seconds=round(seconds, 2),
        held_out=held.summary(),
        training_data=training.summary() if training else None,
        endpoints=endpoints,
        staging=staged,
        release=release,
        champion_scored_on=scored_on,
    )
    return Captured(
        **common,
        champion_predictions_path=str(champion_file),
        champion_eval_seconds=round(seconds, 2),
        champion_via=via,
        champion_scored_on=scored_on,
        serving_counts=counts or None,
        serving_version=point.get("versionId"),
    ).to_xcom()


def release_path(client: CognigyClient, t: Target, plan: dict[str, Any]) -> dict[str, Any] | None:
    """rest-v2: how a change reaches the customers of this flow (`releases.ReleasePath`), refusing mixed or
    unreadable endpoints and, on the snapshot path, an agent whose snapshot limit leaves no room (read-only)."""
    if not client.v2:
        return None
    try:
        path = releases.release_path(client.v2, t)
        if path.path == "snapshot":
            own = released_snapshots(t.project_id)
            room = releases.room(client.v2, t.project_id, own, keep_last=plan["keep_released_snapshots"])
            releases.check_room(room, plan["snapshot_limit"])
    except releases.ReleaseRefused as exc:
        raise AirflowFailException(f"{t.key}: {exc}") from None
    return path.to_dict()


def champion_scorer(
    client: CognigyClient, t: Target, release: dict[str, Any] | None, held: Any
) -> tuple[Callable[[str], Any], str]:
    """How the champion is scored, and what on (in words). Snapshot path: the serving snapshot itself if the
    platform scores a snapshot id as a project (not confirmed), else the live flow as it stands before the run."""
    live = (lambda s: client.score(t, s)), f"the live flow {t.flow_id}"
    snapshot = (release or {}).get("serving_snapshot")
    if not snapshot or not held.utterances:
        return live
    frozen = replace(t, project_id=snapshot["id"])
    try:
        client.score(frozen, held.utterances[0].text)
    except CognigyError as exc:
        log.info("snapshot %s could not be scored (%s): scoring the live flow as the champion", snapshot["id"], exc)
        return live[0], f"the live flow {t.flow_id} (the platform did not score snapshot {snapshot['name']!r})"
    return (lambda s: client.score(frozen, s)), f"snapshot {snapshot['name']!r}"
