"""Which public functions and classes of `cslearn` do the notebooks use?

    python benchmarks/notebook_coverage.py [--list-unused]

Public = every function and class defined in a `cslearn` module under a name without a leading
underscore. Used = named directly by at least one notebook's code (`from cslearn.x import f`, then
`f(...)`; or `module.f` after `from cslearn import module` / `import cslearn.module as m`), found
by parsing the code cells (notebooks/*.ipynb and notebooks/exercises/*.ipynb); re-exports count
for the object they name. Methods called on returned objects (`history.model(...)`) are not
counted, so the figure is a lower bound. Prints the fraction per module and overall; the last
line is one JSON object.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import nbformat

import cslearn

ROOT = Path(__file__).resolve().parent.parent


def public_objects() -> dict[tuple[str, str], object]:
    """(module, name) -> object for every public function and class defined in cslearn."""
    found = {}
    for info in pkgutil.walk_packages(cslearn.__path__, prefix="cslearn."):
        if info.name.endswith("__main__"):
            continue  # the command line: used through `python -m cslearn`, not imported
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
                    and getattr(value, "__module__", None) == info.name):
                found[(info.name, name)] = value
    return found


def code_of(path: Path) -> str:
    """The notebook's code cells, without IPython magics and shell lines."""
    notebook = nbformat.read(path, as_version=4)
    lines = [line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("!", "%")) else line
             for cell in notebook.cells if cell.cell_type == "code" for line in cell.source.splitlines()]
    return "\n".join(lines)


def used_objects(code: str) -> set[int]:
    """ids of the cslearn objects a piece of code names directly."""
    tree = ast.parse(code)
    aliases: dict[str, object] = {}  # local name -> cslearn module or object
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cslearn":
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if value is None:  # a submodule: from cslearn import course
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                aliases[alias.asname or alias.name] = value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cslearn":
                    module = importlib.import_module(alias.name)
                    aliases[alias.asname or alias.name] = module if alias.asname else cslearn
    used = {id(value) for value in aliases.values()}
    for node in ast.walk(tree):  # module.attribute (one or more levels: cslearn.data.synthetic.make_voc_folder)
        if isinstance(node, ast.Attribute):
            parts, current = [], node
            while isinstance(current, ast.Attribute):
                parts.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name) and current.id in aliases:
                value = aliases[current.id]
                for part in reversed(parts):
                    value = getattr(value, part, None)
                    if value is None:
                        break
                    used.add(id(value))
    return used


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--list-unused", action="store_true")
    args = parser.parse_args()
    public = public_objects()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb"))
    used_ids: set[int] = set()
    for path in notebooks:
        used_ids |= used_objects(code_of(path))
    per_module: dict[str, list[int]] = {}
    unused = []
    for (module, name), value in sorted(public.items()):
        counts = per_module.setdefault(module, [0, 0])
        counts[1] += 1
        if id(value) in used_ids:
            counts[0] += 1
        else:
            unused.append(f"{module}.{name}")
    for module, (used, total) in per_module.items():
        print(f"{module:<36} {used:>3} / {total:<3}")
    total_used = sum(used for used, _ in per_module.values())
    print(f"\n{len(notebooks)} notebooks use {total_used} of {len(public)} public functions and classes "
          f"({total_used / len(public):.0%})")
    if args.list_unused:
        print("unused: " + ", ".join(unused))
    print(json.dumps({"notebooks": len(notebooks), "public": len(public), "used": total_used,
                      "fraction": total_used / len(public)}))


if __name__ == "__main__":
    main()
