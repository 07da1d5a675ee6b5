"""One interface over both dialects: the pipeline calls these methods and never sees a path or a shape."""

from __future__ import annotations

import logging
from typing import Any

import requests

from include.cognigy import proof, rest_v2, training_jobs
from include.cognigy.config import ConnectionConfig
from include.cognigy.errors import CognigyError
from include.cognigy.model import JobStatus, Target
from include.cognigy.proof import TrainingProof
from include.cognigy.rate_limit import TokenBucket
from include.cognigy.rest_v2 import RestV2Api
from include.cognigy.training_jobs import TrainingJobsApi
from include.cognigy.transport import Transport

log = logging.getLogger(__name__)


def status_path(dialect: str, job_id: str) -> str:
    """GET path of a job's status (used by the async trigger)."""
    return training_jobs.job_path(job_id) if dialect == "training-jobs" else rest_v2.task_path(job_id)


def parse_status(dialect: str, data: dict[str, Any]) -> JobStatus:
    return training_jobs.parse_job(data) if dialect == "training-jobs" else rest_v2.parse_task(data)


class TrainingUnknown(CognigyError):
    """training-jobs: an earlier training POST's outcome cannot be known with the specification's calls."""


class CognigyClient:
    def __init__(
        self,
        config: ConnectionConfig,
        *,
        bucket: TokenBucket | None = None,
        session: requests.Session | None = None,
    ) -> None:
        """`session`: the requests session to send on (the Airflow hook builds it from the connection); else a
        plain one."""
        self.config = config
        self.dialect = config.dialect
        self.transport = Transport(config, bucket=bucket, session=session)
        self.v2 = RestV2Api(self.transport) if self.dialect == "rest-v2" else None
        self.jobs = TrainingJobsApi(self.transport) if self.dialect == "training-jobs" else None
        self._active_version: dict[str, str] = {}
        self._own_jobs: set[str] = set()  # training-jobs: jobs this client started or read (known to be the run's)

    # --- before any change ---------------------------------------------------------------------------
    def capture_rollback_point(
        self, target: Target, version_hint: str | None = None, *, read_serving: bool = True
    ) -> dict[str, Any]:
        """What serves now, in a form `restore` can bring back and `serving_fingerprint` can compare.

        training-jobs: the version to roll back to is `version_hint` (the request's rollbackTriggerVersionId),
        no call made. Without one, `read_serving` reads the active version (the gateway's GET /models/{id}
        extension); the specification itself offers no such read, so with `read_serving=False` the point has no
        version ("versionId": None) and nothing can be rolled back."""
        if self.v2:
            intents = self.v2.export_intents(target)
            return {"kind": "intents-export", "intents": intents, "fingerprint": rest_v2.fingerprint(intents)}
        assert self.jobs
        version = version_hint or (self.jobs.model(target)["activeVersionId"] if read_serving else None)
        return {"kind": "model-version", "versionId": version, "fingerprint": version or ""}

    def serving_fingerprint(self, target: Target) -> str:
        if self.v2:
            return rest_v2.fingerprint(self.v2.export_intents(target))
        return str(self.serving_version(target))

    def serving_version(self, target: Target) -> str | None:
        """training-jobs: the active version id; rest-v2: None (a flow serves its last training)."""
        return str(self.jobs.model(target)["activeVersionId"]) if self.jobs else None

    # --- training ------------------------------------------------------------------------------------
    def load_training_data(self, target: Target, training: dict[str, list[str]] | None) -> str | None:
        """rest-v2: make the flow/locale hold exactly these example sentences (chunked, overwrite, verified);
        returns the fingerprint read back. training-jobs: the job body carries them (None)."""
        if self.v2 and training is not None:
            return self.v2.replace_intents(target, rest_v2.intents_file(training))
        return None

    def replace_intents(self, target: Target, intents: list[dict[str, Any]]) -> str:
        """rest-v2: the flow/locale holds exactly `intents` afterwards (chunked import, verified); its fingerprint."""
        assert self.v2, "only the rest-v2 dialect imports intents"
        return self.v2.replace_intents(target, intents)

    def flow_intents(self, target: Target) -> list[dict[str, Any]]:
        """rest-v2: the flow/locale's intents as exported (name, exampleSentences, ...)."""
        assert self.v2, "only the rest-v2 dialect has flow intents"
        return self.v2.export_intents(target)

    def training_out_of_date(self, target: Target) -> bool:
        """True when the flow's model does not reflect its current intents (training-jobs: always False)."""
        return self.v2.training_state(target)["out_of_date"] if self.v2 else False

    def endpoints_serving(self, target: Target) -> list[str]:
        """Names of endpoints that serve the target's flow (training-jobs: unknown, empty)."""
        return self.v2.endpoints_serving(target) if self.v2 else []

    def start_training(
        self, target: Target, *, mode: str, spec_body: dict[str, Any], idempotency_key: str
    ) -> JobStatus:
        """Start ONE training. Never retried on an ambiguous answer: the caller reconciles."""
        if self.v2:
            return self.v2.start_training(target, mode)
        assert self.jobs
        status = self.jobs.start_training(spec_body, idempotency_key)
        self._own_jobs.add(status.job_id)
        return status

    def recent_trainings(self, target: Target, since_epoch: float) -> list[JobStatus]:
        """Trainings of the target started at or after `since_epoch` (server clock).

        training-jobs: the specification defines no call that lists a model's jobs, so none is made. Nothing can
        start after +inf (an empty answer is exact); beside a job this client started or read (the run's own) the
        answer is empty (other trainings are not visible in this dialect). Asked anything else, the question is
        "did an earlier POST whose answer was lost start a training?": unanswerable, so this fails closed with
        `TrainingUnknown` rather than let a second training start."""
        if self.v2:
            return self.v2.recent_trainings(target, since_epoch)
        assert self.jobs
        if since_epoch == float("inf") or self._own_jobs:
            return []
        raise TrainingUnknown(
            f"whether an earlier training POST for model {target.model_id} started a job is unknown (its answer was "
            "lost) and the training-jobs specification defines no call to list a model's jobs: no second training "
            "is started. Find the model's job on the gateway; if none runs, clear the whole DAG run to start afresh"
        )

    def prove_training(
        self, target: Target, job_id: str, intended_fingerprint: str, *, wait_seconds: float = 0.0
    ) -> TrainingProof:
        """rest-v2: what the platform says about training `job_id` (`include.cognigy.proof`), asked again while
        other trainings of the flow/locale run (up to `wait_seconds`). training-jobs: the job ended completed."""
        if self.v2:
            return proof.prove_when_quiet(self.v2, target, job_id, intended_fingerprint, wait_seconds)
        status = self.job_status(job_id)
        problems = [] if status.state == "succeeded" else [f"job {job_id} ended {status.raw_status}"]
        return TrainingProof(job_id, problems=problems, fingerprint=intended_fingerprint)

    def job_status(self, job_id: str) -> JobStatus:
        api = self.v2 or self.jobs
        assert api is not None
        status = api.job_status(job_id)
        if self.jobs:
            self._own_jobs.add(job_id)  # only the run's own job ids are ever asked for
        return status

    def cancel(self, job_id: str) -> None:
        if self.v2:
            self.v2.cancel(job_id)
        else:
            log.warning("training-jobs dialect has no cancel call; job %s runs to its own timeout", job_id)

    # --- quality -------------------------------------------------------------------------------------
    def score(self, target: Target, sentence: str, version_id: str | None = None) -> list[dict[str, Any]]:
        if self.v2:
            return self.v2.score(target, sentence)
        assert self.jobs
        if version_id is None:
            version_id = self._active_version.get(target.model_id) or self.serving_version(target)
            self._active_version[target.model_id] = version_id  # type: ignore[assignment]
        return self.jobs.predict(target, version_id, sentence)

    def platform_feedback(self, target: Target, version_id: str | None = None) -> dict[str, Any]:
        """rest-v2: feedbackReport findings. training-jobs: server-side metrics (reported, not trusted)."""
        if self.v2:
            return self.v2.feedback(target)
        assert self.jobs
        if not version_id:
            return {}
        return {"serverMetrics": self.jobs.metrics(target, version_id)}

    # --- rollback ------------------------------------------------------------------------------------
    def restore_point(self, target: Target, point: dict[str, Any]) -> None:
        """Put the rollback point back; both calls are repeatable. An "intents-export" point (rest-v2) is imported
        with mode=overwrite and a retrain must follow (start it with `start_training`, exactly once); a
        "model-version" point (training-jobs) serves at once (the rollback call)."""
        if point["kind"] == "intents-export":
            assert self.v2
            self.v2.replace_intents(target, point["intents"])
            return
        if point["kind"] == "model-version":
            assert self.jobs
            if not point.get("versionId"):
                raise CognigyError("the rollback point names no model version (no rollbackTriggerVersionId)")
            self.jobs.rollback(target, point["versionId"])
            return
        raise CognigyError(f"unknown rollback point kind {point['kind']!r}")
