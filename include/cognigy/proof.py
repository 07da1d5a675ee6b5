"""What proves that a flow/locale serves the model trained from the intents we meant: read from the platform,
never assumed.

A training counts only when all of these hold, each read from the tenant (rest-v2):
1. the task waited for is an intent training (its own `type`) of exactly this flow and locale, and ended `done`;
2. it was created after every import into this flow/locale that could have been running at the time had ended
   (so it trained the imported intents, not the ones before);
3. no training of this flow/locale is queued or running now (nothing is judged while a model changes);
4. the flow reports its model up to date with its intents (`isTrainingOutOfDate` false for the locale);
5. the flow/locale holds exactly the intended intents (export fingerprint).

Answers that agree with a judged model are no proof on their own: two untrained models agree too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from include.cognigy import rest_v2
from include.cognigy.model import Target, created_epoch, epoch_of
from include.cognigy.rest_v2 import IMPORT_TASK_TYPE, MAX_TRAINING_SECONDS, TRAINING_TASK_TYPE, RestV2Api, is_task_of

# A training or import that is still open was created at most this long ago (the platform's 10-minute limit on an
# intent training, plus room for a queue and clocks): the window of the task list that must be read.
OPEN_TASK_WINDOW_SECONDS = MAX_TRAINING_SECONDS + 300.0
# How long a judge waits for other trainings of the flow/locale to end before it says "not proven".
PROOF_WAIT_SECONDS = 300.0


@dataclass
class TrainingProof:
    """The verdict on one training: `proven`, or the `problems` that stop it; `running` lists trainings of the
    flow/locale still open (the caller may wait for them and ask again)."""

    job_id: str
    problems: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    fingerprint: str | None = None

    @property
    def proven(self) -> bool:
        return not self.problems and not self.running

    def why_not(self) -> str:
        reasons = list(self.problems)
        if self.running:
            reasons.append(f"training(s) {', '.join(self.running)} of the flow/locale still running")
        return "; ".join(reasons) or "proven"

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "proven": self.proven, "problems": self.problems, "running": self.running,
                "fingerprint": self.fingerprint}  # fmt: skip


def prove_training(api: RestV2Api, target: Target, job_id: str, intended_fingerprint: str) -> TrainingProof:
    """Check the five conditions of the module docstring for training `job_id` of `target`."""
    proof = TrainingProof(job_id)
    locale_id = api.locale(target)["_id"]
    job = api.job_status(job_id)
    created = created_epoch(job)
    if created is None:
        proof.problems.append(f"training {job_id} has no readable creation time")
        return proof
    # The list shows each task's type and parameters (a single task's answer may not): find ours there.
    tasks = api.tasks_since(target.project_id, min(created, time.time()) - OPEN_TASK_WINDOW_SECONDS)
    listed = next((t for t in tasks if t.job_id == job_id), None)
    if listed is None or not is_task_of(listed, TRAINING_TASK_TYPE, target.flow_id, locale_id):
        kind = listed.extra.get("type") if listed else "not in the task list"
        proof.problems.append(f"task {job_id} is not an intent training of {target.key} ({kind})")
    if job.state != "succeeded":
        proof.problems.append(f"training {job_id} ended {job.raw_status or job.state}, not done")
    for other in tasks:
        if other.job_id == job_id:
            continue
        if is_task_of(other, IMPORT_TASK_TYPE, target.flow_id, locale_id):
            other_created, other_finished = (
                created_epoch(other),
                epoch_of(other.finished_at) if other.terminal else None,
            )
            if (
                other_created is not None
                and other_created <= created
                and (other_finished is None or other_finished > created)
            ):
                proof.problems.append(f"import {other.job_id} had not ended when training {job_id} was created")
        elif is_task_of(other, TRAINING_TASK_TYPE, target.flow_id, locale_id) and not other.terminal:
            proof.running.append(other.job_id)
    if not job.terminal:
        proof.running.append(job_id)
    if api.training_state(target)["out_of_date"]:
        proof.problems.append(f"{target.key} reports its model out of date with its intents")
    proof.fingerprint = rest_v2.fingerprint(api.export_intents(target))
    if proof.fingerprint != intended_fingerprint:
        proof.problems.append(
            f"{target.key} holds intents {proof.fingerprint[:12]}…, not the intended {intended_fingerprint[:12]}…"
        )
    return proof


def prove_when_quiet(
    api: RestV2Api, target: Target, job_id: str, intended_fingerprint: str, wait_seconds: float, interval: float = 5.0
) -> TrainingProof:
    """`prove_training`, asked again while other trainings of the flow/locale still run (up to `wait_seconds`)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        proof = prove_training(api, target, job_id, intended_fingerprint)
        if proof.problems or not proof.running or time.monotonic() >= deadline:
            return proof
        time.sleep(interval)
