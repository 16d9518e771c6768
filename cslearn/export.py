"""Student versions of the exercise notebooks: `python -m cslearn exercises export --out DIR`.

The notebooks in notebooks/exercises/ are stored WITH their solutions (so `pytest` proves that
the solutions pass the checks). A student version replaces each solution region, the lines
between `### BEGIN SOLUTION` and `### END SOLUTION` (markers included), by

    # YOUR CODE HERE
    raise NotImplementedError()

in code cells (indented like the BEGIN line) and by "YOUR ANSWER HERE" in markdown cells, as
nbgrader's `ClearSolutions` does; a cell marked `"nbgrader": {"solution": true}` without markers
is replaced whole. Code cells lose their outputs and execution counts; every other cell is kept
as it is, nbgrader metadata included, so the result can still be used with nbgrader. Plain JSON:
no nbgrader dependency. Introduced in INSTRUCTORS.md.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
ANSWER_STUB = "YOUR ANSWER HERE"


class SolutionMarkerError(ValueError):
    """A notebook whose solution markers do not pair up (nothing is written for it)."""


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else source


def _lines(text: str) -> list[str]:
    """The nbformat on-disk form of a source: lines that keep their newline."""
    return text.splitlines(keepends=True)


def clear_solution(text: str, cell_type: str, where: str) -> tuple[str, int]:
    """`text` with every solution region replaced; returns it and the number of regions."""
    kept: list[str] = []
    regions, begin_line = 0, None
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if begin_line is not None:
                raise SolutionMarkerError(f"{where}: '{BEGIN}' on line {number} inside the region opened on line "
                                          f"{begin_line}; close it with '{END}' first")
            begin_line, regions = number, regions + 1
            indent = line[: len(line) - len(line.lstrip())]
            kept.extend([indent + stub for stub in CODE_STUB] if cell_type == "code" else [indent + ANSWER_STUB])
        elif stripped.startswith(END):
            if begin_line is None:
                raise SolutionMarkerError(f"{where}: '{END}' on line {number} without a '{BEGIN}' before it")
            begin_line = None
        elif begin_line is None:
            kept.append(line)
    if begin_line is not None:
        raise SolutionMarkerError(f"{where}: '{BEGIN}' on line {begin_line} is never closed by '{END}'")
    return "\n".join(kept), regions


def is_solution_cell(cell: dict) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution", False))


def student_notebook(notebook: dict, name: str = "notebook") -> tuple[dict, int]:
    """A student copy of a notebook (a dict in nbformat 4 JSON form) and its number of solutions."""
    cells, solutions = [], 0
    for index, cell in enumerate(notebook["cells"]):
        text = _text(cell["source"])
        where = f"{name}, cell {index} (id {cell.get('id', '?')})"
        cleared, regions = clear_solution(text, cell["cell_type"], where)
        if regions == 0 and is_solution_cell(cell):  # nbgrader: a solution cell without markers goes whole
            cleared, regions = "\n".join(CODE_STUB) if cell["cell_type"] == "code" else ANSWER_STUB, 1
        if regions:
            cell = {**cell, "source": _lines(cleared)}
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell = {**cell, "outputs": [], "execution_count": None}
        cells.append(cell)
        solutions += regions
    return {**notebook, "cells": cells}, solutions


def export_notebooks(source: Path | str, out: Path | str) -> list[tuple[Path, int]]:
    """Write the student version of every notebook under `source` (a folder or one .ipynb) into
    `out`, keeping relative paths. Every notebook is checked before anything is written: an
    unbalanced marker in any of them writes nothing. Returns (written path, solutions removed)."""
    source, out = Path(source), Path(out)
    paths = [source] if source.is_file() else sorted(path for path in source.rglob("*.ipynb")
                                                       if ".ipynb_checkpoints" not in path.parts)
    if not paths:
        raise FileNotFoundError(f"no notebook (*.ipynb) in {source}")
    base = source.parent if source.is_file() else source
    if out.resolve() == base.resolve():
        raise ValueError(f"--out {out} is the folder of the solution notebooks: they would be overwritten")
    exported = []
    for path in paths:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        exported.append((out / path.relative_to(base), *student_notebook(notebook, str(path))))
    written = []
    for target, notebook, solutions in exported:
        target.parent.mkdir(parents=True, exist_ok=True)
        # nbformat's own layout (indent 1, sorted keys, UTF-8), so unchanged cells stay byte-identical
        target.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append((target, solutions))
    return written


def solution_ids(notebook: dict) -> list[str]:
    """The nbgrader grade_id of every solution cell (for tests and instructors' checks)."""
    return [cell["metadata"]["nbgrader"]["grade_id"] for cell in notebook["cells"] if is_solution_cell(cell)]


def has_solution_text(notebook: dict) -> bool:
    """True if any marker is left in the notebook."""
    return any(re.search(rf"{BEGIN}|{END}", _text(cell["source"])) for cell in notebook["cells"])
