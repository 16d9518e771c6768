"""Atomic, code-free checkpoints and the run directory's guard against mixed settings.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
`torch.load(weights_only=True)`: opening a checkpoint never executes code. Every file is written
to a temporary file in the same folder and renamed over the target, so a crash leaves either
the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cslearn.config import RunConfig, differences


class RunDirectoryError(RuntimeError):
    """The run directory belongs to a run with other settings, or is damaged."""


def _write_atomically(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    _write_atomically(path, lambda stream: torch.save(state, stream))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise RunDirectoryError(f"cannot read checkpoint {path}: {error}. Delete it to redo that part "
                                f"of the run (finished steps are kept in their own files).") from error


def copy_atomically(source: Path, target: Path) -> None:
    _write_atomically(target, lambda stream: stream.write(Path(source).read_bytes()))


def write_text(path: Path, text: str) -> None:
    _write_atomically(path, lambda stream: stream.write(text.encode()))


def claim_run_directory(run_dir: Path, config: RunConfig, write: bool = True) -> None:
    """Write `config.json` in a new run directory, or check that an existing one matches.

    Resuming with other settings would silently mix two experiments, so it is refused.
    `write=False` only checks (the processes other than rank 0 of a distributed run).
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if config_file.exists():
        saved = json.loads(config_file.read_text())
        changed = differences(saved, config.to_dict())
        if changed:
            raise RunDirectoryError(
                f"run directory {run_dir} holds a run with other settings:\n  " + "\n  ".join(changed)
                + "\nUse another --run-dir for a new experiment, or the same settings to resume this one.")
    if write:
        write_text(config_file, config.dumps())
