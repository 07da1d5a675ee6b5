"""CognigyJobTrigger: polls a Cognigy training task/job from the triggerer until it ends or a deadline.

Only GET calls happen here (no side effects), and all state is serializable: a restarted triggerer builds
a fresh trigger from `serialize()` and simply resumes polling the same job. Timeouts, 5xx and 429 mean
"poll again later"; only the deadline or a terminal status end the trigger.

The trigger only decides when to poll and what to report: `CognigyHook.a_get_job_status` reads the connection, sends
the GET (aiohttp, drawing from the tenant's shared budget as a poll) and parses the status.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from cognigy_airflow.hooks import CognigyHook
from include.cognigy import poll_policy
from include.cognigy.errors import CognigyError, RateLimited, TransientError
from include.cognigy.poll_policy import PollPolicy

log = logging.getLogger(__name__)


class CognigyJobTrigger(BaseTrigger):
    def __init__(
        self,
        conn_id: str,
        dialect: str,
        job_id: str,
        end_time: float,
        started_at: float | None = None,
        poll_min: float = poll_policy.MIN_SECONDS,
        poll_max: float = poll_policy.MAX_SECONDS,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.dialect = dialect
        self.job_id = job_id
        self.end_time = end_time
        self.started_at = started_at or time.time()
        self.poll_min = poll_min
        self.poll_max = poll_max

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "cognigy_airflow.triggers.CognigyJobTrigger",
            {
                "conn_id": self.conn_id,
                "dialect": self.dialect,
                "job_id": self.job_id,
                "end_time": self.end_time,
                "started_at": self.started_at,
                "poll_min": self.poll_min,
                "poll_max": self.poll_max,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = CognigyHook(self.conn_id)
        try:
            async for event in self._poll(hook):
                yield event
        finally:
            await hook.aclose()

    async def _poll(self, hook: CognigyHook) -> AsyncIterator[TriggerEvent]:
        policy = PollPolicy(minimum=self.poll_min, maximum=self.poll_max)
        polls = transient = 0
        while True:
            now = time.time()
            if now >= self.end_time:
                yield TriggerEvent({"outcome": "deadline", "job_id": self.job_id, "polls": polls})
                return
            delay = None
            try:
                polls += 1
                status = await hook.a_get_job_status(self.job_id, self.dialect)
            except RateLimited as exc:
                transient += 1
                delay = exc.retry_after
                log.warning("job %s: rate limited, polling again in %ss", self.job_id, delay)
            except TransientError as exc:  # 5xx (a 503 may say Retry-After), timeout, connection failure
                transient += 1
                delay = exc.retry_after
                log.warning("job %s: %s; polling again later", self.job_id, exc)
            except CognigyError as exc:  # 401 after refresh, 403, 404: polling cannot succeed
                yield TriggerEvent({"outcome": "error", "job_id": self.job_id, "message": str(exc), "polls": polls})
                return
            else:
                if status.terminal:
                    yield TriggerEvent(
                        {"outcome": "finished", "status": status.to_dict(), "polls": polls, "transient": transient}
                    )
                    return
                policy.observe(status.progress, now)
            # A little jitter (never longer than the policy says) keeps a fleet of triggers from polling in step.
            wait = delay if delay is not None else policy.next_delay(time.time()) * random.uniform(0.85, 1.0)
            await asyncio.sleep(max(0.05, min(wait, self.end_time - time.time())))
