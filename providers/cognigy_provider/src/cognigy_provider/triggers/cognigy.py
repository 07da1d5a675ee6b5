"""CognigyJobTrigger: polls a Cognigy training task/job from the triggerer until it ends or a deadline.

Only GET calls happen here (no side effects), and all state is serializable: a restarted triggerer builds
a fresh trigger from `serialize()` and simply resumes polling the same job. Timeouts, 5xx and 429 mean
"poll again later"; only the deadline or a terminal status end the trigger. So does an unreachable budget store
(Redis/SQLite of the tenant's shared budget): the budget asks it again with backoff, the trigger polls again later,
and only if it is still unreachable at the deadline does the trigger end, with an error naming the store (fail
closed: no poll is sent outside the budget, and the training's fate is unknown).

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

from cognigy_provider.hooks.cognigy import CognigyHook
from include.cognigy import poll_policy
from include.cognigy.errors import CognigyError, RateLimited, TransientError
from include.cognigy.poll_policy import PollPolicy
from include.cognigy.rate_limit import BudgetStoreUnavailable

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
            "cognigy_provider.triggers.cognigy.CognigyJobTrigger",
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
        polls = transient = store_outages = 0
        store_down: BudgetStoreUnavailable | None = None
        while True:
            now = time.time()
            if now >= self.end_time:
                if store_down is not None:  # not one poll could be sent in the budget: the status is unknown
                    message = f"{store_down}; still unreachable at the deadline"
                    yield TriggerEvent({"outcome": "error", "job_id": self.job_id, "message": message, "polls": polls})
                    return
                yield TriggerEvent({"outcome": "deadline", "job_id": self.job_id, "polls": polls})
                return
            delay = None
            try:
                polls += 1
                status = await hook.a_get_job_status(self.job_id, self.dialect, deadline=self.end_time)
                store_down = None
            except BudgetStoreUnavailable as exc:  # nothing was sent: not a poll, ask again later
                polls -= 1
                store_outages += 1
                store_down = exc
                delay = min(self.poll_max, self.poll_min * 1.5**store_outages)
                log.warning("job %s: %s; polling again in %.1fs", self.job_id, exc, delay)
            except TimeoutError:  # no room in the tenant budget before the deadline: the loop ends it
                polls -= 1
                delay = 0.05
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
                    event = {"outcome": "finished", "status": status.to_dict(), "polls": polls, "transient": transient}
                    if store_outages:
                        event["budget_store_outages"] = store_outages
                    yield TriggerEvent(event)
                    return
                policy.observe(status.progress, now)
            # A little jitter (never longer than the policy says) keeps a fleet of triggers from polling in step.
            wait = delay if delay is not None else policy.next_delay(time.time()) * random.uniform(0.85, 1.0)
            await asyncio.sleep(max(0.05, min(wait, self.end_time - time.time())))
