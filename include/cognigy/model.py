"""Dialect-neutral values the pipeline works with: what to train, and how a training job stands."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Target:
    """One model to retrain: a Cognigy flow in one locale (rest-v2) or a model id (training-jobs)."""

    project_id: str
    flow_id: str
    locale: str
    model_id: str

    @property
    def key(self) -> str:
        return f"{self.flow_id}/{self.locale}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        return cls(**{k: data[k] for k in ("project_id", "flow_id", "locale", "model_id")})


@dataclass
class JobStatus:
    """A training (or import) job as the pipeline sees it, whatever the dialect."""

    job_id: str
    state: JobState
    progress: float | None = None
    reason: str | None = None
    raw_status: str = ""
    created_at: str | None = None
    finished_at: str | None = None
    version_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def started_since(self, since_epoch: float) -> bool:
        """Created at or after `since_epoch` (1 s of clock skew allowed). A job without a creation time cannot
        be proven to be ours, so reconciliation never adopts it."""
        if not self.created_at:
            return False
        created = datetime.fromisoformat(self.created_at.replace("Z", "+00:00")).timestamp()
        return created >= since_epoch - 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        return cls(**data)
