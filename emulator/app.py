"""FastAPI app factory: both API dialects, the admin routes, the gateway and RFC 7807 errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from emulator import admin, rest_api, seed, snapshots, training_jobs
from emulator.gateway import RAW_SEND_KEY, Gateway
from emulator.problems import PROBLEM_MEDIA_TYPE, Problem, problem_body
from emulator.runtime import EmulatorConfig, Runtime

log = logging.getLogger("emulator")


class EmulatorApp(FastAPI):
    """FastAPI that remembers the server's own `send`, so the gateway can drop a connection."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND_KEY] = send
        await super().__call__(scope, receive, send)


def problem_response(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, request.url.path, **extra),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        messages = [
            "body: not valid JSON"
            if error["type"] == "json_invalid"
            else f"{_field(tuple(error['loc']))}: {error['msg']}"
            for error in exc.errors()
        ]
        return problem_response(request, 400, "Invalid request: " + "; ".join(messages))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route for {request.method} {request.url.path}"
        return problem_response(request, exc.status_code, detail, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return problem_response(request, 500, f"Internal error: {type(exc).__name__}")


def create_app(config: EmulatorConfig) -> FastAPI:
    """Open (and on first start seed) the state in config.state_dir; the task engine runs while serving."""
    runtime = Runtime(config)
    if seed.ensure_seeded(runtime.store):
        log.info("seeded a fresh tenant in %s", config.state_dir)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.engine.start()
        try:
            yield
        finally:
            runtime.engine.stop()
            runtime.store.close()

    app = EmulatorApp(title="Cognigy.AI emulator", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    _install_error_handlers(app)
    app.include_router(admin.router)
    app.include_router(rest_api.token_router)
    app.include_router(rest_api.router)
    app.include_router(snapshots.router)
    app.include_router(training_jobs.token_router)
    app.include_router(training_jobs.router)
    app.add_middleware(Gateway, runtime=runtime, router=app.router)
    return app
