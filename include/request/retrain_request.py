"""The retraining request: everything a run asks for, validated before any network call.

Keeps the original specification's fields and rules and adds the real platform's limits. Field names are
the specification's camelCase, which is also what the Airflow trigger form shows.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from include.cognigy.model import Target
from include.data.data_uris import credential_problem

COGNIGY_MAX_SENTENCES_PER_INTENT = 200
COGNIGY_MAX_INTENTS_PER_FLOW = 2500
COGNIGY_MAX_TRAINING_SECONDS = 600
OBJECT_ID = r"^[0-9a-f]{24}$"
LOCALE_NAME = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
# Lone surrogates are refused: they are not text, and JSON dumping turns them into U+FFFD (hash collisions).
# No control characters in the wide sense: C0/C1 controls, format characters (zero-width space U+200B, BOM U+FEFF,
# bidi marks/overrides/isolates, word joiner, soft hyphen, ...) and the line/paragraph separators U+2028/U+2029.
# The regex names the common ones; `intent_name_ok` also checks every character's Unicode category.
INTENT_NAME = re.compile(
    r"^[^\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    r"/\\\ud800-\udfff]{1,200}$"
)
INTENT_NAME_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# At most this many offending intent names are listed in one error; the rest are counted.
MAX_LISTED_PROBLEMS = 20
CROSS_FIELD_MARK = "\x1e"


class RequestInvalid(ValueError):
    """Every problem with a request at once, each naming its field path and rule."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("retraining request is invalid:\n" + "\n".join(f"  - {e}" for e in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ComputeConstraints(_Strict):
    maxGpuMemory: PositiveInt = Field(description="GPU memory cap in MB (informational on Cognigy).")
    maxCpuCores: int = Field(ge=1, le=32, description="CPU cores, 1–32.")
    timeoutSeconds: int = Field(ge=300, le=7200, description="Deadline for the training wait, 300–7200 s.")


DATA_URI_MAX = 2048
LOCALE_PLACEHOLDER = "{locale}"


def _check_data_uri(uri: str | None) -> str | None:
    """A local path or an object-storage URI; credentials belong in an Airflow connection, never in the URI."""
    if uri is None:
        return None
    uri = uri.strip()
    if not uri:
        return None
    if len(uri) > DATA_URI_MAX or any(ord(c) < 32 for c in uri):
        raise ValueError("must be a path or URI of at most 2048 printable characters")
    if (found := credential_problem(uri)) is not None:
        raise ValueError(
            f"must not carry credentials ({found}); give the storage's credentials to an Airflow connection "
            "(a signed URL or token in a request ends up in the audit trail, logs and MLflow)"
        )
    if uri.replace(LOCALE_PLACEHOLDER, "").count("{") or uri.replace(LOCALE_PLACEHOLDER, "").count("}"):
        raise ValueError("the only placeholder allowed is {locale}")
    return uri


class HeldOut(_Strict):
    source: Literal["uri", "demo", "none"] = Field(
        "uri",
        description="uri: your own labelled test set (heldOut.uri); demo: the shipped demo test set (emulator only); "
        "none: no held-out set, the gates judge the platform's own metrics (training-jobs dialect only).",
    )
    uri: str | None = Field(
        None,
        description="CSV (text,intent[,slice columns…]) or JSONL ({text,intent,slices}); a path or a URI read "
        "through Airflow object storage (file://, s3://, gs://, …); {locale} is replaced per locale.",
    )
    perIntent: int = Field(10, ge=1, le=200, description="demo source: held-out utterances per intent.")
    threshold: float = Field(0.3, ge=0.0, le=1.0, description="Top score below this counts as 'no intent'.")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        return _check_data_uri(uri)

    @model_validator(mode="after")
    def _uri_for_source(self) -> HeldOut:
        if self.source == "uri" and not self.uri:
            raise ValueError(
                "source uri needs heldOut.uri: the path or URI of your own labelled test set "
                "(the shipped demo set is chosen only by name: source demo)"
            )
        return self


class TrainingData(_Strict):
    source: Literal["flow", "uri", "demo", "platform"] = Field(
        "flow",
        description="flow: retrain on the example sentences the flow holds (nothing is imported); uri: import "
        "trainingData.uri (mode=overwrite) first; demo: import the shipped demo data (emulator and make run only); "
        "platform: the platform's own data, sliced by trainingDataSliceMatrix (training-jobs dialect only).",
    )
    uri: str | None = Field(None, description="source uri: training file, same formats as heldOut.uri.")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        return _check_data_uri(uri)

    @model_validator(mode="after")
    def _uri_for_source(self) -> TrainingData:
        if self.source == "uri" and not self.uri:
            raise ValueError("source uri needs trainingData.uri: the path or URI of the training file")
        if self.source != "uri" and self.uri:
            raise ValueError(f"trainingData.uri is only read with source uri (source is {self.source})")
        return self


class Promotion(_Strict):
    mode: Literal["staging", "in_place"] = Field(
        "staging",
        description="staging: train and judge the challenger in a flow no endpoint serves, then bring production "
        "to the staged intents only when every gate passed; in_place: train production itself (customers meet "
        "the challenger from the end of its training until the gates reject it and a restoring training ends).",
    )
    stagingFlowId: str | None = Field(None, pattern=OBJECT_ID, description="staging flow (24 hex).")
    stagingProjectId: str | None = Field(
        None, pattern=OBJECT_ID, description="project of the staging flow, when not the production project."
    )

    @model_validator(mode="after")
    def _staging_flow(self) -> Promotion:
        if self.mode == "staging" and not self.stagingFlowId:
            raise ValueError(
                "staging promotion needs promotion.stagingFlowId (a flow no endpoint serves); without one, choose "
                "in_place explicitly: customers then meet every challenger before the gates judge it"
            )
        return self


class RetrainRequest(_Strict):
    # The specification's fields.
    modelId: UUID = Field(description="Identity of the model in the registry (and training-jobs dialect).")
    trainingDataSliceMatrix: dict[str, PositiveInt] = Field(
        default_factory=dict,
        description="Intent name -> number of example sentences to train on (demo source; with source uri an "
        "optional selection from the file; empty = everything).",
    )
    convergenceThreshold: float = Field(ge=0.001, le=0.99)
    computeConstraints: ComputeConstraints
    maxDatasetSize: int = Field(ge=100, le=500_000)
    rollbackTriggerVersionId: UUID | None = None
    # The real platform's target.
    projectId: str = Field(pattern=OBJECT_ID, description="Cognigy project id (24 hex).")
    flowId: str = Field(pattern=OBJECT_ID, description="Cognigy flow id (24 hex).")
    locales: list[str] = Field(min_length=1, max_length=20, description="Locale names, e.g. en-US.")
    mode: Literal["full", "quick"] = "full"
    trainingData: TrainingData = TrainingData()
    heldOut: HeldOut
    promotion: Promotion
    retrainUnchanged: bool = Field(
        False, description="Retrain even when the flow's intents did not change since its last successful training."
    )

    @field_validator("trainingDataSliceMatrix")
    @classmethod
    def _matrix(cls, matrix: dict[str, int]) -> dict[str, int]:
        # The platform's own limits (Cognigy: 200 sentences per intent, 2,500 intents) depend on the dialect:
        # see `platform_problems`.
        bad = [name for name in matrix if not intent_name_ok(name)]
        if bad:
            many = len(bad) != 1
            raise ValueError(
                _capped(
                    f"{len(bad)} intent name{'s' if many else ''} {'are' if many else 'is'} empty, too long or "
                    f"{'have' if many else 'has'} control characters (also format characters such as zero-width "
                    "space or BOM, and line/paragraph separators), surrounding spaces or slashes",
                    [repr(name[:40]) for name in bad],
                    "intent name",
                )
            )
        return matrix

    @field_validator("locales")
    @classmethod
    def _locales(cls, locales: list[str]) -> list[str]:
        bad = [loc for loc in locales if not re.fullmatch(LOCALE_NAME, loc)]  # `$` alone lets 'en-US\n' in
        if bad:
            raise ValueError(f"not locale names like en-US: {bad}")
        if len(set(locales)) != len(locales):
            raise ValueError("locales repeat")
        return locales

    @model_validator(mode="after")
    def _cross_field_rules(self) -> RetrainRequest:
        problems = []
        if self.trainingData.source in ("demo", "platform") and not self.trainingDataSliceMatrix:
            problems.append(f"trainingDataSliceMatrix: the {self.trainingData.source} source needs at least one intent")
        if self.trainingData.source == "flow" and self.trainingDataSliceMatrix:
            problems.append(
                "trainingDataSliceMatrix: source flow retrains what the flow holds; a matrix needs source uri or demo"
            )
        staging = self.promotion
        if (
            staging.mode == "staging"
            and staging.stagingFlowId == self.flowId
            and (staging.stagingProjectId in (None, self.projectId))
        ):
            problems.append("promotion.stagingFlowId: is the production flow; staging needs a flow of its own")
        needed = self.maxDatasetSize / 1000 * 10
        if self.computeConstraints.timeoutSeconds < needed:
            problems.append(
                f"computeConstraints.timeoutSeconds: {self.computeConstraints.timeoutSeconds}s is below "
                f"maxDatasetSize / 1000 × 10 = {needed:.0f}s: training would likely time out"
            )
        total = sum(self.trainingDataSliceMatrix.values())
        if total > self.maxDatasetSize:
            problems.append(
                f"trainingDataSliceMatrix: {total} sentences in all exceed maxDatasetSize {self.maxDatasetSize}"
            )
        if problems:
            # Each problem already starts with its field path; the marker lets describe_errors split them.
            raise ValueError(CROSS_FIELD_MARK + CROSS_FIELD_MARK.join(problems))
        return self

    # --- derived values ------------------------------------------------------------------------------
    def canonical_json(self) -> str:
        """Sorted keys, no whitespace: the request's identity."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def platform_problems(self, dialect: str) -> list[str]:
        """The target platform's limits on the matrix, as `field.path: problem` lines (empty: within them).

        rest-v2 (Cognigy): at most 200 example sentences per intent and 2,500 intents per flow. training-jobs:
        the specification sets no per-intent or per-model limit beyond `maxDatasetSize` (checked by the model
        itself), so its example payloads (300 or 450 examples for one intent) are valid there.
        """
        if dialect == "training-jobs":
            return []
        if dialect != "rest-v2":
            raise ValueError(f"unknown API dialect {dialect!r} (rest-v2 or training-jobs)")
        matrix = self.trainingDataSliceMatrix
        problems = []
        if self.trainingData.source == "platform":
            problems.append("trainingData.source: platform is the training-jobs dialect's; rest-v2 trains a flow")
        if self.heldOut.source == "none":
            problems.append(
                "heldOut.source: none is the training-jobs dialect's (platform-reported metrics); rest-v2 needs your "
                "held-out set (Cognigy reports no precision, recall or bias)"
            )
        if len(matrix) > COGNIGY_MAX_INTENTS_PER_FLOW:
            problems.append(
                f"trainingDataSliceMatrix: {len(matrix)} intents; Cognigy allows at most "
                f"{COGNIGY_MAX_INTENTS_PER_FLOW} per flow"
            )
        over = [name for name, count in matrix.items() if count > COGNIGY_MAX_SENTENCES_PER_INTENT]
        if over:
            many = len(over) != 1
            problems.append(
                "trainingDataSliceMatrix: "
                + _capped(
                    f"{len(over)} intent{'s' if many else ''} {'ask' if many else 'asks'} for more sentences than "
                    f"Cognigy allows (at most {COGNIGY_MAX_SENTENCES_PER_INTENT} example sentences per intent)",
                    [f"{name[:40]!r} ({matrix[name]})" for name in over],
                    "intent",
                )
            )
        return problems

    def training_deadline_seconds(self, dialect: str) -> tuple[int, str | None]:
        """The wait's deadline, capped by Cognigy's 10-minute training limit on the real dialect."""
        wanted = self.computeConstraints.timeoutSeconds
        if dialect == "rest-v2" and wanted > COGNIGY_MAX_TRAINING_SECONDS:
            return COGNIGY_MAX_TRAINING_SECONDS, (
                f"computeConstraints.timeoutSeconds {wanted}s clamped to {COGNIGY_MAX_TRAINING_SECONDS}s: "
                "a Cognigy intent training runs at most 10 minutes"
            )
        return wanted, None

    def targets(self) -> list[Target]:
        return [
            Target(project_id=self.projectId, flow_id=self.flowId, locale=loc, model_id=str(self.modelId))
            for loc in self.locales
        ]

    def staging_target(self, target: Target) -> Target | None:
        """The flow that trains and judges the challenger for `target` (None: in place)."""
        if self.promotion.mode != "staging" or not self.promotion.stagingFlowId:
            return None
        project = self.promotion.stagingProjectId or target.project_id
        return Target(project_id=project, flow_id=self.promotion.stagingFlowId, locale=target.locale,
                      model_id=target.model_id)  # fmt: skip

    def data_uri(self, kind: Literal["heldOut", "trainingData"], locale: str) -> str | None:
        """The held-out or training file of one locale ({locale} filled in), or None for the other sources."""
        uri = self.heldOut.uri if kind == "heldOut" else self.trainingData.uri
        source = self.heldOut.source if kind == "heldOut" else self.trainingData.source
        return uri.replace(LOCALE_PLACEHOLDER, locale) if uri and source == "uri" else None

    def spec_body(self) -> dict[str, Any]:
        """The training-jobs dialect's POST body: the specification's fields only."""
        body = self.model_dump(
            mode="json",
            include={
                "modelId",
                "trainingDataSliceMatrix",
                "convergenceThreshold",
                "computeConstraints",
                "maxDatasetSize",
                "rollbackTriggerVersionId",
            },
        )
        return {k: v for k, v in body.items() if v is not None}

    def flat_params(self) -> dict[str, str]:
        """Flattened for MLflow params (values capped there; the full JSON goes as an artifact)."""
        flat: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), sub)
            elif isinstance(value, list):
                flat[prefix] = ",".join(map(str, value))
            else:
                flat[prefix] = str(value)

        walk("", self.model_dump(mode="json", exclude={"trainingDataSliceMatrix"}))
        matrix = self.trainingDataSliceMatrix
        flat["trainingDataSliceMatrix.intents"] = str(len(matrix))
        flat["trainingDataSliceMatrix.total"] = str(sum(matrix.values()))
        return flat


def intent_name_ok(name: str) -> bool:
    """1–200 characters, no slashes, no surrounding spaces, no control/format/separator/surrogate characters."""
    return (
        bool(INTENT_NAME.match(name))
        and name == name.strip()
        and not any(unicodedata.category(c) in INTENT_NAME_BAD_CATEGORIES for c in name)
    )


def _capped(summary: str, items: list[str], noun: str) -> str:
    """`<summary>: a, b, … and M more <noun>s with the same problem`: at most MAX_LISTED_PROBLEMS items listed."""
    shown = items[:MAX_LISTED_PROBLEMS]
    more = len(items) - len(shown)
    text = f"{summary}: {', '.join(shown)}"
    if more:
        text += f" … and {more} more {noun}s with the same problem"
    return text


def describe_errors(exc: ValidationError) -> list[str]:
    """`field.path: rule` for each pydantic error, the input value left out (it may be hostile or secret)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith(CROSS_FIELD_MARK):  # cross-field rules name their own field paths
            out.extend(part for part in msg.split(CROSS_FIELD_MARK) if part)
            continue
        path = ".".join(_path_part(p) for p in err["loc"]) or "(request)"
        out.append(f"{path}: {msg}")
    return out


def _path_part(part: str | int) -> str:
    """A path element as typed by the user may be hostile (newlines, 10 kB): show it escaped and short."""
    text = str(part)
    if text.isidentifier() or text.isdigit():
        return text
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def parse_request(raw: Any) -> RetrainRequest:
    """Validate anything (a params dict, JSON text) into a request, or raise RequestInvalid with every error."""
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestInvalid([f"(request): not valid JSON ({exc.msg} at position {exc.pos})"]) from None
        except (ValueError, RecursionError) as exc:  # undecodable bytes, over-long integer literal, nesting too deep
            raise RequestInvalid([f"(request): not valid JSON ({type(exc).__name__}: {exc})"]) from None
    if not isinstance(raw, dict):
        raise RequestInvalid([f"(request): expected a JSON object, got {type(raw).__name__}"])
    try:
        return RetrainRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestInvalid(describe_errors(exc)) from None
