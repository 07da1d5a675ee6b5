"""Score a labelled held-out set through Cognigy, one utterance per request, paced under the rate limit."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from include.cognigy.errors import CognigyError
from include.evaluation.metrics import Prediction, label_from_scores

log = logging.getLogger(__name__)

Scorer = Callable[[str], list[dict[str, Any]]]


def score_utterances(utterances: list[Any], scorer: Scorer, threshold: float) -> tuple[list[Prediction], float]:
    """Return one Prediction per utterance (failed calls are kept as status=failed) and the seconds taken.

    `utterances` are include.data.dataset.Utterance; `scorer` is e.g. `lambda s: client.score(target, s)`
    (the client's transport paces and retries; a call that still fails is counted, not fatal).
    """
    started = time.monotonic()
    predictions = []
    for utt in utterances:
        text = utt.text.strip()
        if not text:
            predictions.append(Prediction(utt.text, utt.intent, None, None, utt.slice_dict(), "skipped"))
            continue
        try:
            label, score = label_from_scores(scorer(text), threshold)
        except CognigyError as exc:
            log.warning("scoring failed for one utterance (%s)", type(exc).__name__)
            predictions.append(Prediction(utt.text, utt.intent, None, None, utt.slice_dict(), "failed"))
            continue
        predictions.append(Prediction(utt.text, utt.intent, label, score, utt.slice_dict(), "scored"))
    return predictions, time.monotonic() - started


def save_predictions(path: Path, predictions: list[Prediction]) -> Path:
    path.write_text("\n".join(json.dumps(p.to_dict(), ensure_ascii=False) for p in predictions) + "\n")
    return path


def load_predictions(path: Path) -> list[Prediction]:
    return [Prediction.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def agreement(a: list[Prediction], b: list[Prediction]) -> float:
    """Share of utterances (matched by text) on which two runs predict the same intent."""
    left = {p.text: p.predicted_intent for p in a if p.status == "scored"}
    pairs = [(left[p.text], p.predicted_intent) for p in b if p.status == "scored" and p.text in left]
    return sum(x == y for x, y in pairs) / len(pairs) if pairs else 0.0
