"""Building tenant content: flows with their locales, intents, trained models and endpoints.

The seed and the admin route `POST /_emulator/flows` both go through `install_flow`, so a flow built for a
test looks exactly like the seeded one (a model per flow/locale, a serving version, a timeline entry).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from emulator import classifier
from emulator.ids import intent_id, object_id
from emulator.store import Store

HEX24 = r"^[0-9a-f]{24}$"
# BCP-47-ish locale names: en-US, fr-FR, pt-BR, zh-Hans-CN, es-419 ...
LOCALE_NAME = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
Artifacts = tuple[bytes, dict[str, Any], dict[str, int]]


class TenantError(ValueError):
    """The requested tenant content is invalid (the message names what)."""


@dataclass(frozen=True)
class EndpointSpec:
    id: str
    reference_id: str
    name: str
    channel: str
    url_token: str
    active: bool = True


@dataclass(frozen=True)
class LocaleInstall:
    id: str
    reference_id: str
    name: str
    model_id: str
    intents: Mapping[str, Sequence[str]]
    artifacts: Artifacts | None = None  # None: not trained (nothing serves)
    version_id: str | None = None


@dataclass
class FlowInstall:
    project_id: str
    flow_id: str
    reference_id: str
    name: str
    locales: Sequence[LocaleInstall]
    endpoints: Sequence[EndpointSpec] = field(default_factory=tuple)


def new_endpoint(name: str, channel: str, now: float | None = None) -> EndpointSpec:
    return EndpointSpec(object_id(now), str(uuid.uuid4()), name, channel, os.urandom(32).hex())


def install_flow(store: Store, flow: FlowInstall, now: float) -> None:
    """Write the flow (replacing one with the same id), its locales (reused by id), models, intents, the trained
    versions serving from `now`, and its endpoints. Training happened before: this only writes."""
    with store.transaction():
        if store.get_flow(flow.flow_id) is not None:
            store.remove_flow(flow.flow_id, now)
        for locale in flow.locales:
            if store.get_locale(locale.id) is None:
                store.add_locale(locale.id, locale.reference_id, locale.name, locale.name, flow.project_id)
        store.add_flow(flow.flow_id, flow.reference_id, flow.name, flow.project_id, flow.locales[0].id)
        for locale in flow.locales:
            store.add_model(locale.model_id, flow.flow_id, locale.id)
            store.replace_intents(flow.flow_id, locale.id, locale.intents)
            if locale.artifacts is None or locale.version_id is None:
                continue
            blob, report, counts = locale.artifacts
            model = store.model_for(flow.flow_id, locale.id)
            assert model is not None
            store.add_version(
                locale.model_id, locale.version_id, None, now, blob, report, counts, model["intents_revision"]
            )
            store.set_active_version(locale.model_id, locale.version_id, at=now)
        for endpoint in flow.endpoints:
            store.add_endpoint(
                endpoint.id,
                endpoint.reference_id,
                endpoint.name,
                endpoint.channel,
                flow.flow_id,
                flow.project_id,
                endpoint.url_token,
                endpoint.active,
            )


def build_flow(
    store: Store,
    *,
    project_id: str,
    flow_id: str,
    name: str,
    locales: Mapping[str, tuple[Mapping[str, Sequence[str]], bool]],
    endpoint: str | None,
    endpoint_channel: str,
    now: float,
    reference_id: str | None = None,
) -> dict[str, Any]:
    """Create or replace a flow from {locale name: (intents, trained)}; train the trained locales synchronously.

    A locale row is reused when the project already has one of that name, else created with a fresh 24-hex
    `_id` and UUID `referenceId`. Returns the ids (see `POST /_emulator/flows`)."""
    from emulator.engine import limit_violation  # engine imports seed, which imports this module

    if not locales:
        raise TenantError("locales: a flow needs at least one locale")
    installs: list[LocaleInstall] = []
    for locale_name, (intents, trained) in locales.items():
        if not LOCALE_NAME.match(locale_name):
            raise TenantError(f"locales: {locale_name!r} is not a locale name like fr-FR")
        for intent, sentences in intents.items():
            if not intent.strip() or any(not isinstance(s, str) or not s.strip() for s in sentences):
                raise TenantError(f"locales.{locale_name}.intents: intent {intent!r} needs a name and sentences")
        if (violation := limit_violation(intents)) is not None:
            raise TenantError(f"locales.{locale_name}.intents: {violation}")
        existing = store.locale_by_name(project_id, locale_name)
        if existing is not None:
            locale_id, locale_ref = existing["id"], existing["reference_id"]
        else:
            locale_id, locale_ref = object_id(now), str(uuid.uuid4())
        artifacts = None
        if trained:
            usable = {intent: list(s) for intent, s in intents.items() if s}
            try:
                artifacts = classifier.build_artifacts(usable, partial(intent_id, flow_id, locale_id), flow_id, name)
            except classifier.TrainingDataError as exc:
                raise TenantError(f"locales.{locale_name}: Intent training failed: {exc}") from exc
        installs.append(
            LocaleInstall(
                id=locale_id,
                reference_id=locale_ref,
                name=locale_name,
                model_id=str(uuid.uuid4()),
                intents={intent: list(s) for intent, s in intents.items()},
                artifacts=artifacts,
                version_id=str(uuid.uuid4()) if trained else None,
            )
        )
    endpoints = [new_endpoint(endpoint, endpoint_channel, now)] if endpoint else []
    flow = FlowInstall(project_id, flow_id, reference_id or str(uuid.uuid4()), name, installs, endpoints)
    install_flow(store, flow, now)
    return {
        "project_id": project_id,
        "flow_id": flow_id,
        "reference_id": flow.reference_id,
        "_id": flow_id,  # the same two ids under the names the REST API uses
        "referenceId": flow.reference_id,
        "name": name,
        "locale_ids": {locale.name: locale.id for locale in installs},
        "locales": {
            locale.name: {
                "locale_id": locale.id,
                "reference_id": locale.reference_id,
                "model_id": locale.model_id,
                "version_id": locale.version_id,
                "trained": locale.artifacts is not None,
            }
            for locale in installs
        },
        "endpoint": None
        if not endpoints
        else {
            "_id": endpoints[0].id,
            "referenceId": endpoints[0].reference_id,
            "name": endpoints[0].name,
            "channel": endpoints[0].channel,
            "URLToken": endpoints[0].url_token,
        },
    }
