"""Wall time of each notebook in a pytest run, from its JUnit XML report.

    PYTEST_ADDOPTS=--junitxml=ci.xml bash .ci/run      # or: pytest --junitxml=ci.xml
    python benchmarks/notebook_times.py ci.xml

nbval reports one test case per cell; a notebook's time is the sum of its cells' times. The
course total counts notebooks 00-10 (the course proper); the last line is one JSON object.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict


def notebook_seconds(report: str) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = case.get("classname", "")
        if name.endswith(".ipynb"):  # "notebooks.exercises.ex1_....ipynb"
            seconds[name.removeprefix("notebooks.")] += float(case.get("time", 0))
    return dict(seconds)


def main() -> None:
    seconds = notebook_seconds(sys.argv[1])
    for name, value in seconds.items():
        print(f"{value:7.1f} s  {name}")
    course = sum(value for name, value in seconds.items() if name[:2].isdigit() and int(name[:2]) <= 10)
    print(f"course 00-10: {course:.0f} s; all notebooks: {sum(seconds.values()):.0f} s")
    print(json.dumps({"notebooks": seconds, "course_seconds": course, "all_seconds": sum(seconds.values())}))


if __name__ == "__main__":
    main()
