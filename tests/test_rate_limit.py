"""The tenant's shared request budget (include/cognigy/rate_limit.py): limit parsing, the sliding window, the poll
reserve, the shared 429 pause, several processes on one SQLite file, Redis, and the transport's use of it."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest
import requests

from include.cognigy.config import ConnectionConfig
from include.cognigy.errors import RateLimited
from include.cognigy.rate_limit import (
    BULK,
    POLL,
    Pacer,
    TenantBudget,
    TenantLimit,
    TokenBucket,
    budget_key,
    read_log,
    storage_url,
)
from include.cognigy.transport import Transport, request_kind


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def max_in_window(times: list[float], window: float) -> int:
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --- the limit ------------------------------------------------------------------------------------------
def test_the_default_limit_is_cognigys_and_the_product_keeps_a_share_and_a_poll_reserve() -> None:
    limit = TenantLimit.from_extra(None)
    assert (limit.requests, limit.per_seconds) == (1000, 300.0)
    assert limit.budget == 900 and limit.bulk_budget == 855
    assert limit.window_seconds == pytest.approx(303.0)  # 1 % margin for requests that arrive late


def test_the_limit_comes_from_the_connection_extra() -> None:
    limit = TenantLimit.from_extra({"requests": 60, "per_seconds": 20, "share": 1.0, "poll_reserve": 0.25})
    assert (limit.budget, limit.bulk_budget, limit.window_seconds) == (60, 45, 21.0)
    assert TenantLimit.from_extra({"requests": 60.0, "per_seconds": 20}).requests == 60


@pytest.mark.parametrize(
    "bad",
    [{"requests": 0, "per_seconds": 1}, {"requests": 10, "per_seconds": -1}, {"requests": 10, "share": 2},
     {"requests": 10, "poll_reserve": 1}, {"requests": 10, "per_minute": 3}, "1000/300"],
)  # fmt: skip
def test_a_bad_limit_is_refused_with_the_reason(bad) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        TenantLimit.from_extra(bad)


def test_the_budget_key_names_the_tenant_and_credentials_never_a_secret() -> None:
    assert budget_key("https://api-app.cognigy.ai/", "client-1") == "https://api-app.cognigy.ai|client-1"
    assert budget_key("https://api-app.cognigy.ai", None) == "https://api-app.cognigy.ai|api-key"


def test_storage_comes_from_the_extra_then_the_environment_then_a_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("COGNIGY_RATE_LIMIT_STORAGE", raising=False)
    assert storage_url(None) == f"sqlite:///{tmp_path}/rate_limit/budget.sqlite"
    monkeypatch.setenv("COGNIGY_RATE_LIMIT_STORAGE", "redis://127.0.0.1:6379/3")
    assert storage_url(None) == "redis://127.0.0.1:6379/3"
    assert storage_url("memory://") == "memory://"


# --- the window, the reserve and the pause ----------------------------------------------------------------
def _budget(storage: str, clock: FakeClock, **limit) -> TenantBudget:
    spec = {"requests": 30, "per_seconds": 10, "share": 1.0, "poll_reserve": 0.2, "margin_seconds": 0, **limit}
    return TenantBudget("https://t|c", TenantLimit(**spec), storage, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_no_window_ever_holds_more_than_the_budget(backend: str, tmp_path: Path) -> None:
    clock = FakeClock()
    budget = _budget("memory://" if backend == "memory" else f"sqlite:///{tmp_path}/b.sqlite", clock)
    sent = []
    for i in range(200):
        budget.acquire(POLL if i % 4 == 0 else BULK)
        sent.append(clock.now)
        clock.now += 0.01
    assert max_in_window(sent, 10.0) <= 30
    assert sent[-1] - sent[0] < 200 / 24 * 10 * 1.25  # and keeps up (bulk at its 24-per-window watermark)


def test_polls_get_the_reserve_while_bulk_waits_at_the_watermark() -> None:
    clock = FakeClock()
    budget = _budget("memory://", clock)
    for _ in range(24):  # bulk_budget = 30 - 6
        assert budget.try_acquire(BULK) == 0
    assert budget.try_acquire(BULK) > 0  # scoring waits ...
    assert all(budget.try_acquire(POLL) == 0 for _ in range(6))  # ... polls still go
    assert budget.try_acquire(POLL) > 0  # until the whole budget is used


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_waiting_poll_takes_the_next_free_room_before_any_scoring(backend: str, tmp_path: Path) -> None:
    clock = FakeClock()
    start = clock.now
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path}/b.sqlite"
    scorer = _budget(url, clock)
    trigger = scorer if backend == "memory" else _budget(url, clock)  # sqlite: another process's view
    for _ in range(24):  # scoring fills the window up to its watermark (30 - 6) ...
        assert scorer.try_acquire(BULK) == 0
        clock.now += 0.1
    for _ in range(6):  # ... and polls the rest
        assert trigger.try_acquire(POLL) == 0
    assert trigger.try_acquire(POLL) > 0  # a finished training's poll has to wait: the window is full
    clock.now = start + 10.0 + 0.05  # the first scoring request leaves the window: room for one
    assert scorer.try_acquire(BULK) > 0  # scoring stays at its watermark ...
    assert trigger.try_acquire(POLL) == 0  # ... so the poll gets that room
    clock.now += 2.0  # as more of the window's requests leave it, scoring goes on
    assert scorer.try_acquire(BULK) == 0


def test_a_429_pauses_everyone_sharing_the_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    url = f"sqlite:///{tmp_path}/b.sqlite"
    worker, triggerer = _budget(url, clock), _budget(url, clock)  # two processes' views of one budget
    worker.block_for(7.0)
    assert triggerer.try_acquire(POLL) == pytest.approx(7.0)
    worker.block_for(2.0)  # a shorter pause never shortens a longer one
    assert triggerer.blocked_for() == pytest.approx(7.0)
    clock.now += 7.01
    assert triggerer.try_acquire(POLL) == 0


def _hammer(url: str, out: str, seconds: float) -> None:
    budget = TenantBudget("https://t|c", TenantLimit(20, 1.0, share=1.0, margin_seconds=0.05), url)
    times = []
    end = time.time() + seconds
    while time.time() < end:
        budget.acquire(POLL)
        times.append(time.time())
    Path(out).write_text(json.dumps(times))


def test_processes_sharing_a_sqlite_file_share_one_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/budget.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(url, str(tmp_path / f"{i}.json"), 3.0)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    times = [t for i in range(3) for t in json.loads((tmp_path / f"{i}.json").read_text())]
    assert max_in_window(times, 1.0) <= 20, "three processes together stayed within 20 per second"
    assert len(times) >= 40  # and they did use it (3 s at 20/s, minus start-up)
    assert len(read_log(url, "https://t|c")) >= 20


def test_redis_backend(tmp_path: Path) -> None:
    from devtools.services import start_redis  # a redis-server of our own (pip-installed binary, free port)

    server = start_redis(tmp_path / "redis")
    try:
        clock = FakeClock()
        url = f"{server.url}/0"
        one, two = _budget(url, clock), _budget(url, clock)  # two processes' views of one budget
        sent = []
        for i in range(90):
            (one if i % 2 else two).acquire(BULK if i % 3 else POLL)
            sent.append(clock.now)
            clock.now += 0.05
        assert max_in_window(sent, 10.0) <= 30
        one.block_for(3.0)
        assert two.try_acquire(POLL) == pytest.approx(3.0, abs=0.01)
    finally:
        server.stop()


# --- the transport ----------------------------------------------------------------------------------------
class StubSession:
    """Answers from a list: (status, headers, body)."""

    def __init__(self, answers: list[tuple[int, dict, dict]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        self.calls.append((method, url))
        status, headers, body = self.answers.pop(0)
        resp = requests.Response()
        resp.status_code, resp.headers, resp._content = (
            status,
            requests.structures.CaseInsensitiveDict(headers),
            json.dumps(body).encode(),
        )
        return resp


def test_the_transport_asks_polls_as_polls_and_a_429_pauses_the_budget() -> None:
    assert request_kind("GET", "/new/v2.0/tasks/abc") == POLL
    assert request_kind("GET", "/api/v2/ai/nlp/training/jobs/j1") == POLL
    assert request_kind("POST", "/new/v2.0/tasks/abc") == BULK
    assert request_kind("GET", "/new/v2.0/flows/f/intents") == BULK

    clock = FakeClock()
    budget = _budget("memory://", clock)
    asked: list[str] = []
    original = budget.acquire_request
    budget.acquire_request = lambda kind=BULK: (asked.append(kind), original(kind))[1]  # type: ignore[method-assign]
    session = StubSession([(429, {"Retry-After": "4"}, {"detail": "slow down"}), (200, {}, {"ok": True})])
    transport = Transport(ConnectionConfig(base_url="http://t", api_key="k"), bucket=budget, session=session)
    transport.max_retry_seconds = 0.0  # no retry: we only want to see the 429's effect
    with pytest.raises(RateLimited):
        transport.json("GET", "/new/v2.0/tasks/abc", "GET task", safe=True)
    assert asked == [POLL]
    assert budget.blocked_for() == pytest.approx(4.0)


def test_the_pacer_applies_the_per_task_cap_and_the_shared_budget() -> None:
    clock = FakeClock()
    budget = _budget("memory://", clock)
    cap_sleeps: list[float] = []
    cap = TokenBucket(2.0, capacity=1, clock=clock, sleep=cap_sleeps.append)
    pacer = Pacer(budget, cap)
    for _ in range(3):
        pacer.acquire_request(BULK)
    assert budget.acquired[BULK] == 3 and len(cap_sleeps) == 2  # the cap slowed the task down
    pacer.rate_limited(5.0)
    assert budget.blocked_for() == pytest.approx(5.0)
