"""Configuration and the long-lived objects one emulator process owns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emulator.auth import Authenticator
from emulator.engine import Engine
from emulator.knobs import Knobs, KnobState, RateLimiter, RequestStats
from emulator.store import Store

DB_FILENAME = "emulator.sqlite3"


@dataclass(frozen=True)
class EmulatorConfig:
    state_dir: Path
    api_key: str
    client_id: str
    client_secret: str
    knobs: Knobs = field(default_factory=Knobs)  # the start (and reset) values of the knobs

    def __repr__(self) -> str:  # never show the secrets
        return f"EmulatorConfig(state_dir={self.state_dir!s}, client_id={self.client_id!r})"


class Runtime:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = Store(Path(config.state_dir) / DB_FILENAME)
        self.knobs = KnobState(config.knobs)
        self.limiter = RateLimiter()
        self.stats = RequestStats()
        self.auth = Authenticator(self.store, config.api_key, config.client_id, config.client_secret)
        self.engine = Engine(self.store, self.knobs)

    def reset(self) -> None:
        """Seed tenant, default knobs, empty rate window and counters. Issued tokens stay valid."""
        self.engine.reset()
        self.knobs.reset()
        self.limiter.clear()
        self.stats.clear()
