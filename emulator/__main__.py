"""`python -m emulator --host 127.0.0.1 --port P --state-dir D --api-key K --client-id ID --client-secret S`

Secrets may also come from the environment (COGNIGY_EMULATOR_API_KEY, _CLIENT_ID, _CLIENT_SECRET) so they
need not appear in a process list. One process, one uvicorn worker.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import uvicorn
from threadpoolctl import threadpool_limits

from emulator.app import create_app
from emulator.knobs import Knobs
from emulator.runtime import EmulatorConfig


def _rate_limit(value: str) -> int | None:
    return None if value.lower() in ("off", "none", "0") else int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state-dir", type=Path, default=Path(".state/emulator"))
    parser.add_argument("--api-key", default=env("COGNIGY_EMULATOR_API_KEY"))
    parser.add_argument("--client-id", default=env("COGNIGY_EMULATOR_CLIENT_ID"))
    parser.add_argument("--client-secret", default=env("COGNIGY_EMULATOR_CLIENT_SECRET"))
    defaults = Knobs()
    parser.add_argument("--training-seconds", type=float, default=defaults.training_seconds)
    parser.add_argument(
        "--rate-limit", type=_rate_limit, default=defaults.rate_limit_requests, help="requests per window, or off"
    )
    parser.add_argument("--rate-window", type=float, default=defaults.rate_limit_window_seconds)
    parser.add_argument("--token-ttl", type=float, default=defaults.token_ttl_seconds)
    parser.add_argument("--latency-ms", type=int, default=defaults.latency_ms)
    parser.add_argument(
        "--max-snapshots", type=int, default=defaults.max_snapshots, help="snapshots per project (dedicated: more)"
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    for name in ("api_key", "client_id", "client_secret"):
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} (or COGNIGY_EMULATOR_{name.upper()}) is required")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    knobs = Knobs(
        training_seconds=args.training_seconds,
        rate_limit_requests=args.rate_limit,
        rate_limit_window_seconds=args.rate_window,
        token_ttl_seconds=args.token_ttl,
        latency_ms=args.latency_ms,
        max_snapshots=args.max_snapshots,
    )
    threadpool_limits(limits=1)  # tiny sparse models: BLAS threads only contend (see classifier.py)
    config = EmulatorConfig(args.state_dir, args.api_key, args.client_id, args.client_secret, knobs)
    app = create_app(config)
    # uvicorn's access log prints query strings (an api_key= parameter would leak); the gateway logs instead.
    uvicorn.run(
        app, host=args.host, port=args.port, access_log=False, log_level=args.log_level, timeout_graceful_shutdown=5
    )


if __name__ == "__main__":
    main()
