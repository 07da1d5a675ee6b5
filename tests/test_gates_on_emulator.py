"""Each gate passes and fails for the reason it names, on models really trained by the emulator."""

from __future__ import annotations

import time

import pytest

from devtools.servers import Emulator
from emulator import seed
from include.cognigy.client import CognigyClient
from include.cognigy.config import ConnectionConfig
from include.cognigy.model import Target
from include.cognigy.rate_limit import TokenBucket
from include.data import dataset
from include.evaluation.config import GateConfig
from include.evaluation.gates import evaluate_gates
from include.evaluation.held_out import score_utterances
from include.evaluation.metrics import Prediction

LOCALE = "en-US"
TARGET = Target(seed.PROJECT_ID, seed.FLOW_ID, LOCALE, seed.MODEL_IDS[LOCALE])
PER_INTENT = 10


def client_for(emulator: Emulator, bucket: TokenBucket | None = None) -> CognigyClient:
    return CognigyClient(ConnectionConfig(base_url=emulator.url, api_key=emulator.api_key), bucket=bucket)


def train(client: CognigyClient, matrix: dict[str, int]) -> dict[str, int]:
    training = dataset.sample_training(LOCALE, matrix)
    client.load_training_data(TARGET, training)
    job = client.start_training(TARGET, mode="full", spec_body={}, idempotency_key="test")
    deadline = time.monotonic() + 120
    while not job.terminal:
        assert time.monotonic() < deadline
        time.sleep(0.3)
        job = client.job_status(job.job_id)
    assert job.state == "succeeded", job
    return {k: len(v) for k, v in training.items()}


def score(client: CognigyClient) -> list[Prediction]:
    predictions, _ = score_utterances(dataset.held_out(LOCALE, PER_INTENT), lambda s: client.score(TARGET, s), 0.3)
    return predictions


@pytest.fixture
def fresh(emulator: Emulator) -> CognigyClient:
    emulator.reset()
    emulator.knobs(training_seconds=0.5, rate_limit_requests=None)
    return client_for(emulator)


def every(n: int) -> dict[str, int]:
    return {name: n for name in dataset.intents(LOCALE)}


def test_a_good_model_passes_every_blocking_gate(fresh: CognigyClient) -> None:
    champion = score(fresh)  # the seeded 10-per-intent model
    counts = train(fresh, every(60))
    trained = dataset.sample_training(LOCALE, every(60))
    report = evaluate_gates(
        score(fresh), champion, dataset.intents(LOCALE), counts, None, GateConfig(), training_texts=trained
    )
    assert report.passed, [(g.name, g.reason) for g in report.gates if g.blocks]
    assert report.comparison["accuracy"]["delta"] > 0


def test_an_intent_left_out_of_training_fails_the_per_intent_floor(fresh: CognigyClient) -> None:
    matrix = every(60)
    del matrix["HassGetWeather"]
    counts = train(fresh, matrix)
    report = evaluate_gates(score(fresh), None, dataset.intents(LOCALE), counts, None, GateConfig())
    gate = report.gate("per_intent_floor")
    assert not gate.passed and "HassGetWeather" in gate.reason
    assert not report.gate("training_balance").passed  # the missing intent is also a training gap


def test_a_skewed_training_matrix_fails_training_balance(fresh: CognigyClient) -> None:
    matrix = every(60)
    matrix.update({"HassTurnOn": 150, "HassTurnOff": 150, "HassMediaPause": 5, "HassMediaUnpause": 5})
    counts = train(fresh, matrix)
    report = evaluate_gates(score(fresh), None, dataset.intents(LOCALE), counts, None, GateConfig())
    gate = report.gate("training_balance")
    assert not gate.passed and "30" in gate.reason  # 150 / 5
    assert not report.passed


def test_a_better_champion_blocks_promotion_with_significance(fresh: CognigyClient) -> None:
    train(fresh, every(80))
    champion = score(fresh)
    counts = train(fresh, every(3))
    report = evaluate_gates(
        score(fresh), champion, dataset.intents(LOCALE), counts, None, GateConfig(min_class_count=1)
    )
    gate = report.gate("champion_regression")
    assert not gate.passed
    assert report.comparison["mcnemar"]["p_value"] < 0.05
    assert report.comparison["accuracy"]["delta"] < 0


def test_retraining_the_same_data_is_noise_not_regression(fresh: CognigyClient) -> None:
    train(fresh, every(40))
    champion = score(fresh)
    counts = train(fresh, every(40))
    report = evaluate_gates(score(fresh), champion, dataset.intents(LOCALE), counts, None, GateConfig())
    assert report.gate("champion_regression").passed
    assert report.comparison["verdict"] in ("noise", "better", "worse_within_margin")


def test_scoring_paced_under_a_tight_limit_finishes_without_429(emulator: Emulator) -> None:
    emulator.reset()
    emulator.knobs(rate_limit_requests=30, rate_limit_window_seconds=10)
    before = emulator.stats()["responses_429"]
    bucket = TokenBucket.for_tenant_limit(30, 10, share=0.9)
    utterances = dataset.held_out(LOCALE, 3)  # 57 utterances at ~2.7/s
    client = client_for(emulator, bucket)
    predictions, seconds = score_utterances(utterances, lambda s: client.score(TARGET, s), 0.3)
    assert all(p.status == "scored" for p in predictions)
    assert emulator.stats()["responses_429"] == before
    assert seconds > (len(utterances) - 30) / 3.0  # it really was paced, i.e. slower than unlimited
    emulator.knobs(rate_limit_requests=None)
