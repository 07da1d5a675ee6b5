"""Push one Airflow DAG run to MLflow as exactly one MLflow run, plus its Cognigy model version.

:func:`sync` is idempotent: it looks the run up by the tag ``airflow_run_key`` (``<dag_id>/<run_id>``,
no try number) before creating one, skips params and metrics already logged with the same value,
and looks a model version up by its tag ``cognigy_version_key`` before creating one. Running it twice,
from an Airflow retry or from the :mod:`include.records.outbox`, changes nothing the second time.

The client is set up so that Airflow's retries govern: no HTTP retries inside MLflow's client, a short
timeout (see :func:`client_env`). MLflow itself is imported lazily, so importing this module from a DAG
file costs nothing at parse time.

MLflow reads credentials from environment variables; :class:`MlflowAuth` sets them only for the duration
of one call and restores the previous environment. ``os.environ`` is process-wide, so do not run syncs
with different credentials in threads of one process (Airflow runs each task in its own process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from include.records.redaction import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

RUN_KEY_TAG = "airflow_run_key"
VERSION_KEY_TAG = "cognigy_version_key"
DECIDED_AT_TAG = "decided_at"
PREVIOUS_CHAMPION_TAG = "previous_champion_version"
PARAM_CONFLICTS_TAG = "mlflow_sync.param_conflicts"
# The audit chain's anchor outside the log: seq and hash of the run's `mlflow_synced` record (include.records.audit).
AUDIT_HEAD_SEQ_TAG = "audit_head_seq"
AUDIT_HEAD_HASH_TAG = "audit_head_hash"
AUDIT_KEY_ID_TAG = "audit_key_id"
CHAMPION = "champion"
CHALLENGER = "challenger"

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_ITEMS_PER_BATCH = 1000
MAX_BATCH_BYTES = 900_000  # the server's limit is 1 MB; keep a margin for JSON overhead

DEFAULT_MAX_RETRIES = 0
DEFAULT_TIMEOUT_SECONDS = 15

_AUTH_ENV_VARS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
)


# --------------------------------------------------------------------------------------------- payload


@dataclass
class RegistryAction:
    model_name: str  # e.g. "cognigy-customer-service-en-US"
    source: str  # "cognigy://<project>/<flow>/<locale>/<task or version id>"
    version_key: str  # unique per training (e.g. the Cognigy task id); stored as tag cognigy_version_key
    tags: dict[str, str] = field(default_factory=dict)
    promote: bool = False  # True: champion moves to this version; False: champion stays (or moves back)
    # When the training was decided (epoch seconds). An alias never moves from a version decided later to
    # one decided earlier, so an outbox replayed late cannot take `champion` away from a newer model.
    decided_at: float | None = None

    def __post_init__(self) -> None:
        if not self.model_name or not self.version_key:
            raise ValueError("model_name and version_key are required")
        if not self.source.startswith("cognigy://"):
            raise ValueError("source must be a cognigy://<project>/<flow>/<locale>/<id> URI")
        self.tags = {str(k): str(v) for k, v in self.tags.items()}


@dataclass
class SyncPayload:
    """Everything one DAG run reports to MLflow. Plain data: it is stored as JSON in the outbox."""

    run_key: str  # "<dag_id>/<run_id>" without the try number -> tag airflow_run_key
    experiment: str
    run_name: str
    params: dict[str, str] = field(default_factory=dict)  # flattened request (see flatten_params)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # artifact name -> local file path
    status: Literal["FINISHED", "FAILED"] = "FINISHED"
    registry: RegistryAction | None = None
    # Data sets that judged or trained this model: {"name", "digest", "source", "context", "profile"} each,
    # logged as MLflow dataset inputs (the run page shows which test set judged it).
    datasets: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if "/" not in self.run_key or self.run_key.startswith("/") or self.run_key.endswith("/"):
            raise ValueError("run_key must be '<dag_id>/<run_id>'")
        if not self.experiment:
            raise ValueError("experiment is required")
        if self.status not in ("FINISHED", "FAILED"):
            raise ValueError("status must be FINISHED or FAILED")
        if isinstance(self.registry, Mapping):
            self.registry = RegistryAction(**self.registry)
        self.params = {str(k): str(v) for k, v in self.params.items()}
        self.metrics = {str(k): float(v) for k, v in self.metrics.items()}
        self.tags = {str(k): str(v) for k, v in self.tags.items()}
        self.artifacts = {str(k): str(v) for k, v in self.artifacts.items()}
        for kind, items, limit in (
            ("param", self.params, MAX_PARAM_VALUE_LENGTH),
            ("tag", self.tags, MAX_TAG_VALUE_LENGTH),
        ):
            for key, value in items.items():
                if not key or len(key) > MAX_KEY_LENGTH:
                    raise ValueError(f"{kind} key must be 1..{MAX_KEY_LENGTH} characters: {key[:60]!r}")
                if len(value) > limit:
                    raise ValueError(
                        f"{kind} {key!r} is {len(value)} characters (limit {limit}); put it in an artifact"
                    )
        for key in self.metrics:
            if not key or len(key) > MAX_KEY_LENGTH:
                raise ValueError(f"metric key must be 1..{MAX_KEY_LENGTH} characters: {key[:60]!r}")
        for name in self.artifacts:
            _artifact_location(name)  # validates

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> SyncPayload:
        return cls(**json.loads(s))


@dataclass
class SyncResult:
    run_id: str
    experiment_id: str
    run_url: str
    model_version: str | None
    champion_version: str | None
    created_run: bool
    previous_champion_version: str | None = None


def flatten_params(
    obj: Mapping[str, Any], prefix: str = "", *, long_value_note: str = "see artifact request.json"
) -> dict[str, str]:
    """Flatten a nested request into MLflow params: ``{"gate": {"min_f1": 0.8}}`` -> ``{"gate.min_f1": "0.8"}``.

    Lists are JSON-encoded, ``None`` becomes ``"null"`` and booleans ``"true"``/``"false"``. Values longer
    than MLflow allows are replaced by a note naming the artifact that holds the whole request.
    """
    out: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name, long_value_note=long_value_note))
            continue
        if isinstance(value, bool) or value is None:
            text = json.dumps(value)
        elif isinstance(value, str):
            text = value
        elif isinstance(value, int | float):
            text = str(value)
        else:
            text = json.dumps(value, default=str, ensure_ascii=False)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = f"<{len(text)} characters, {long_value_note}>"
        out[name] = text
    return out


# ----------------------------------------------------------------------------------- client and auth


@dataclass(frozen=True)
class MlflowAuth:
    """Credentials and TLS options for the tracking server. Secrets never appear in ``repr``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    insecure_tls: bool = False
    ca_bundle: str | None = None  # path to a CA bundle (MLFLOW_TRACKING_SERVER_CERT_PATH)

    def __post_init__(self) -> None:
        if bool(self.username) != bool(self.password):
            raise ValueError("basic auth needs both username and password")
        if self.token and self.username:
            raise ValueError("use either basic auth or a bearer token, not both")
        if self.insecure_tls and self.ca_bundle:
            raise ValueError("insecure_tls and ca_bundle exclude each other")

    def env(self) -> dict[str, str | None]:
        """MLflow's environment variables for this auth; ``None`` means "unset while it applies"."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.username or None,
            "MLFLOW_TRACKING_PASSWORD": self.password or None,
            "MLFLOW_TRACKING_TOKEN": self.token or None,
            "MLFLOW_TRACKING_INSECURE_TLS": "true" if self.insecure_tls else None,
            "MLFLOW_TRACKING_SERVER_CERT_PATH": self.ca_bundle or None,
        }

    def secret_values(self) -> list[str]:
        return [s for s in (self.password, self.token) if s]


def client_env(
    max_retries: int = DEFAULT_MAX_RETRIES, timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, str]:
    """Environment that makes the MLflow client fail fast and leaves retrying to Airflow."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_seconds),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def configure_client(
    max_retries: int = DEFAULT_MAX_RETRIES, timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, str]:
    """Apply :func:`client_env` to this process for good (e.g. at the start of a task) and return it.

    :func:`sync` applies the same settings itself for the duration of each call.
    """
    settings = client_env(max_retries, timeout_seconds)
    os.environ.update(settings)
    _reset_telemetry()
    return settings


@contextlib.contextmanager
def scoped_env(updates: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, unset) environment variables and restore the previous values afterwards."""
    saved = {key: os.environ.get(key) for key in updates}
    try:
        for key, value in updates.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def mlflow_session(tracking_uri: str, auth: MlflowAuth | None = None) -> Iterator[MlflowClient]:
    """An ``MlflowClient`` with fail-fast settings and ``auth`` applied; the environment is restored after.

    Without ``auth`` the MLFLOW_TRACKING_* variables already in the environment are used as they are.
    """
    env: dict[str, str | None] = dict(client_env())
    if auth is not None:
        env.update(auth.env())
    with scoped_env(env):
        _reset_telemetry()
        from mlflow import MlflowClient

        yield MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _reset_telemetry() -> None:
    """mlflow starts its telemetry client at import time; re-read MLFLOW_DISABLE_TELEMETRY if it is loaded."""
    if "mlflow.telemetry.client" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["mlflow.telemetry.client"].set_telemetry_client()


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


# ------------------------------------------------------------------------------------------------ sync


def sync(payload: SyncPayload, tracking_uri: str, *, auth: MlflowAuth | None = None) -> SyncResult:
    """Create or update the MLflow run of ``payload.run_key`` and its model version; safe to repeat.

    Params and tags are redacted first (secret-looking keys, and the auth's own secrets anywhere).
    Raises ``MlflowException`` (quickly) when the server cannot be reached: put the payload in the outbox.
    """
    secrets = auth.secret_values() if auth else []
    params: dict[str, str] = redact(payload.params, secrets)
    tags: dict[str, str] = {**redact(payload.tags, secrets), RUN_KEY_TAG: payload.run_key}
    artifacts = {name: Path(path) for name, path in payload.artifacts.items()}
    missing = [name for name, path in artifacts.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"artifact file(s) missing for {sorted(missing)}")

    with mlflow_session(tracking_uri, auth) as client:
        experiment_id = _experiment_id(client, payload.experiment)
        run, created = _find_or_create_run(client, experiment_id, payload, tags)
        run_id = run.info.run_id
        _log_data(client, run, params, payload.metrics, tags)
        _log_datasets(client, run, payload.datasets)
        for name, path in artifacts.items():
            _log_artifact(client, run_id, name, path)

        version = champion = previous = None
        if payload.registry is not None:
            version, champion, previous = _register(client, run, payload.registry, secrets)
        client.set_terminated(run_id, payload.status)

    log.info("MLflow run %s for %s (%s)", run_id, payload.run_key, "created" if created else "updated")
    return SyncResult(
        run_id=run_id,
        experiment_id=experiment_id,
        run_url=run_url(tracking_uri, experiment_id, run_id),
        model_version=version,
        champion_version=champion,
        created_run=created,
        previous_champion_version=previous,
    )


def rollback_champion(
    model_name: str, to_version: str | int, tracking_uri: str, *, auth: MlflowAuth | None = None
) -> str | None:
    """Move alias ``champion`` of ``model_name`` back to ``to_version``; return the version it left.

    The version that loses the alias gets the tag ``champion_rolled_back_to``.
    """
    with mlflow_session(tracking_uri, auth) as client:
        return rollback_champion_with(client, model_name, to_version)


def rollback_champion_with(client: MlflowClient, model_name: str, to_version: str | int) -> str | None:
    """:func:`rollback_champion` with a client you already have."""
    to_version = str(to_version)
    client.get_model_version(model_name, to_version)  # fails clearly if it does not exist
    current = _aliases(client, model_name).get(CHAMPION)
    if current != to_version:
        client.set_registered_model_alias(model_name, CHAMPION, to_version)
        if current is not None:
            client.set_model_version_tag(model_name, current, "champion_rolled_back_to", to_version)
    log.info("champion of %s moved from %s to %s", model_name, current, to_version)
    return current


# -------------------------------------------------------------------------------------------- helpers


def _error_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


def _quote(value: str) -> str:
    """Quote a value for an MLflow search filter."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search for a value containing both quote characters: {value!r}")


def _experiment_id(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as exc:
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)  # another process created it first
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _find_or_create_run(
    client: MlflowClient, experiment_id: str, payload: SyncPayload, tags: dict[str, str]
) -> tuple[Run, bool]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{RUN_KEY_TAG} = {_quote(payload.run_key)}",
        max_results=10,
        order_by=["attributes.start_time ASC"],
    )
    if runs:
        if len(runs) > 1:
            log.warning("%d MLflow runs carry %s; using the oldest", len(runs), payload.run_key)
        return runs[0], False
    run = client.create_run(experiment_id, start_time=int(time.time() * 1000), tags=tags, run_name=payload.run_name)
    return run, True


def _log_data(
    client: MlflowClient, run: Run, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    have_params, have_metrics, have_tags = run.data.params, run.data.metrics, run.data.tags
    conflicts = sorted(k for k, v in params.items() if k in have_params and have_params[k] != v)
    if conflicts:
        # Params are immutable in MLflow; keep the first values and say which ones differed.
        log.warning("params already logged with other values, kept as they were: %s", conflicts)
        tags = {**tags, PARAM_CONFLICTS_TAG: ",".join(conflicts)[:MAX_TAG_VALUE_LENGTH]}
    new_params = [Param(k, v) for k, v in params.items() if k not in have_params]
    now = int(time.time() * 1000)
    new_metrics = [
        Metric(k, v, now, 0) for k, v in metrics.items() if k not in have_metrics or not _same(have_metrics[k], v)
    ]
    new_tags = [RunTag(k, v) for k, v in tags.items() if have_tags.get(k) != v]
    for batch_params, batch_metrics, batch_tags in _batches(new_params, new_metrics, new_tags):
        client.log_batch(run.info.run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)


def _log_datasets(client: MlflowClient, run: Run, datasets: list[dict[str, Any]]) -> None:
    """Log each data set once (a retry finds it among the run's inputs by name and digest)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    have = {(d.dataset.name, d.dataset.digest) for d in (run.inputs.dataset_inputs if run.inputs else [])}
    new = [
        DatasetInput(
            Dataset(
                name=d["name"][:500],
                digest=d["digest"][:36],
                source_type="local" if "://" not in d["source"] or d["source"].startswith("file://") else "uri",
                source=json.dumps({"uri": d["source"]}),
                profile=json.dumps(d.get("profile") or {}),
            ),
            tags=[InputTag("mlflow.data.context", d.get("context") or "evaluation")],
        )
        for d in datasets
        if (d["name"][:500], d["digest"][:36]) not in have
    ]
    if new:
        client.log_inputs(run.info.run_id, datasets=new)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _batches(params: list, metrics: list, tags: list) -> Iterator[tuple[list, list, list]]:
    """Split into log_batch calls within MLflow's per-request limits (counts and bytes)."""
    items: list[tuple[int, Any, int]] = []
    for kind, entries in enumerate((params, metrics, tags)):
        for entry in entries:
            value = getattr(entry, "value", "")
            items.append((kind, entry, len(entry.key.encode()) + len(str(value).encode()) + 64))
    limits = (MAX_PARAMS_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_TAGS_PER_BATCH)
    batch: tuple[list, list, list] = ([], [], [])
    size = 0
    for kind, entry, cost in items:
        full = (
            len(batch[kind]) >= limits[kind]
            or sum(map(len, batch)) >= MAX_ITEMS_PER_BATCH
            or size + cost > MAX_BATCH_BYTES
        )
        if full and any(batch):
            yield batch
            batch, size = ([], [], []), 0
        batch[kind].append(entry)
        size += cost
    if any(batch):
        yield batch


def _artifact_location(name: str) -> tuple[str | None, str]:
    """Split an artifact name like ``reports/gate.json`` into (artifact_path, file name)."""
    posix = PurePosixPath(name)
    if not name or posix.is_absolute() or ".." in posix.parts or name.endswith("/"):
        raise ValueError(f"bad artifact name {name!r}")
    parent = str(posix.parent)
    return (None if parent == "." else parent), posix.name


def _log_artifact(client: MlflowClient, run_id: str, name: str, path: Path) -> None:
    artifact_path, file_name = _artifact_location(name)
    if path.name == file_name:
        client.log_artifact(run_id, str(path), artifact_path)
        return
    with tempfile.TemporaryDirectory(prefix="mlflow-artifact-") as tmp:
        renamed = Path(tmp) / file_name
        shutil.copyfile(path, renamed)
        client.log_artifact(run_id, str(renamed), artifact_path)


def _aliases(client: MlflowClient, model_name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(model_name).aliases.items()}


def _may_take(client: MlflowClient, name: str, holder: str | None, version: str, decided_at: float | None) -> bool:
    """May ``version`` (decided at ``decided_at``) take an alias now held by ``holder``? Not from a newer one."""
    if holder is None or holder == version or decided_at is None:
        return True
    held_since = client.get_model_version(name, holder).tags.get(DECIDED_AT_TAG)
    try:
        return held_since is None or float(held_since) <= float(decided_at)
    except ValueError:
        return True


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as exc2:
            if _error_code(exc2) != "RESOURCE_ALREADY_EXISTS":
                raise


def _register(
    client: MlflowClient, run: Run, action: RegistryAction, secrets: list[str]
) -> tuple[str, str | None, str | None]:
    """Find or create the model version, set aliases; return (version, champion, previous champion)."""
    name, run_id = action.model_name, run.info.run_id
    _ensure_registered_model(client, name)
    version_tags = {
        **redact(action.tags, secrets),
        VERSION_KEY_TAG: action.version_key,
        RUN_KEY_TAG: run.data.tags.get(RUN_KEY_TAG, ""),
    }
    if action.decided_at is not None:
        version_tags[DECIDED_AT_TAG] = repr(float(action.decided_at))
    found = client.search_model_versions(f"name={_quote(name)} and tags.{VERSION_KEY_TAG}={_quote(action.version_key)}")
    if found:
        model_version = min(found, key=lambda mv: int(mv.version))
        version = str(model_version.version)
        for key, value in version_tags.items():
            if model_version.tags.get(key) != value:
                client.set_model_version_tag(name, version, key, value)
    else:
        version = str(client.create_model_version(name, action.source, run_id=run_id, tags=version_tags).version)

    aliases = _aliases(client, name)
    current = aliases.get(CHAMPION)
    if _may_take(client, name, aliases.get(CHALLENGER), version, action.decided_at):
        client.set_registered_model_alias(name, CHALLENGER, version)
    previous = run.data.tags.get(PREVIOUS_CHAMPION_TAG)
    champion = current
    if action.promote:
        if current != version and _may_take(client, name, current, version, action.decided_at):
            previous = current
            client.set_registered_model_alias(name, CHAMPION, version)
            champion = version
        elif current != version:
            log.warning("champion of %s stays on v%s: it was decided after v%s", name, current, version)
        else:
            champion = version
    elif current == version:
        # An earlier sync of this run promoted it and the outcome changed: hand the alias back.
        if previous:
            rollback_champion_with(client, name, previous)
        else:
            client.delete_registered_model_alias(name, CHAMPION)
        champion = previous
    elif previous is None:
        previous = current

    run_tags = {"model_name": name, "model_version": version, "champion_version": champion or ""}
    if previous:
        run_tags[PREVIOUS_CHAMPION_TAG] = previous
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, previous)
    for key, value in run_tags.items():
        if run.data.tags.get(key) != value:
            client.set_tag(run_id, key, value)
    return version, champion, previous


def anchor_audit_head(
    tracking_uri: str, run_id: str, record: Mapping[str, Any], *, auth: MlflowAuth | None = None
) -> None:
    """Tag the MLflow run with an audit record's seq and hash (and key id): an anchor of the audit chain kept
    outside the log, which `python -m include.records.audit verify --mlflow-uri` compares."""
    tags = {
        AUDIT_HEAD_SEQ_TAG: str(record["seq"]),
        AUDIT_HEAD_HASH_TAG: str(record["hash"]),
        AUDIT_KEY_ID_TAG: str(record.get("key_id") or "unkeyed"),
    }
    with mlflow_session(tracking_uri, auth) as client:
        for key, value in tags.items():
            client.set_tag(run_id, key, value)


def audit_anchors(tracking_uri: str, experiment: str, *, auth: MlflowAuth | None = None) -> list[dict[str, Any]]:
    """Every audit anchor on the experiment's runs: ``{"seq", "hash", "source"}`` for `verify`."""
    anchors: list[dict[str, Any]] = []
    with mlflow_session(tracking_uri, auth) as client:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return anchors
        token = None
        while True:
            page = client.search_runs(
                [found.experiment_id], f"tags.{AUDIT_HEAD_HASH_TAG} LIKE '%'", max_results=1000, page_token=token
            )
            for run in page:
                tags = run.data.tags
                with contextlib.suppress(KeyError, ValueError):
                    anchors.append({"seq": int(tags[AUDIT_HEAD_SEQ_TAG]), "hash": tags[AUDIT_HEAD_HASH_TAG],
                                    "source": f"MLflow run {run.info.run_id}"})  # fmt: skip
            token = page.token
            if not token:
                return anchors


NIGHT_TAG = "cognigy_night"  # the fleet night's Airflow run key on its summary run


def log_night_summary(
    tracking_uri: str,
    experiment: str,
    night_key: str,
    summary_md: str,
    outcomes: Mapping[str, int],
    *,
    auth: MlflowAuth | None = None,
) -> str:
    """Keep a fleet night's morning summary in MLflow: one run per night (found again by its tag), the Markdown as
    the artifact ``summary.md`` and a metric per outcome (``targets_<outcome>``). Returns the run id."""
    with mlflow_session(tracking_uri, auth) as client:
        experiment_id = _experiment_id(client, experiment)
        runs = client.search_runs([experiment_id], filter_string=f"tags.{NIGHT_TAG} = {_quote(night_key)}",
                                  max_results=1)  # fmt: skip
        run = (
            runs[0]
            if runs
            else client.create_run(
                experiment_id, tags={NIGHT_TAG: night_key, "kind": "night_summary"}, run_name=f"night {night_key}"[:250]
            )
        )
        run_id = run.info.run_id
        client.log_text(run_id, summary_md, "summary.md")
        for outcome, count in outcomes.items():
            client.log_metric(run_id, f"targets_{outcome}"[:250], float(count))
        if run.info.status != "FINISHED":
            client.set_terminated(run_id, "FINISHED")
        return run_id


def audit_fields(payload: SyncPayload, result: SyncResult) -> dict[str, Any]:
    """What an audit record says about a finished sync (the task and the resync DAG write the same)."""
    return {
        "mlflow_run_id": result.run_id,
        "mlflow_run_url": result.run_url,
        "mlflow_run_created": result.created_run,
        "registered_model": payload.registry.model_name if payload.registry else None,
        "model_version": result.model_version,
        "champion_version": result.champion_version,
        "previous_champion_version": result.previous_champion_version,
    }
