"""PollPolicy (include/cognigy/poll_policy.py): backoff while nothing is known, a fraction of the predicted remaining
time while progress is steady, the latest possible finish once it is pinned down, backoff after a stall or jump."""

from __future__ import annotations

import itertools

import pytest

from bench.poll_economy import LegacyPollPolicy, before_after, make_profile, simulate_profile
from include.cognigy.poll_policy import PollPolicy


def test_it_backs_off_while_nothing_is_known() -> None:
    policy = PollPolicy(minimum=2.0, maximum=30.0, factor=1.5)
    delays = [policy.next_delay(now=float(i)) for i in range(12)]
    assert delays[:4] == [2.0, 3.0, 4.5, 6.75]
    assert all(b >= a for a, b in itertools.pairwise(delays)) and delays[-1] == 30.0
    policy.observe(None, now=20.0)
    assert policy.predicted_remaining() is None


def test_steady_progress_bounds_the_finish_and_the_next_poll_aims_at_a_fraction_of_it() -> None:
    policy = PollPolicy(minimum=2.0, maximum=30.0)
    policy.observe(0.0, now=0.0)
    policy.observe(0.01, now=6.0)
    policy.observe(0.10, now=60.0)  # 10 % a minute: ~540 s to go
    earliest, latest = policy.predicted_finish()
    assert 500 < earliest < 600 < latest < 700
    delay = policy.next_delay(now=60.0)
    assert delay == 90.0  # half of the earliest remaining time, capped at 3 x maximum while steady


def test_the_queue_wait_at_zero_does_not_slow_the_prediction() -> None:
    policy = PollPolicy(minimum=2.0, maximum=120.0)
    for t in (0.0, 20.0, 40.0, 60.0):
        policy.observe(0.0, now=t)
    policy.observe(0.5, now=70.0)  # ≥ 4.9 %/s since it left 0 % after t = 60: at most ~10 s to go
    earliest, latest = policy.predicted_finish()
    assert earliest >= 70.0 and latest == pytest.approx(80.4, abs=0.5)


def test_near_the_end_it_polls_just_after_the_latest_possible_finish() -> None:
    policy = PollPolicy(minimum=2.0, maximum=30.0)
    for t in range(0, 100, 7):
        policy.observe(min(99, int(t)) / 100, now=float(t))  # 1 %/s, whole percent
    policy.observe(0.99, now=99.5)
    earliest, latest = policy.predicted_finish()
    delay = policy.next_delay(now=99.5)
    assert latest - earliest <= 2.0 and delay == pytest.approx(max(2.0, latest - 99.5 + 0.05))


def test_a_stall_falls_back_to_backoff_and_a_restart_starts_over() -> None:
    policy = PollPolicy(minimum=2.0, maximum=30.0)
    policy.observe(0.2, now=0.0)
    policy.observe(0.4, now=10.0)
    assert policy.predicted_finish() is not None
    policy.observe(0.4, now=40.0)  # stalled: no line fits any more
    assert policy.predicted_finish() is None
    assert policy.next_delay(now=40.0) <= 30.0
    policy.observe(0.1, now=50.0)  # the task restarted
    assert policy.predicted_finish() is None
    assert policy.next_delay(now=50.0) == 2.0  # ahead of the old line: be quick again


def test_goal_on_a_steady_ten_minute_training() -> None:
    table = before_after()  # the benchmark's 500 trainings per profile
    steady = table["steady 10 min"]
    assert steady["after"]["requests_per_job"]["mean"] <= 15
    assert steady["after"]["lag_seconds"]["mean"] <= 1.0
    for kind in ("queue wait", "stall", "slow-down", "speed-up", "jump"):
        assert table[kind]["after"]["lag_seconds"]["mean"] <= table[kind]["before"]["lag_seconds"]["mean"] + 0.2


def test_the_legacy_copy_still_behaves_like_the_old_policy() -> None:
    import random

    profile = make_profile("steady 10 min", random.Random(3))
    requests, lag = simulate_profile(LegacyPollPolicy(), profile, 1.0)
    assert requests > 20 and 0 <= lag <= 5
