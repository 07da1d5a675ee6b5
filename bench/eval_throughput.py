"""Benchmark 4 - evaluation throughput under the tenant rate limit, alone and sharing the budget with polling.

Cognigy allows 1,000 requests per 5 minutes per tenant (3.33 requests/s). Scaled down in time, not in rate:
the emulator is set to 100 requests per 30 s (also 3.33/s; 10x shorter window, so a burst weighs 10x more -
the scaled-down case is the harder one). Held-out utterances are scored one request each with
`include.evaluation.held_out.score_utterances` through
`CognigyClient(config, bucket=TokenBucket.for_tenant_limit(...))`.

Phase A: scoring alone. Phase B: the same scoring while 50 trainings are polled (PollPolicy, as the trigger
does) through clients sharing the one bucket. Figures: achieved request rate / the tenant's allowed rate,
and 429 answers counted by the emulator.
Run: PYTHONPATH=. .venv/bin/python -m bench.eval_throughput [--utterances 200 --share 0.95]
"""

from __future__ import annotations

import argparse
import threading
import time

from bench.common import banner, create_trainings, demo_target, fresh_emulator, show, write_result
from include.cognigy.client import CognigyClient
from include.cognigy.config import ConnectionConfig
from include.cognigy.poll_policy import PollPolicy
from include.cognigy.rate_limit import TokenBucket
from include.data import dataset
from include.evaluation.held_out import score_utterances

LIMIT, WINDOW = 100, 30.0  # scaled from 1,000 per 300 s


def _poll_until_done(config: ConnectionConfig, bucket: TokenBucket, job_id: str, counts: dict, stop: threading.Event):
    client = CognigyClient(config, bucket=bucket)
    policy = PollPolicy()
    while not stop.is_set():
        now = time.time()
        status = client.job_status(job_id)
        counts["polls"] += 1
        if status.terminal:
            return
        policy.observe(status.progress, now)
        stop.wait(policy.next_delay(time.time()))


def phase(emulator, config, share: float, utterances, trainings: int) -> dict:
    target = demo_target()
    job_ids = []
    if trainings:
        # Durations spread so that polling goes on during the whole scoring phase.
        durations = [round(40 + 100 * i / max(1, trainings - 1)) for i in range(trainings)]
        job_ids = [t["_id"] for t in create_trainings(emulator, durations)]
    emulator.knobs(rate_limit_requests=LIMIT, rate_limit_window_seconds=WINDOW)  # also empties the window
    bucket = TokenBucket.for_tenant_limit(LIMIT, WINDOW, share=share)
    client = CognigyClient(config, bucket=bucket)
    before = emulator.stats()
    counts, stop = {"polls": 0}, threading.Event()
    pollers = [
        threading.Thread(target=_poll_until_done, args=(config, bucket, job_id, counts, stop), daemon=True)
        for job_id in job_ids
    ]
    started = time.monotonic()
    for thread in pollers:
        thread.start()
    predictions, _ = score_utterances(utterances, lambda s: client.score(target, s), 0.3)
    elapsed = time.monotonic() - started
    during = emulator.stats()
    polls_during = counts["polls"]
    stop.set()
    for thread in pollers:
        thread.join(timeout=60)
    after = emulator.stats()
    requests = during["requests_total"] - before["requests_total"]
    allowed = LIMIT / WINDOW
    return {
        "share": share,
        "bucket": {
            "rate_per_s": round(bucket.rate, 4),
            "capacity": round(bucket.capacity, 3),
            "max_in_window": round(bucket.max_in(WINDOW), 2),
        },
        "utterances": len(utterances),
        "scored": sum(p.status == "scored" for p in predictions),
        "failed": sum(p.status == "failed" for p in predictions),
        "trainings_polled": len(job_ids),
        "polls_during_scoring": polls_during,
        "seconds": round(elapsed, 2),
        "requests": requests,
        "achieved_rate_per_s": round(requests / elapsed, 4),
        "allowed_rate_per_s": round(allowed, 4),
        "achieved_over_allowed": round(requests / elapsed / allowed, 4),
        "achieved_over_budget": round(requests / elapsed / (allowed * share), 4),
        "scoring_rate_per_s": round(len(utterances) / elapsed, 4),
        "responses_429": after["responses_429"] - before["responses_429"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--trainings", type=int, default=50)
    parser.add_argument("--share", type=float, default=0.95, help="share of the tenant limit the bucket may use")
    args = parser.parse_args(argv)
    banner(f"4. Evaluation throughput: {LIMIT} requests / {WINDOW:g} s (= 1,000 / 5 min), share {args.share}")
    utterances = (dataset.held_out("en-US") * 10)[: args.utterances]
    emulator = fresh_emulator("eval_throughput")
    try:
        config = ConnectionConfig(base_url=emulator.url, api_key=emulator.api_key)
        alone = phase(emulator, config, args.share, utterances, 0)
        show(
            "A scoring alone: achieved / allowed",
            f"{alone['achieved_over_allowed']:.1%} "
            f"({alone['achieved_rate_per_s']}/s of {alone['allowed_rate_per_s']}/s), 429s {alone['responses_429']}",
        )
        shared = phase(emulator, config, args.share, utterances, args.trainings)
        show(
            f"B + {args.trainings} trainings polled: achieved / allowed",
            f"{shared['achieved_over_allowed']:.1%}, 429s {shared['responses_429']}, polls during scoring "
            f"{shared['polls_during_scoring']}, scoring {shared['scoring_rate_per_s']}/s",
        )
    finally:
        emulator.stop()
    figures = {
        "alone_achieved_over_allowed": alone["achieved_over_allowed"],
        "alone_429": alone["responses_429"],
        "shared_achieved_over_allowed": shared["achieved_over_allowed"],
        "shared_429": shared["responses_429"],
        "shared_scoring_rate_per_s": shared["scoring_rate_per_s"],
        "goal_90pct_and_no_429": min(alone["achieved_over_allowed"], shared["achieved_over_allowed"]) >= 0.9
        and alone["responses_429"] == shared["responses_429"] == 0,
    }
    for key, value in figures.items():
        show(key, value)
    show("written", write_result("eval_throughput", figures, alone=alone, shared=shared, limit=LIMIT, window=WINDOW))
    return figures


if __name__ == "__main__":
    main()
