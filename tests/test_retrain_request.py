"""The retraining request a user types into the Airflow trigger form: what it accepts, what it refuses and how.

Every rule from the issue is checked alone (one error naming the field), together (all errors in one exception),
against hostile ids that must never reach a URL path, and by fuzzing random and mutated input, which must only
ever give a request or `RequestInvalid`, without touching the network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.cognigy.rest_v2 import seg
from include.request.retrain_request import (
    COGNIGY_MAX_INTENTS_PER_FLOW,
    COGNIGY_MAX_SENTENCES_PER_INTENT,
    COGNIGY_MAX_TRAINING_SECONDS,
    RequestInvalid,
    RetrainRequest,
    parse_request,
)

SPEC_FIELDS = {
    "modelId",
    "trainingDataSliceMatrix",
    "convergenceThreshold",
    "computeConstraints",
    "maxDatasetSize",
    "rollbackTriggerVersionId",
}
TOP_LEVEL_FIELDS = set(RetrainRequest.model_fields)


def valid_raw() -> dict[str, Any]:
    """A request a user would submit: two intents, one locale, everything within the rules."""
    return {
        "modelId": str(uuid.uuid4()),
        "trainingDataSliceMatrix": {"greeting": 40, "order.status": 60},
        "convergenceThreshold": 0.05,
        "computeConstraints": {"maxGpuMemory": 2048, "maxCpuCores": 4, "timeoutSeconds": 900},
        "maxDatasetSize": 5000,
        "rollbackTriggerVersionId": str(uuid.uuid4()),
        "projectId": "64a1f0c2e4b0a1b2c3d4e5f6",
        "flowId": "64a1f0c2e4b0a1b2c3d4e5f7",
        "locales": ["en-US", "de-DE"],
        "mode": "full",
        "trainingData": {"source": "demo"},
        "heldOut": {"source": "uri", "uri": "s3://bot-data/held_out_{locale}.csv", "threshold": 0.3},
        "promotion": {"mode": "staging", "stagingFlowId": "64a1f0c2e4b0a1b2c3d4e5f8"},
    }


def errors_of(raw: Any) -> list[str]:
    with pytest.raises(RequestInvalid) as caught:
        parse_request(raw)
    assert caught.value.errors, "RequestInvalid without any error"
    return caught.value.errors


def error_path(error: str) -> str:
    path, sep, message = error.partition(": ")
    assert sep and message, f"not 'path: message': {error!r}"
    return path


# --- no network, ever ----------------------------------------------------------------------------------------
# Mocking is justified here: the claim under test is "validation never opens a connection", and the only way to
# prove an absence is to make every connection attempt fail loudly and be recorded. Nothing real is replaced.
NETWORK_ATTEMPTS: list[Any] = []


def _refuse(*args: Any, **kwargs: Any) -> None:
    NETWORK_ATTEMPTS.append(args)
    raise AssertionError(f"network access during request validation: {args!r}")


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[list[Any]]:
    """Module-wide socket guard (module scope so hypothesis' per-example runs are covered too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", lambda self, *a, **k: _refuse(*a, **k))
        mp.setattr(socket.socket, "connect_ex", lambda self, *a, **k: _refuse(*a, **k))
        mp.setattr(socket, "create_connection", _refuse)
        yield NETWORK_ATTEMPTS
    assert not NETWORK_ATTEMPTS, f"validation tried the network: {NETWORK_ATTEMPTS!r}"


def test_socket_guard_is_active() -> None:
    before = len(NETWORK_ATTEMPTS)
    with pytest.raises(AssertionError, match="network access"):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)
    with socket.socket() as sock, pytest.raises(AssertionError, match="network access"):
        sock.connect(("127.0.0.1", 9))
    del NETWORK_ATTEMPTS[before:]  # these two were the guard's self-test, not validation


# --- a valid request ------------------------------------------------------------------------------------------
def test_valid_request_passes_and_round_trips() -> None:
    raw = valid_raw()
    request = parse_request(raw)

    assert str(request.modelId) == raw["modelId"]
    assert request.trainingDataSliceMatrix == raw["trainingDataSliceMatrix"]
    assert request.computeConstraints.timeoutSeconds == raw["computeConstraints"]["timeoutSeconds"]
    assert request.locales == raw["locales"]
    # The same request arrives as a dict (trigger form), as JSON text and as bytes; all mean the same.
    assert parse_request(json.dumps(raw)) == request
    assert parse_request(json.dumps(raw).encode()) == request
    # Its canonical JSON and its JSON dump are themselves valid requests equal to it.
    assert parse_request(request.canonical_json()) == request
    assert parse_request(request.model_dump(mode="json")) == request
    assert parse_request(request.canonical_json()).sha256 == request.sha256


def test_optional_fields_have_defaults() -> None:
    raw = valid_raw()
    for optional in ("rollbackTriggerVersionId", "mode"):
        del raw[optional]
    request = parse_request(raw)
    assert request.rollbackTriggerVersionId is None
    assert request.mode == "full"


def test_targets_are_one_per_locale_with_the_request_ids() -> None:
    request = parse_request(valid_raw())
    targets = request.targets()
    assert [t.locale for t in targets] == request.locales
    assert {(t.project_id, t.flow_id, t.model_id) for t in targets} == {
        (request.projectId, request.flowId, str(request.modelId))
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = raw
        for key in parents:
            node = node[key]
        del node[last]

    return apply


def _many_intents(n: int) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        raw["trainingDataSliceMatrix"] = {f"intent-{i}": 1 for i in range(n)}
        raw["maxDatasetSize"] = 10_000

    return apply


@pytest.mark.parametrize(
    "mutate",
    [
        _set("convergenceThreshold", 0.001),
        _set("convergenceThreshold", 0.99),
        _set("computeConstraints/maxCpuCores", 1),
        _set("computeConstraints/maxCpuCores", 32),
        _set("computeConstraints/timeoutSeconds", 7200),
        _set("computeConstraints/maxGpuMemory", 1),
        _set("trainingDataSliceMatrix", {"greeting": COGNIGY_MAX_SENTENCES_PER_INTENT}),
        _many_intents(COGNIGY_MAX_INTENTS_PER_FLOW),
        _set("maxDatasetSize", 500_000),  # needs 5000 s, and 7200 is allowed
        _set("mode", "quick"),
        _set("locales", ["en", "pt-BR", "zh-Hant-TW"]),
    ],
    ids=lambda m: "",
)
def test_boundary_values_are_accepted(mutate: Callable[[dict[str, Any]], None]) -> None:
    raw = valid_raw()
    raw["computeConstraints"]["timeoutSeconds"] = 7200
    mutate(raw)
    parse_request(raw)


def test_smallest_dataset_and_shortest_timeout_are_accepted() -> None:
    raw = valid_raw()
    raw["maxDatasetSize"] = 100
    raw["trainingDataSliceMatrix"] = {"greeting": 100}
    raw["computeConstraints"]["timeoutSeconds"] = 300
    parse_request(raw)


# --- each rule alone -------------------------------------------------------------------------------------------
SINGLE_VIOLATIONS: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("modelId not a uuid", "modelId", _set("modelId", "model-42"), "uuid"),
    ("modelId missing", "modelId", _drop("modelId"), "required"),
    ("matrix empty", "trainingDataSliceMatrix", _set("trainingDataSliceMatrix", {}), "at least one intent"),
    ("matrix zero", "trainingDataSliceMatrix.greeting", _set("trainingDataSliceMatrix/greeting", 0), "greater than 0"),
    ("matrix negative", "trainingDataSliceMatrix.greeting", _set("trainingDataSliceMatrix/greeting", -5), "greater"),
    ("matrix fraction", "trainingDataSliceMatrix.greeting", _set("trainingDataSliceMatrix/greeting", 2.5), "integer"),
    # Cognigy's 200-sentence / 2,500-intent limits depend on the dialect: see test_platform_limits_*.
    (
        "intent with slash",
        "trainingDataSliceMatrix",
        lambda raw: raw["trainingDataSliceMatrix"].update({"../admin": 3}),
        "slashes",
    ),
    ("intent empty", "trainingDataSliceMatrix", _set("trainingDataSliceMatrix/", 3), "empty"),
    ("intent too long", "trainingDataSliceMatrix", _set("trainingDataSliceMatrix/" + "x" * 201, 3), "too long"),
    ("intent control char", "trainingDataSliceMatrix", _set("trainingDataSliceMatrix/a\x00b", 3), "control"),
    ("intent padded", "trainingDataSliceMatrix", _set("trainingDataSliceMatrix/ greeting ", 3), "intent name"),
    ("intent lone surrogate", "trainingDataSliceMatrix", _set("trainingDataSliceMatrix/gr\ud800", 3), "intent name"),
    ("threshold low", "convergenceThreshold", _set("convergenceThreshold", 0.0009), "greater than or equal"),
    ("threshold high", "convergenceThreshold", _set("convergenceThreshold", 0.991), "less than or equal"),
    ("threshold nan", "convergenceThreshold", _set("convergenceThreshold", float("nan")), "less than or equal"),
    ("threshold text", "convergenceThreshold", _set("convergenceThreshold", "fast"), "number"),
    ("gpu zero", "computeConstraints.maxGpuMemory", _set("computeConstraints/maxGpuMemory", 0), "greater than 0"),
    ("cpu zero", "computeConstraints.maxCpuCores", _set("computeConstraints/maxCpuCores", 0), "greater than or equal"),
    ("cpu 33", "computeConstraints.maxCpuCores", _set("computeConstraints/maxCpuCores", 33), "less than or equal"),
    ("timeout 299", "computeConstraints.timeoutSeconds", _set("computeConstraints/timeoutSeconds", 299), "300"),
    ("timeout 7201", "computeConstraints.timeoutSeconds", _set("computeConstraints/timeoutSeconds", 7201), "7200"),
    ("constraint missing", "computeConstraints.maxCpuCores", _drop("computeConstraints/maxCpuCores"), "required"),
    ("constraint extra", "computeConstraints.maxTpus", _set("computeConstraints/maxTpus", 2), "not permitted"),
    ("constraints not object", "computeConstraints", _set("computeConstraints", [1, 2]), "dictionary"),
    ("dataset 99", "maxDatasetSize", _set("maxDatasetSize", 99), "100"),
    ("dataset 500001", "maxDatasetSize", _set("maxDatasetSize", 500_001), "500000"),
    ("rollback not uuid", "rollbackTriggerVersionId", _set("rollbackTriggerVersionId", "v7"), "uuid"),
    ("project short", "projectId", _set("projectId", "64a1f0c2"), "pattern"),
    ("flow not hex", "flowId", _set("flowId", "z" * 24), "pattern"),
    ("locales empty", "locales", _set("locales", []), "at least 1"),
    ("locale word", "locales", _set("locales", ["english"]), "locale names like en-US"),
    ("locale underscore", "locales", _set("locales", ["en_US"]), "locale names like en-US"),
    ("locale trailing newline", "locales", _set("locales", ["en-US\n"]), "locale names like en-US"),
    ("locale path", "locales", _set("locales", ["en/../../admin"]), "locale names like en-US"),
    ("locales repeat", "locales", _set("locales", ["en-US", "en-US"]), "repeat"),
    ("mode unknown", "mode", _set("mode", "partial"), "'full' or 'quick'"),
    ("unknown field", "learningRate", _set("learningRate", 0.1), "not permitted"),
]


@pytest.mark.parametrize(
    ("field", "mutate", "rule"),
    [case[1:] for case in SINGLE_VIOLATIONS],
    ids=[case[0] for case in SINGLE_VIOLATIONS],
)
def test_each_rule_alone_gives_one_error_naming_its_field(
    field: str, mutate: Callable[[dict[str, Any]], None], rule: str
) -> None:
    raw = valid_raw()
    mutate(raw)
    errors = errors_of(raw)
    assert len(errors) == 1, errors
    assert error_path(errors[0]) == field
    assert rule.lower() in errors[0].lower()


def test_several_violations_are_all_reported_in_one_exception() -> None:
    raw = valid_raw()
    raw["modelId"] = "not-a-uuid"
    raw["flowId"] = "../../admin"
    raw["computeConstraints"]["maxCpuCores"] = 64
    raw["locales"] = ["english"]
    raw["trainingDataSliceMatrix"]["greeting"] = 0
    del raw["maxDatasetSize"]

    errors = errors_of(raw)

    assert sorted(map(error_path, errors)) == sorted(
        [
            "modelId",
            "flowId",
            "computeConstraints.maxCpuCores",
            "locales",
            "trainingDataSliceMatrix.greeting",
            "maxDatasetSize",
        ]
    )
    # The exception's text lists them all, one per line, for the task log.
    with pytest.raises(RequestInvalid) as caught:
        parse_request(raw)
    for error in errors:
        assert error in str(caught.value)


def test_timeout_below_dataset_rule_says_training_would_time_out() -> None:
    raw = valid_raw()
    raw["maxDatasetSize"] = 100_000
    needed = raw["maxDatasetSize"] / 1000 * 10
    raw["computeConstraints"]["timeoutSeconds"] = int(needed) - 1

    (error,) = errors_of(raw)

    assert "computeConstraints.timeoutSeconds" in error
    assert f"{int(needed)}s" in error
    assert "training would likely time out" in error

    raw["computeConstraints"]["timeoutSeconds"] = int(needed)
    parse_request(raw)


def test_matrix_total_above_max_dataset_size_is_refused() -> None:
    raw = valid_raw()
    raw["maxDatasetSize"] = 100
    raw["trainingDataSliceMatrix"] = {"greeting": 60, "farewell": 41}

    (error,) = errors_of(raw)

    assert "trainingDataSliceMatrix" in error
    assert "maxDatasetSize" in error


# --- hostile ids -------------------------------------------------------------------------------------------------
HOSTILE_IDS = [
    "../../admin",
    "..%2f..%2fadmin",
    "%2e%2e%2f%2e%2e%2fadmin",
    "%2e%2e",
    "64a1f0c2e4b0a1b2c3d4e5f6/../../admin",
    "64a1f0c2e4b0a1b2c3d4e5f6?x=1",
    "64a1f0c2e4b0a1b2c3d4e5#6",
    "64a1f0c2e4b0a1b2c3d4e5f6\n",
    "\n64a1f0c2e4b0a1b2c3d4e5f6",
    " 64a1f0c2e4b0a1b2c3d4e5f6",
    "64a1f0c2e4b0a1b2c3d4e5f\x00",
    "\x00" * 24,
    "６４ａ１ｆ０ｃ２ｅ４ｂ０ａ１ｂ２ｃ３ｄ４ｅ５ｆ６",  # fullwidth look-alikes
    "٠١٢٣٤٥٦٧٨٩" * 2 + "abcd",  # Arabic-Indic digits
    "64a1f0c2e4b0a1b2c3d4e5f\u0301",  # combining accent
    "a" * 100_000,
    "",
]


@pytest.mark.parametrize("field", ["projectId", "flowId"])
@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=lambda v: ascii(v)[:30])
def test_hostile_ids_are_refused_and_not_echoed(field: str, hostile: str) -> None:
    raw = valid_raw()
    raw[field] = hostile

    errors = errors_of(raw)

    assert [error_path(e) for e in errors] == [field]
    if len(hostile) > 3:
        assert hostile not in errors[0], "the hostile value must not be echoed into logs"


@pytest.mark.parametrize("field", ["projectId", "flowId"])
@pytest.mark.parametrize("wrong_type", [None, 42, ["64a1f0c2e4b0a1b2c3d4e5f6"], {"$ne": ""}, True])
def test_ids_of_the_wrong_type_are_refused(field: str, wrong_type: Any) -> None:
    raw = valid_raw()
    raw[field] = wrong_type
    assert [error_path(e) for e in errors_of(raw)] == [field]


def test_accepted_ids_need_no_quoting_in_a_url_path() -> None:
    request = parse_request(valid_raw())
    for value in (request.projectId, request.flowId, *request.locales, str(request.modelId)):
        assert seg(value) == value


# --- malformed raw text -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "not json",
        "[1, 2]",
        "null",
        '"a string"',
        "[" * 100_000 + "]" * 100_000,  # nesting deeper than the JSON decoder's recursion limit
        '{"maxDatasetSize": ' + "9" * 5000 + "}",  # integer literal above Python's digit limit
        b"\xff\xfe\xfa",  # undecodable bytes
        b"\x80abc",
    ],
    ids=lambda v: ascii(v)[:20],
)
def test_malformed_text_is_refused_as_a_whole_request(text: str | bytes) -> None:
    errors = errors_of(text)
    assert len(errors) == 1
    assert error_path(errors[0]) == "(request)"


@pytest.mark.parametrize("raw", [None, 42, 4.2, [valid_raw()], ("a", "b"), {1, 2}])
def test_non_object_input_is_refused(raw: Any) -> None:
    (error,) = errors_of(raw)
    assert error.startswith("(request): expected a JSON object")


# --- identity: canonical JSON and hash ----------------------------------------------------------------------------
def _reversed_order(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_order(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [_reversed_order(v) for v in value]
    return value


def test_canonical_json_has_sorted_keys_and_no_whitespace() -> None:
    request = parse_request(valid_raw())
    canonical = request.canonical_json()
    assert not re.search(r"\s", canonical)
    assert canonical == json.dumps(json.loads(canonical), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert request.sha256 == hashlib.sha256(canonical.encode()).hexdigest()


def test_hash_is_stable_under_key_order_and_equivalent_spellings() -> None:
    raw = valid_raw()
    request = parse_request(raw)
    shuffled = parse_request(_reversed_order(raw))
    respelled = copy.deepcopy(raw)
    respelled["modelId"] = raw["modelId"].upper()
    respelled["rollbackTriggerVersionId"] = "{" + raw["rollbackTriggerVersionId"] + "}"

    assert list(_reversed_order(raw)) != list(raw)
    assert shuffled.canonical_json() == request.canonical_json()
    assert shuffled.sha256 == request.sha256
    assert parse_request(respelled).sha256 == request.sha256


@pytest.mark.parametrize(
    "mutate",
    [
        _set("modelId", str(uuid.uuid4())),
        _set("trainingDataSliceMatrix/greeting", 41),
        _set("trainingDataSliceMatrix/farewell", 1),
        _set("convergenceThreshold", 0.051),
        _set("computeConstraints/maxGpuMemory", 2049),
        _set("computeConstraints/timeoutSeconds", 901),
        _set("maxDatasetSize", 5001),
        _drop("rollbackTriggerVersionId"),
        _set("flowId", "64a1f0c2e4b0a1b2c3d4e5f9"),
        _set("locales", ["de-DE", "en-US"]),  # order of locales is order of training
        _set("mode", "quick"),
    ],
    ids=lambda m: "",
)
def test_different_requests_have_different_hashes(mutate: Callable[[dict[str, Any]], None]) -> None:
    raw = valid_raw()
    other = copy.deepcopy(raw)
    mutate(other)
    assert parse_request(other).sha256 != parse_request(raw).sha256


# --- deadline ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [300, 599, 600, 601, 3600, 7200])
@pytest.mark.parametrize("dialect", ["rest-v2", "training-jobs"])
def test_deadline_is_clamped_to_ten_minutes_only_on_rest_v2(dialect: str, timeout: int) -> None:
    assert COGNIGY_MAX_TRAINING_SECONDS == 600  # Cognigy: an intent training runs at most 10 minutes
    raw = valid_raw()
    raw["computeConstraints"]["timeoutSeconds"] = timeout
    deadline, warning = parse_request(raw).training_deadline_seconds(dialect)

    if dialect == "rest-v2" and timeout > 600:
        assert deadline == 600
        assert warning is not None
        assert "computeConstraints.timeoutSeconds" in warning
        assert f"{timeout}s" in warning
    else:
        assert deadline == timeout
        assert warning is None


# --- derived bodies --------------------------------------------------------------------------------------------
def test_spec_body_holds_only_the_specification_fields() -> None:
    request = parse_request(valid_raw())
    body = request.spec_body()

    assert set(body) == SPEC_FIELDS
    dumped = request.model_dump(mode="json")
    assert body == {k: dumped[k] for k in SPEC_FIELDS}
    json.dumps(body)  # it is sent as-is

    raw = valid_raw()
    del raw["rollbackTriggerVersionId"]
    assert set(parse_request(raw).spec_body()) == SPEC_FIELDS - {"rollbackTriggerVersionId"}


def test_flat_params_are_strings_and_summarise_the_matrix() -> None:
    raw = valid_raw()
    raw["trainingDataSliceMatrix"] = {f"intent-{i}": 2 for i in range(300)}
    request = parse_request(raw)
    params = request.flat_params()

    assert params
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
    assert params["computeConstraints.timeoutSeconds"] == str(raw["computeConstraints"]["timeoutSeconds"])
    assert params["modelId"] == raw["modelId"]
    assert params["locales"] == ",".join(raw["locales"])
    assert params["trainingDataSliceMatrix.intents"] == "300"
    assert params["trainingDataSliceMatrix.total"] == "600"
    assert not any("intent-" in key for key in params), "intent names are not params (they go in the artifact)"


# --- fuzzing ----------------------------------------------------------------------------------------------------
HOSTILE_TEXT = st.sampled_from(
    [
        "../../admin",
        "%2e%2e",
        "%2e%2e%2fadmin",
        "\x00",
        "a\x00b",
        "\ud800",
        "\u202e",
        "ｅｎ-ＵＳ",
        "en-US\n",
        "x" * 10_000,
        "64a1f0c2e4b0a1b2c3d4e5f6\n",
        "NaN",
        "1e309",
        "{}",
        "null",
        "__proto__",
        "$where",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | HOSTILE_TEXT
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12) | HOSTILE_TEXT, children, max_size=4)
    ),
    max_leaves=15,
)
FIELD_PATHS = [
    *(name for name in TOP_LEVEL_FIELDS),
    "computeConstraints/maxGpuMemory",
    "computeConstraints/maxCpuCores",
    "computeConstraints/timeoutSeconds",
    "trainingDataSliceMatrix/greeting",
    "trainingData/source",
    "heldOut/perIntent",
    "heldOut/threshold",
]


@st.composite
def mutated_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request with a few fields replaced by random values, removed, or with junk keys added."""
    raw = valid_raw()
    raw["trainingData"] = {"source": "demo"}
    raw["heldOut"] = {"source": "demo", "perIntent": 10, "threshold": 0.3}
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        path = draw(st.sampled_from(FIELD_PATHS))
        action = draw(st.sampled_from(["replace", "replace", "drop", "junk"]))
        *parents, last = path.split("/")
        node = raw
        for key in parents:
            if not isinstance(node.get(key), dict):
                break
            node = node[key]
        else:
            if action == "replace":
                node[last] = draw(JSON_LIKE)
            elif action == "drop":
                node.pop(last, None)
            else:
                node[draw(st.text(max_size=12) | HOSTILE_TEXT)] = draw(JSON_LIKE)
    return raw


def check_outcome(raw: Any) -> None:
    """Either a usable request or RequestInvalid with 'path: message' errors; nothing else."""
    attempts_before = len(NETWORK_ATTEMPTS)
    try:
        request = parse_request(raw)
    except RequestInvalid as invalid:
        assert invalid.errors and all(isinstance(e, str) for e in invalid.errors)
        known_roots = set(TOP_LEVEL_FIELDS)
        try:
            decoded = json.loads(raw) if isinstance(raw, str | bytes) else raw
        except (ValueError, RecursionError):
            decoded = None
        if isinstance(decoded, dict):
            known_roots |= {str(k) for k in decoded}  # unknown keys are reported under their own name
        for error in invalid.errors:
            error_path(error)
            quoted_key = error[:1] in ("'", '"') or ".'" in error.split(": ")[0]  # hostile keys: escaped, short
            assert (
                quoted_key
                or error.startswith("(request): ")
                or any(error.startswith(f"{root}: ") or error.startswith(f"{root}.") for root in known_roots)
            ), f"error does not start with a field path: {error[:200]!r}"
    else:
        assert isinstance(request, RetrainRequest)
        # Whatever got through is safe to put in a URL path and hashes to its own canonical JSON.
        for value in (request.projectId, request.flowId, *request.locales):
            assert seg(value) == value
        assert re.fullmatch(r"[0-9a-f]{64}", request.sha256)
        assert parse_request(request.canonical_json()) == request
        assert all(isinstance(v, str) for v in request.flat_params().values())
        assert set(request.spec_body()) <= SPEC_FIELDS
    assert len(NETWORK_ATTEMPTS) == attempts_before


FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(raw=JSON_LIKE)
def test_fuzz_random_structures(raw: Any) -> None:
    check_outcome(raw)


@FUZZ
@given(raw=mutated_requests())
def test_fuzz_mutated_requests(raw: dict[str, Any]) -> None:
    check_outcome(raw)
    check_outcome(json.dumps(raw))  # the same through the JSON-text path (NaN/Infinity included)


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200) | JSON_LIKE.map(json.dumps))
def test_fuzz_raw_text(text: str | bytes) -> None:
    check_outcome(text)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40) | HOSTILE_TEXT, field=st.sampled_from(["projectId", "flowId"]))
def test_fuzz_ids_only_24_lowercase_hex_gets_through(value: str, field: str) -> None:
    raw = valid_raw()
    raw[field] = value
    try:
        request = parse_request(raw)
    except RequestInvalid as invalid:
        assert [error_path(e) for e in invalid.errors] == [field]
    else:
        assert re.fullmatch(r"[0-9a-f]{24}", getattr(request, field))


# --- the user's own data and promotion ------------------------------------------------------------------
def test_the_held_out_set_must_be_named() -> None:
    raw = valid_raw()
    raw["heldOut"] = {"source": "uri"}
    (error,) = errors_of(raw)
    assert error.startswith("heldOut:") and "heldOut.uri" in error and "demo" in error


def test_data_uris_refuse_credentials_and_unknown_placeholders() -> None:
    raw = valid_raw()
    raw["heldOut"]["uri"] = "s3://AKIA:secret@bucket/held_out.csv"
    errors = errors_of(raw)
    assert any(e.startswith("heldOut.uri:") and "credentials" in e for e in errors), errors
    assert not any("secret" in e for e in errors)
    raw = valid_raw()
    raw["heldOut"]["uri"] = "/data/{flow}/held_out.csv"
    assert any("{locale}" in e for e in errors_of(raw))


@pytest.mark.parametrize(
    ("uri", "what"),
    [
        ("https://user@host.example/held_out.csv", "user-info"),
        ("s3://AKIA%3Asecret@bucket/held_out.csv", "user-info"),
        ("https://acct.blob.core.windows.net/c/held.csv?sv=2024-05-04&se=2030&sp=r&sig=c2lnbmF0dXJl", "'sig'"),
        ("https://bucket.s3.amazonaws.com/held.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026"
         "&X-Amz-Signature=abcdef&X-Amz-Security-Token=FQoG", "'X-Amz-Credential'"),
        ("https://storage.googleapis.com/b/held.csv?X-Goog-Signature=abc", "'X-Goog-Signature'"),
        ("https://host.example/held.csv?token=t0k3n", "'token'"),
        ("https://host.example/held.csv?KEY=k3y", "'KEY'"),
        ("https://host.example/held.csv?access_token=t0k3n", "'access_token'"),
        ("s3://bucket/held.csv?X-Amz-Security-Token=FQoG", "'X-Amz-Security-Token'"),
        ("s3://bucket/held.csv#sig=abc", "'sig'"),
    ],
)  # fmt: skip
def test_data_uris_carrying_credentials_are_refused_naming_the_field(uri: str, what: str) -> None:
    """Issue 26, item 2: user-info or a credential query parameter (presigned S3/GCS URLs, Azure SAS, tokens)."""
    for field in ("heldOut", "trainingData"):
        raw = valid_raw()
        raw[field] = {**raw[field], "source": "uri", "uri": uri}
        if field == "trainingData":
            raw["trainingDataSliceMatrix"] = {}
        errors = errors_of(raw)
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"{field}.uri: must not carry credentials ({what}"), errors
        for secret in ("secret", "c2lnbmF0dXJl", "abcdef", "FQoG", "t0k3n", "k3y", "AKIA"):
            assert secret not in errors[0]


def test_data_uris_with_harmless_query_parameters_are_accepted() -> None:
    raw = valid_raw()
    raw["heldOut"]["uri"] = "s3://bot-data/held_out_{locale}.csv?versionId=3HL4kqtJlcpXroDTDmJ"
    assert parse_request(raw).heldOut.uri.endswith("versionId=3HL4kqtJlcpXroDTDmJ")
    raw["heldOut"]["uri"] = "/srv/nlu data/held out {locale}.csv"
    assert parse_request(raw).data_uri("heldOut", "en-US") == "/srv/nlu data/held out en-US.csv"


def test_the_locale_placeholder_is_filled_per_locale() -> None:
    request = parse_request(valid_raw())
    assert request.data_uri("heldOut", "de-DE") == "s3://bot-data/held_out_de-DE.csv"
    assert request.data_uri("trainingData", "de-DE") is None  # source demo has no file


def test_training_source_flow_is_the_default_and_takes_no_matrix() -> None:
    raw = valid_raw()
    del raw["trainingData"]
    errors = errors_of(raw)
    assert any(e.startswith("trainingDataSliceMatrix:") and "source flow" in e for e in errors), errors
    raw["trainingDataSliceMatrix"] = {}
    assert parse_request(raw).trainingData.source == "flow"


def test_staging_needs_its_own_flow_or_an_explicit_in_place() -> None:
    raw = valid_raw()
    raw["promotion"] = {"mode": "staging"}
    assert any(e.startswith("promotion:") and "in_place" in e for e in errors_of(raw))
    raw["promotion"] = {"mode": "staging", "stagingFlowId": raw["flowId"]}
    assert any(e.startswith("promotion.stagingFlowId:") for e in errors_of(raw))
    raw["promotion"] = {"mode": "in_place"}
    request = parse_request(raw)
    assert request.staging_target(request.targets()[0]) is None


# --- intent names: no control, format or separator characters ---------------------------------------------
@pytest.mark.parametrize(
    "char",
    [
        "\u2028",  # LINE SEPARATOR (Zl)
        "\u2029",  # PARAGRAPH SEPARATOR (Zp)
        "\u200b",  # ZERO WIDTH SPACE (Cf)
        "\ufeff",  # BYTE ORDER MARK / ZWNBSP (Cf)
        "\u00ad",  # SOFT HYPHEN (Cf)
        "\u2060",  # WORD JOINER (Cf)
        "\u0600",  # ARABIC NUMBER SIGN (Cf)
        "\U000e0041",  # TAG LATIN CAPITAL LETTER A (Cf, astral)
        "\x85",  # NEXT LINE (Cc)
    ],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_intent_names_refuse_format_and_separator_characters(char: str) -> None:
    raw = valid_raw()
    raw["trainingDataSliceMatrix"] = {f"order{char}status": 3}
    (error,) = errors_of(raw)
    assert error_path(error) == "trainingDataSliceMatrix" and "intent name" in error and "control" in error


def test_intent_names_with_ordinary_unicode_are_accepted() -> None:
    raw = valid_raw()
    raw["trainingDataSliceMatrix"] = {"Bestellstatus prüfen": 3, "注文の状態": 3, "order status 🚚": 3, "a-b_c.d": 3}
    assert set(parse_request(raw).trainingDataSliceMatrix) == set(raw["trainingDataSliceMatrix"])


def test_many_bad_intent_names_give_a_short_error_with_the_count() -> None:
    raw = valid_raw()
    raw["trainingDataSliceMatrix"] = {f"intent-{i:04d}\u2028{'x' * 150}": 1 for i in range(2600)}
    raw["maxDatasetSize"] = 10_000
    errors = errors_of(raw)
    text = "\n".join(errors)
    assert len(text.encode()) < 4_000, len(text.encode())
    (error,) = [e for e in errors if "intent name" in e]
    assert error.startswith("trainingDataSliceMatrix: 2600 intent names are empty, too long or have control")
    assert error.count("'intent-") == 20 and "'intent-0000" in error and "'intent-0020" not in error
    assert error.endswith("… and 2580 more intent names with the same problem")


def test_a_few_bad_intent_names_are_all_listed() -> None:
    raw = valid_raw()
    raw["trainingDataSliceMatrix"] = {"a\u200bb": 1, "c/d": 1, "ok": 1}
    (error,) = errors_of(raw)
    assert "2 intent names" in error and "'a\\u200bb'" in error and "'c/d'" in error and "more" not in error


# --- platform limits depend on the dialect --------------------------------------------------------------------
def _spec_example(counts: dict[str, int]) -> dict[str, Any]:
    raw = valid_raw()
    raw["trainingDataSliceMatrix"] = counts
    raw["locales"] = ["en-US"]
    raw["promotion"] = {"mode": "in_place"}
    return raw


def test_platform_limits_do_not_refuse_the_training_jobs_spec_examples() -> None:
    # The specification's example payloads ask for 300 and 450 examples for one intent.
    request = parse_request(_spec_example({"order_status": 300, "refund_request": 450, "greeting": 120}))
    assert request.platform_problems("training-jobs") == []
    problems = request.platform_problems("rest-v2")
    assert len(problems) == 1 and problems[0].startswith("trainingDataSliceMatrix: 2 intents ask for more")
    assert "'order_status' (300)" in problems[0] and "'refund_request' (450)" in problems[0]
    assert f"at most {COGNIGY_MAX_SENTENCES_PER_INTENT}" in problems[0]


def test_platform_limits_rest_v2_boundaries() -> None:
    at_limit = parse_request(_spec_example({"greeting": COGNIGY_MAX_SENTENCES_PER_INTENT}))
    assert at_limit.platform_problems("rest-v2") == []
    over = parse_request(_spec_example({"greeting": COGNIGY_MAX_SENTENCES_PER_INTENT + 1}))
    (problem,) = over.platform_problems("rest-v2")
    assert problem.startswith("trainingDataSliceMatrix: 1 intent asks for more") and "'greeting' (201)" in problem

    raw = valid_raw()
    _many_intents(COGNIGY_MAX_INTENTS_PER_FLOW)(raw)
    assert parse_request(raw).platform_problems("rest-v2") == []
    _many_intents(COGNIGY_MAX_INTENTS_PER_FLOW + 1)(raw)
    request = parse_request(raw)
    assert request.platform_problems("training-jobs") == []
    (problem,) = request.platform_problems("rest-v2")
    assert problem == (
        f"trainingDataSliceMatrix: {COGNIGY_MAX_INTENTS_PER_FLOW + 1} intents; Cognigy allows at most "
        f"{COGNIGY_MAX_INTENTS_PER_FLOW} per flow"
    )


def test_platform_limits_list_at_most_twenty_intents_and_count_the_rest() -> None:
    raw = valid_raw()
    raw["trainingDataSliceMatrix"] = {f"intent-{i}": 201 for i in range(600)}
    raw["maxDatasetSize"] = 500_000
    raw["computeConstraints"]["timeoutSeconds"] = 7200
    (problem,) = parse_request(raw).platform_problems("rest-v2")
    assert problem.count("(201)") == 20 and problem.endswith("… and 580 more intents with the same problem")
    assert len(problem) < 1_500


def test_platform_limits_refuse_an_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="unknown API dialect"):
        parse_request(valid_raw()).platform_problems("soap")
