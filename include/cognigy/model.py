"""Dialect-neutral values the pipeline works with: what to train, and how a training job stands."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# Reconciliation compares a task's `createdAt` with the SERVER's clock (the `Date` header of a request made just
# before the POST). Allowed disagreement: the platform's nodes' clocks (NTP, well under a second) and `Date`'s
# one-second resolution.
SERVER_CLOCK_MARGIN_SECONDS = 2.0


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

    @property
    def created_epoch(self) -> float | None:
        """`created_at` as epoch seconds (None when unknown or unreadable)."""
        return created_epoch(self)

    def started_since(self, since_epoch: float, margin: float = SERVER_CLOCK_MARGIN_SECONDS) -> bool:
        """Created at or after `since_epoch` (a SERVER time: see SERVER_CLOCK_MARGIN_SECONDS), `margin` s of
        clock disagreement allowed. A job without a creation time cannot be proven to be ours, so
        reconciliation never adopts it."""
        created = self.created_epoch
        return created is not None and created >= since_epoch - margin

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        return cls(**data)


def created_epoch(job: JobStatus) -> float | None:
    return epoch_of(job.created_at)


def epoch_of(moment: str | None) -> float | None:
    """An ISO time as epoch seconds (None when absent or unreadable)."""
    if not moment:
        return None
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp()  # a naive time is local, as `rest_v2` makes it from epoch milliseconds


def server_time_of(headers: Any) -> float | None:
    """The server's clock from an answer's `Date` header (epoch seconds), None when absent or unreadable."""
    value = (headers or {}).get("Date")
    try:
        return parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError, IndexError):
        return None


class Trainings(list[JobStatus]):
    """Trainings read from the tenant's task list, with the server's clock at the time of the read
    (`server_time`, epoch seconds from the answer's `Date` header; None when the server sent none)."""

    def __init__(self, items: Any = (), server_time: float | None = None) -> None:
        super().__init__(items)
        self.server_time = server_time
