"""Admin routes for tests and operators: no auth, no rate limit, not counted as tenant traffic."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from include.emulator.deps import runtime
from include.emulator.knobs import KnobError
from include.emulator.problems import Problem
from include.emulator.runtime import Runtime

router = APIRouter(prefix="/_emulator")
Rt = Annotated[Runtime, Depends(runtime)]
RATE_KNOBS = {"rate_limit_requests", "rate_limit_window_seconds"}


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/knobs")
def get_knobs(rt: Rt) -> dict[str, Any]:
    return rt.knobs.as_json()


@router.patch("/knobs")
def patch_knobs(rt: Rt, changes: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Partial update; lists (fault rules) are replaced as a whole. A rate-limit change empties the window."""
    try:
        _, changed = rt.knobs.patch(changes)
    except KnobError as exc:
        raise Problem(400, f"Invalid request: {exc}") from exc
    if changed & RATE_KNOBS:
        rt.limiter.clear()
    return rt.knobs.as_json()


@router.get("/stats")
def stats(rt: Rt) -> dict[str, Any]:
    return {**rt.stats.snapshot(), **rt.engine.stats()}


@router.post("/reset")
def reset(rt: Rt) -> dict[str, str]:
    rt.reset()
    return {"status": "reset"}
