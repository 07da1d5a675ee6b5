"""Shared by the benchmarks: where results go, what machine they ran on, percentiles, process resources."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from devtools.servers import ROOT

RESULTS = ROOT / "bench" / "results"
STATE = ROOT / ".state" / "bench"


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model and the load average when the benchmark started (noise indicator)."""
    model = mem = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), "")
    with contextlib.suppress(OSError, IndexError):
        mem = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout.splitlines()[1]
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory": re.sub(r"\s+", " ", mem).strip(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
    }


def write_result(name: str, figures: dict[str, Any], **details: Any) -> Path:
    """bench/results/<name>.json with the figures, the details and the machine; written atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine()}
    doc["figures"] = figures
    doc.update(details)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 3),
        "p50": round(percentile(values, 50), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
    }


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def banner(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def show(label: str, value: Any) -> None:
    print(f"  {label:<48} {value}", flush=True)


def fresh_emulator(name: str, **env: str):
    """A new emulator with an empty state dir under .state/bench/<name> (stop it with .stop())."""
    import shutil

    from devtools.servers import start_emulator

    folder = STATE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return start_emulator(folder / "emulator", **env)


def demo_target():
    from include import defaults
    from include.cognigy.model import Target

    return Target(defaults.DEMO_PROJECT_ID, defaults.DEMO_FLOW_ID, "en-US", defaults.DEMO_MODEL_ID)


def create_trainings(emulator, durations: list[float], fail: bool = True) -> list[dict]:
    """Start one rest-v2 training per duration with the emulator's HTTP API (rate limit switched off meanwhile).

    fail=True makes every one of them end in `error` at its end time (knob fail_next_trainings), so the
    emulator does not fit a classifier per training in its single engine thread; a poller treats any
    terminal status alike. Returns the task views (with _id, createdAt).
    """
    import requests

    from emulator import seed
    from include import defaults

    before = emulator.knobs()
    emulator.knobs(rate_limit_requests=None, fail_next_trainings=len(durations) if fail else 0)
    session = requests.Session()
    session.headers["X-API-Key"] = emulator.api_key
    url = f"{emulator.url}/new/v2.0/flows/{defaults.DEMO_FLOW_ID}/intents/train"
    tasks, current = [], None
    for duration in durations:
        if duration != current:
            emulator.knobs(training_seconds=duration)
            current = duration
        resp = session.post(url, json={"localeId": seed.LOCALE_IDS["en-US"], "mode": "full"}, timeout=30)
        resp.raise_for_status()
        tasks.append(resp.json())
    emulator.knobs(
        rate_limit_requests=before["rate_limit_requests"], rate_limit_window_seconds=before["rate_limit_window_seconds"]
    )
    return tasks
