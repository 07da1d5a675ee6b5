"""Every pinned direct dependency agrees with the lock, so `make` installs one consistent set."""

from __future__ import annotations

import re

from devtools.servers import ROOT


def pins(path: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / path).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", line.strip())
        if match:
            found[re.sub(r"\[.*\]", "", match.group(1)).lower().replace("_", "-")] = match.group(2)
    return found


def test_direct_pins_match_the_lock() -> None:
    lock = pins("requirements.lock")
    for source in ("requirements.txt", "requirements-dev.txt"):
        for name, version in pins(source).items():
            assert lock.get(name) == version, f"{source}: {name}=={version} but requirements.lock has {lock.get(name)}"


def test_mlflow_is_pinned_to_the_version_that_installs_here() -> None:
    assert pins("requirements.txt")["mlflow"] == "3.17.2"
