"""The fixed tenant the emulator starts with: one project, two locales, a weak trained model per locale in
two flows -- production ("Customer Service", served by the "Customer Service Webchat" endpoint) and staging
("Customer Service (staging)", same intents, no endpoint).

The IDs are constants because the pipeline's defaults point at them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from emulator import classifier
from emulator.ids import intent_id
from emulator.store import Store
from emulator.tenant import EndpointSpec, FlowInstall, LocaleInstall, install_flow
from include import defaults
from include.data import dataset

PROJECT_ID = defaults.DEMO_PROJECT_ID  # the pipeline's defaults name this seeded tenant
FLOW_ID = defaults.DEMO_FLOW_ID
FLOW_NAME = "Customer Service"
FLOW_REFERENCE_ID = "3f1c9a52-8d0e-4b7a-9c61-2f5e8a1d4b70"
STAGING_FLOW_ID = defaults.DEMO_STAGING_FLOW_ID
STAGING_FLOW_NAME = "Customer Service (staging)"
STAGING_FLOW_REFERENCE_ID = "5d2e7b14-9a3c-4f6e-8b25-c4d3e2f1a0b9"
ENDPOINT = EndpointSpec(
    id="6630a1b2c3d4e5f6012345e1",
    reference_id="7e4c2a90-3b1d-4c8f-9e5a-6b7c8d9e0f1a",
    name="Customer Service Webchat",
    channel="webchat",
    url_token="c0ffee" + "0123456789abcdef" * 3 + "0a1b2c3d4e",
)
# The API user that "creates" tasks in the emulator (Cognigy's createdBy is a user id).
API_USER_ID = "6630a1b2c3d4e5f6012345ff"


@dataclass(frozen=True)
class SeedLocale:
    name: str
    id: str
    reference_id: str


LOCALES: dict[str, SeedLocale] = {
    "en-US": SeedLocale("en-US", "6630a1b2c3d4e5f6012345a1", "8a6e0f3b-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
    "de-DE": SeedLocale("de-DE", "6630a1b2c3d4e5f6012345a2", "9b7f1a4c-2d3e-4f6a-9bac-1d2e3f4a5b6c"),
}
LOCALE_IDS: dict[str, str] = {name: locale.id for name, locale in LOCALES.items()}
PRIMARY_LOCALE = "en-US"
# training-jobs dialect: one model per locale of the flow
MODEL_IDS: dict[str, str] = {
    "en-US": defaults.DEMO_MODEL_ID,
    "de-DE": "1c7a3d9f-6b5e-4f2a-8d4c-8e9f0a1b2c3d",
}
STAGING_MODEL_IDS: dict[str, str] = {
    "en-US": "2d8b4e0a-7c6f-4a3b-9e5d-9f0a1b2c3d4e",
    "de-DE": "3e9c5f1b-8d7a-4b4c-8f6e-0a1b2c3d4e5f",
}
SEED_PER_INTENT = 10  # deliberately weak "last quarter" model
SEED_VERSION_ID = "v1"
SEEDED_META_KEY = "seeded_at"

# Seeding is deterministic, so the trained seed artifacts are computed once per process (fast resets).
_seed_artifacts: dict[str, tuple[bytes, dict[str, Any], dict[str, int]]] = {}


def seed_examples(locale: str) -> dict[str, list[str]]:
    return dataset.sample_training(locale, None, default_per_intent=SEED_PER_INTENT)


def _artifacts(locale: str, examples: dict[str, list[str]]) -> tuple[bytes, dict[str, Any], dict[str, int]]:
    if locale not in _seed_artifacts:
        ids = partial(intent_id, FLOW_ID, LOCALE_IDS[locale])
        _seed_artifacts[locale] = classifier.build_artifacts(examples, ids, FLOW_ID, FLOW_NAME)
    return _seed_artifacts[locale]


def _retarget(report: dict[str, Any], flow_id: str, flow_name: str, locale_id: str) -> dict[str, Any]:
    """The production report as the staging flow's (same training data): only the ids and flow name differ."""
    intents: dict[str, Any] = {}
    for name, entry in report["intents"].items():
        findings = []
        for finding in entry["findings"]:
            if "overlappingFlowId" in finding:
                finding = {
                    **finding,
                    "overlappingIntentId": intent_id(flow_id, locale_id, finding["overlappingIntentName"]),
                    "overlappingFlowId": flow_id,
                    "overlappingFlowName": flow_name,
                }
            findings.append(finding)
        intents[name] = {**entry, "findings": findings}
    return {**report, "intents": intents}


def seed(store: Store, now: float | None = None) -> None:
    """Write the seed tenant into an empty store and train its serving models synchronously."""
    now = time.time() if now is None else now
    trained = {name: (examples := seed_examples(name), _artifacts(name, examples)) for name in LOCALES}

    def locales(flow_id: str, flow_name: str, model_ids: dict[str, str]) -> list[LocaleInstall]:
        installs = []
        for name, locale in LOCALES.items():
            examples, (blob, report, counts) = trained[name]
            if flow_id != FLOW_ID:
                report = _retarget(report, flow_id, flow_name, locale.id)
            artifacts = (blob, report, counts)
            ids = (locale.id, locale.reference_id, name, model_ids[name])
            installs.append(LocaleInstall(*ids, examples, artifacts, SEED_VERSION_ID))
        return installs

    production = FlowInstall(
        PROJECT_ID, FLOW_ID, FLOW_REFERENCE_ID, FLOW_NAME, locales(FLOW_ID, FLOW_NAME, MODEL_IDS), [ENDPOINT]
    )
    staging = FlowInstall(
        PROJECT_ID,
        STAGING_FLOW_ID,
        STAGING_FLOW_REFERENCE_ID,
        STAGING_FLOW_NAME,
        locales(STAGING_FLOW_ID, STAGING_FLOW_NAME, STAGING_MODEL_IDS),
    )
    with store.transaction():
        install_flow(store, production, now)
        install_flow(store, staging, now)
        store.set_meta(SEEDED_META_KEY, repr(now))


def ensure_seeded(store: Store) -> bool:
    """Seed on first start (empty state dir). True when it seeded."""
    if store.get_meta(SEEDED_META_KEY) is not None:
        return False
    seed(store)
    return True
