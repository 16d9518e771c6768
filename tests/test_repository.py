"""The repository's promises: one dependency set in two files, README commands, CI script."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (CI runs 3.11)

ROOT = Path(__file__).resolve().parent.parent


def _requirement_names(requirements):
    return {re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower() for requirement in requirements}


def test_environment_yml_installs_the_same_set_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    conda_pip = [line.strip()[2:].strip() for line in (ROOT / "environment.yml").read_text().splitlines()
                 if line.strip().startswith("- ") and line.startswith("      ")]
    listed = {requirement for requirement in conda_pip if requirement != "-e ."}
    assert listed == declared, f"only in pyproject: {declared - listed}; only in environment.yml: {listed - declared}"
    assert "-e ." in conda_pip


def test_torch_bounds_are_loose_lower_bounds():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in ("torch", "torchvision"):
        (spec,) = [d for d in dependencies if _requirement_names([d]) == {name}]
        assert ">=" in spec and "<" not in spec.replace(">=", ""), f"{spec}: Colab must keep its own {name}"


def test_readme_gives_the_install_and_test_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in readme and 'pip install -e ".[dev]"' in ci
    assert re.search(r"^pytest$", readme, re.M) and re.search(r"^pytest$", ci, re.M)


def test_gitignore_keeps_data_runs_and_checkpoints_out():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for pattern in ("runs/", "*.pt", "data/*"):
        assert pattern in ignored
