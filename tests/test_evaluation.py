"""Predictions, score thresholding and metrics, checked on a real TF-IDF + LogisticRegression model."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from include.evaluation.metrics import NO_INTENT, Prediction, compute_metrics, label_from_scores

TRAIN = {
    "greeting": [
        "hello there",
        "hi",
        "good morning",
        "hey how are you",
        "hello bot",
        "good evening to you",
        "hi there friend",
        "morning",
    ],
    "goodbye": [
        "bye",
        "see you later",
        "goodbye for now",
        "talk to you soon",
        "bye bye",
        "see you tomorrow",
        "have a nice day goodbye",
        "catch you later",
    ],
    "order_pizza": [
        "i want a pizza",
        "order a large pepperoni pizza",
        "can i get a margherita",
        "pizza delivery please",
        "one pizza with extra cheese",
        "i would like to order food",
        "get me a veggie pizza",
        "order two pizzas",
    ],
    "track_order": [
        "where is my order",
        "track my delivery",
        "how long until my food arrives",
        "status of my order",
        "is my pizza on the way",
        "when will the delivery come",
        "has my order shipped",
        "order status please",
    ],
}
HELD_OUT = [
    ("hello", "greeting", "chat"),
    ("hi good morning", "greeting", "voice"),
    ("hey there", "greeting", "chat"),
    ("goodbye", "goodbye", "chat"),
    ("see you soon", "goodbye", "voice"),
    ("bye for now", "goodbye", "chat"),
    ("order a pepperoni pizza", "order_pizza", "chat"),
    ("i would like a pizza", "order_pizza", "voice"),
    ("can i order food", "order_pizza", "chat"),
    ("where is my pizza", "track_order", "chat"),
    ("track my order", "track_order", "voice"),
    ("how long until delivery", "track_order", "chat"),
    ("what is the weather like", "track_order", "voice"),  # nothing like it in training: low confidence
]
INTENTS = sorted(TRAIN)
THRESHOLD = 0.55  # in-domain held-out utterances score above it, the weather question below


@pytest.fixture(scope="module")
def model():
    texts = [t for intent in INTENTS for t in TRAIN[intent]]
    labels = [intent for intent in INTENTS for _ in TRAIN[intent]]
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000, C=10.0))
    with threadpool_limits(1):
        pipeline.fit(texts, labels)
    return pipeline


def cognigy_scores(model, text: str) -> list[dict]:
    """The model's probabilities in the shape of Cognigy's nlu/scores response."""
    probabilities = model.predict_proba([text])[0]
    return [
        {"name": name, "score": float(p), "negated": False, "id": f"id-{name}"}
        for name, p in zip(model.classes_, probabilities, strict=True)
    ]


def predictions_for(model, threshold: float) -> list[Prediction]:
    out = []
    for text, intent, channel in HELD_OUT:
        label, score = label_from_scores(cognigy_scores(model, text), threshold)
        out.append(Prediction(text, intent, label, score, {"channel": channel}))
    return out


# --- label_from_scores ----------------------------------------------------------------------------------


def test_top_score_above_threshold_is_the_label(model):
    scores = cognigy_scores(model, "order a pepperoni pizza")
    label, score = label_from_scores(scores, threshold=0.3)
    assert label == "order_pizza"
    assert score == max(s["score"] for s in scores)


def test_below_threshold_is_no_intent_and_keeps_the_top_score(model):
    scores = cognigy_scores(model, "what is the weather like")
    top = max(s["score"] for s in scores)
    assert label_from_scores(scores, threshold=top + 0.01) == (NO_INTENT, top)
    assert label_from_scores(scores, threshold=top)[0] != NO_INTENT  # the threshold itself is accepted


def test_empty_or_unusable_scores_are_no_intent():
    assert label_from_scores([], 0.5) == (NO_INTENT, None)
    assert label_from_scores([{"name": "greeting", "score": None}, {"score": 0.9}], 0.1) == (NO_INTENT, None)


def test_negated_intents_are_ignored():
    scores = [
        {"name": "order_pizza", "score": 0.95, "negated": True},
        {"name": "track_order", "score": 0.61, "negated": False},
        {"name": "goodbye", "score": 0.2},
    ]
    assert label_from_scores(scores, 0.5) == ("track_order", 0.61)
    assert label_from_scores(scores, 0.7) == (NO_INTENT, 0.61)
    only_negated = [{"name": "order_pizza", "score": 0.95, "negated": True}]
    assert label_from_scores(only_negated, 0.1) == (NO_INTENT, None)


# --- Prediction ------------------------------------------------------------------------------------------


def test_prediction_round_trips_through_json():
    original = Prediction("track my order", "track_order", None, 0.12, {"channel": "voice"}, status="scored")
    restored = Prediction.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored == original
    assert restored.label == NO_INTENT and not restored.correct
    with pytest.raises(ValueError):
        Prediction("x", "greeting", "greeting", 0.9, {}, status="pending")
    with pytest.raises(ValueError):
        Prediction("x", NO_INTENT, "greeting", 0.9, {})


# --- compute_metrics -------------------------------------------------------------------------------------


def test_metrics_follow_from_the_predictions(model):
    predictions = predictions_for(model, threshold=THRESHOLD)
    metrics = compute_metrics(predictions, INTENTS)

    correct = [p.label == p.true_intent for p in predictions]
    assert metrics["accuracy"] == pytest.approx(sum(correct) / len(predictions))
    for intent in INTENTS:
        rows = [p for p in predictions if p.true_intent == intent]
        predicted_as = [p for p in predictions if p.label == intent]
        hits = sum(p.label == intent for p in rows)
        stats = metrics["per_intent"][intent]
        assert stats["support"] == len(rows)
        assert stats["recall"] == pytest.approx(hits / len(rows))
        assert stats["precision"] == pytest.approx(hits / len(predicted_as) if predicted_as else 0.0)
    recalls = [metrics["per_intent"][i]["recall"] for i in INTENTS]
    assert metrics["macro"]["recall"] == pytest.approx(sum(recalls) / len(INTENTS))
    weighted = sum(metrics["per_intent"][i]["f1"] * metrics["per_intent"][i]["support"] for i in INTENTS)
    assert metrics["weighted"]["f1"] == pytest.approx(weighted / len(predictions))


def test_no_intent_is_a_predicted_column_but_never_a_true_label(model):
    predictions = predictions_for(model, threshold=THRESHOLD)
    below = [p for p in predictions if p.label == NO_INTENT]
    assert below, "the out-of-domain utterance should fall below the threshold"
    metrics = compute_metrics(predictions, INTENTS)
    matrix = metrics["confusion_matrix"]
    assert matrix["labels"][-1] == NO_INTENT
    assert NO_INTENT not in metrics["per_intent"] and NO_INTENT not in metrics["labels"]
    no_intent_column = [row[-1] for row in matrix["matrix"]]
    assert sum(no_intent_column) == len(below) == metrics["no_intent_predictions"]
    for i, label in enumerate(matrix["labels"]):
        support = metrics["per_intent"].get(label, {}).get("support", 0)
        assert sum(matrix["matrix"][i]) == support
    # a prediction below threshold counts against the true intent's recall
    weather = next(p for p in predictions if p.text == "what is the weather like")
    assert weather.label == NO_INTENT
    assert {"intent": NO_INTENT, "count": 1} in metrics["per_intent"]["track_order"]["top_confusions"]


def test_only_scored_predictions_enter_the_metrics(model):
    predictions = predictions_for(model, threshold=0.0)
    predictions[0] = Prediction(predictions[0].text, "greeting", None, None, {}, status="failed")
    predictions[1] = Prediction(predictions[1].text, "greeting", None, None, {}, status="skipped")
    metrics = compute_metrics(predictions, INTENTS)
    assert metrics["counts"] == {"scored": 11, "skipped": 1, "failed": 1, "total": 13}
    assert metrics["per_intent"]["greeting"]["support"] == 1
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 11


def test_top_confusions_are_the_most_frequent_wrong_predictions():
    predictions = [Prediction(f"t{i}", "order_pizza", "track_order", 0.9, {}) for i in range(3)]
    predictions += [Prediction(f"g{i}", "order_pizza", "greeting", 0.9, {}) for i in range(2)]
    predictions += [
        Prediction("n", "order_pizza", None, 0.1, {}),
        Prediction("ok", "order_pizza", "order_pizza", 1, {}),
    ]
    predictions += [Prediction("b", "goodbye", "goodbye", 0.9, {})]
    stats = compute_metrics(predictions, INTENTS)["per_intent"]["order_pizza"]
    assert stats["top_confusions"] == [
        {"intent": "track_order", "count": 3},
        {"intent": "greeting", "count": 2},
        {"intent": NO_INTENT, "count": 1},
    ]


def test_intents_without_test_utterances_do_not_drag_the_macro_average(model):
    predictions = [p for p in predictions_for(model, threshold=0.0) if p.true_intent != "goodbye"]
    metrics = compute_metrics(predictions, INTENTS)
    assert metrics["labels_without_support"] == ["goodbye"]
    supported = [i for i in INTENTS if i != "goodbye"]
    expected = sum(metrics["per_intent"][i]["f1"] for i in supported) / len(supported)
    assert metrics["macro"]["f1"] == pytest.approx(expected)


def test_unknown_predicted_intent_gets_its_own_column_and_true_labels_are_added():
    predictions = [
        Prediction("a", "greeting", "smalltalk", 0.9, {}),
        Prediction("b", "greeting", "greeting", 0.9, {}),
        Prediction("c", "refund", "refund", 0.9, {}),  # a true intent the caller did not list
    ]
    metrics = compute_metrics(predictions, ["greeting"])
    assert metrics["labels"] == ["greeting", "refund"]
    assert metrics["confusion_matrix"]["labels"] == ["greeting", "refund", "smalltalk", NO_INTENT]
    assert metrics["per_intent"]["greeting"]["recall"] == 0.5


def test_no_scored_predictions_give_empty_metrics():
    metrics = compute_metrics([Prediction("x", "greeting", None, None, {}, status="failed")], INTENTS)
    assert metrics["accuracy"] == 0.0 and metrics["counts"]["failed"] == 1
    assert Counter(metrics["counts"])["scored"] == 0
