"""The runtime (dags/, plugins/, include/ and the provider package under providers/: what the image ships) imports
none of the dev-side packages: not the emulator, not the dev tooling, not the data-set builder's sources
(docs/ARCHITECTURE.md, "The layers"). And the dependencies point one way: the DAG-specific plugins folder
(`cognigy_airflow`) builds on the installable provider (`cognigy_provider`), which builds on `include`; never back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("dags", "plugins", "include", "providers")
PROVIDER_SRC = "providers/cognigy_provider/src"
# top-level packages of this repository that are not runtime code, and libraries only the dev tooling needs
# (requirements-dev.txt: hassil / home-assistant-intents build include/data/intents.jsonl)
NOT_RUNTIME = {"emulator", "devtools", "bench", "tests", "hassil", "home_assistant_intents"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def python_files(folder: str) -> list[Path]:
    files = sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    assert files, folder
    return files


@pytest.mark.parametrize("folder", RUNTIME)
def test_runtime_imports_no_dev_side_package(folder: str) -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(roots & NOT_RUNTIME)
        for path in python_files(folder)
        if (roots := imported_roots(path)) & NOT_RUNTIME
    }
    assert offending == {}


def test_include_never_imports_airflow() -> None:
    assert [str(p.relative_to(ROOT)) for p in python_files("include") if "airflow" in imported_roots(p)] == []


def test_include_imports_neither_the_provider_nor_the_plugins_folder() -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(roots & {"cognigy_provider", "cognigy_airflow"})
        for path in python_files("include")
        if (roots := imported_roots(path)) & {"cognigy_provider", "cognigy_airflow"}
    }
    assert offending == {}


def test_the_provider_never_imports_the_plugins_folder() -> None:
    """The installable package works without Airflow's plugins folder: no module of it imports `cognigy_airflow`
    (the DAG's steps subclass the provider's classes, e.g. `wait_for_training` its `CognigyTrainingSensor`)."""
    files = python_files(PROVIDER_SRC)
    assert any(p.name == "cognigy.py" and p.parent.name == "sensors" for p in files)  # the scan sees the sensor
    assert [str(p.relative_to(ROOT)) for p in files if "cognigy_airflow" in imported_roots(p)] == []


def test_the_scan_sees_a_plugins_import() -> None:
    """The check above can fail: the DAG's wait step does import the plugins folder and the provider."""
    assert {"cognigy_airflow", "cognigy_provider"} <= imported_roots(
        ROOT / "plugins/cognigy_airflow/wait_for_training.py"
    )


def test_the_scan_sees_the_emulator_package() -> None:
    """The names above are real: the emulator is a top-level package and does import its own modules."""
    assert (ROOT / "emulator" / "__main__.py").is_file()
    assert "emulator" in imported_roots(ROOT / "emulator" / "app.py")
    assert not (ROOT / "include" / "emulator").exists()


def test_the_image_copies_only_runtime_code() -> None:
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    sources = {Path(source).parts[0] for source in copied}
    assert sources & NOT_RUNTIME == set()
    assert set(RUNTIME) <= sources
