"""Keep the course notebooks in their stored form (notebooks/README.md, "Outputs").

    python tools/notebooks.py strip   [NOTEBOOK ...]   # before committing a notebook saved from Jupyter
    python tools/notebooks.py refresh [NOTEBOOK ...]   # re-execute in FAST mode, store the checked outputs

`strip` clears every output and execution count, except those of `# NBVAL_CHECK_OUTPUT` cells
(nbval compares their outputs on every `pytest`, and skips a cell without an execution count as
never run), and drops widget state and execution metadata.
`refresh` executes the notebook in FAST mode with a temporary runs folder (nothing is reused or
left behind), then stores the text outputs of the check cells only. Without arguments both act
on every notebook in notebooks/.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
CELL_METADATA_NOISE = ("execution", "scrolled", "collapsed", "jp-MarkdownHeadingCollapsed")


def is_check_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(CHECK_MARK)


def text_only(outputs: list) -> list:
    """Stdout streams and the text/plain part of results: what nbval compares, nothing more."""
    kept = []
    for output in outputs:
        if output.output_type == "stream" and output.name == "stdout":
            kept.append(nbformat.v4.new_output("stream", name="stdout", text=output.text))
        elif output.output_type in ("execute_result", "display_data") and "text/plain" in output.data:
            kept.append(nbformat.v4.new_output("execute_result", data={"text/plain": output.data["text/plain"]},
                                               execution_count=None))
    return kept


def strip(notebook) -> None:
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for key in CELL_METADATA_NOISE:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        if is_check_cell(cell):  # nbval compares only cells with an execution count ("run")
            cell.outputs = text_only(cell.outputs)
        else:
            cell.execution_count, cell.outputs = None, []


def refresh(path: Path, runs: Optional[Path] = None) -> None:
    """Execute in FAST mode and store the check cells' outputs. `runs`: keep the runs in this
    folder (finished runs are reloaded on the next refresh) instead of a temporary one."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="cslearn-refresh-") as temporary:
        os.environ.update({"CSLEARN_FAST": "1", "CSLEARN_RUNS": str(runs or temporary)})
        executed = nbformat.read(path, as_version=4)
        NotebookClient(executed, kernel_name="python3", timeout=None,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell, run in zip(notebook.cells, executed.cells):
        if is_check_cell(cell):
            cell.outputs, cell.execution_count = run.outputs, run.execution_count
    strip(notebook)
    nbformat.write(notebook, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["strip", "refresh"])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--runs", type=Path, default=None,
                        help="refresh: keep course runs in this folder (reused next time) instead of a temporary one")
    args = parser.parse_intermixed_args()  # options may come before or after the notebooks
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        if args.command == "refresh":
            refresh(path, args.runs)
        else:
            notebook = nbformat.read(path, as_version=4)
            strip(notebook)
            nbformat.write(notebook, path)
        print(f"{args.command}: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
