"""Wall time of each notebook in a pytest run, from its JUnit XML report.

    PYTEST_ADDOPTS=--junitxml=ci.xml bash .ci/run      # or: pytest --junitxml=ci.xml
    python benchmarks/notebook_times.py ci.xml
    python benchmarks/notebook_times.py --alone         # each notebook in its own pytest session

nbval reports one test case per cell; a notebook's time is the sum of its cells' times. The
course total counts notebooks 00-10 (the course proper); the last line is one JSON object.
With --alone every notebook runs in a separate `pytest --nbval-lax` session, so in a fresh runs
folder (the root conftest.py makes one per session): it trains everything it needs, step 0
included, as a learner who opens it first would (about ten minutes for all of them).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def notebook_seconds(report: str) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = case.get("classname", "")
        if name.endswith(".ipynb"):  # "notebooks.exercises.ex1_....ipynb"
            seconds[name.removeprefix("notebooks.")] += float(case.get("time", 0))
    return dict(seconds)


def seconds_alone() -> dict[str, float]:
    """Each notebook in its own pytest session (a fresh runs folder each); failures are reported."""
    notebooks = sorted((REPOSITORY / "notebooks").glob("[0-9]*.ipynb"))
    notebooks += sorted((REPOSITORY / "notebooks" / "exercises").glob("*.ipynb"))
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for notebook in notebooks:
            report = Path(folder) / f"{notebook.stem}.xml"
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                                     str(notebook.relative_to(REPOSITORY)), f"--junitxml={report}"],
                                    cwd=REPOSITORY, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"{notebook.name} failed:\n{result.stdout[-3000:]}")
            seconds.update(notebook_seconds(str(report)))
            print(f"{seconds[next(reversed(seconds))]:7.1f} s  {notebook.name} (alone)", flush=True)
    return seconds


def main() -> None:
    seconds = seconds_alone() if sys.argv[1:] == ["--alone"] else notebook_seconds(sys.argv[1])
    for name, value in seconds.items():
        print(f"{value:7.1f} s  {name}")
    course = sum(value for name, value in seconds.items() if name[:2].isdigit() and int(name[:2]) <= 10)
    print(f"course 00-10: {course:.0f} s; all notebooks: {sum(seconds.values()):.0f} s")
    print(json.dumps({"notebooks": seconds, "course_seconds": course, "all_seconds": sum(seconds.values())}))


if __name__ == "__main__":
    main()
