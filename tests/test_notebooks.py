"""The course notebooks' shape and storage policy (notebooks/README.md). Running them is nbval's
job: `pytest` executes every notebook with `--nbval-lax` (pyproject.toml), in FAST mode (conftest.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
COLAB = "https://colab.research.google.com/github/cslearn/cslearn/blob/main/notebooks/{}.ipynb"
# A quoted absolute path in code: "/x", '~/x', "C:\x" (URLs start with a scheme, not a slash).
ABSOLUTE_PATH = re.compile(r"""["'](/[\w.~-]|~/|[A-Za-z]:\\)""")
MACHINE_PATHS = re.compile(r"/work/|/home/|/Users/|/root/|/tmp/|[A-Za-z]:\\\\Users")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def ids(paths):
    return [path.stem for path in paths]


def test_the_course_has_its_first_notebooks():
    names = {path.stem for path in NOTEBOOKS}
    assert {"00_welcome_and_setup", "01_segmentation_refresher", "02_the_continual_protocol",
            "03_catastrophic_forgetting"} <= names
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+", name) for name in names), "names: NN_words_in_snake_case"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_valid_nbformat_4_with_the_python3_kernel(path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert notebook.nbformat == 4
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"  # the kernel nbval and Colab start
    cell_ids = [cell.id for cell in notebook.cells]
    assert len(set(cell_ids)) == len(cell_ids)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_opens_with_what_you_will_learn_prerequisites_and_colab_badge(path):
    cells = load(path)["cells"]
    opening = source(cells[0])
    assert cells[0]["cell_type"] == "markdown" and opening.startswith("# ")
    assert "## What you will learn" in opening and "**Prerequisites:**" in opening
    assert f"({COLAB.format(path.stem)})" in opening and "colab-badge.svg" in opening


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_first_code_cell_is_the_setup_cell(path):
    setup = source(next(cell for cell in load(path)["cells"] if cell["cell_type"] == "code"))
    assert 'if "google.colab" in sys.modules:\n    !pip install -q git+https://github.com/cslearn/cslearn' in setup
    assert "from cslearn import course" in setup and "DEVICE = course.device()" in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_closes_with_what_to_remember_and_computed_exercises(path):
    cells = load(path)["cells"]
    texts = [source(cell) for cell in cells]
    remember = [index for index, text in enumerate(texts) if "## What to remember" in text]
    assert remember and cells[remember[0]]["cell_type"] == "markdown"
    closing = cells[remember[0]:]
    exercises = [re.search(r"\*\*Exercise (\d)\.\*\*", source(cell)) for cell in closing if cell["cell_type"] == "markdown"]
    numbers = [int(match.group(1)) for match in exercises if match]
    assert numbers in ([1, 2], [1, 2, 3]), f"two or three exercises, numbered from 1; found {numbers}"
    answers = [source(cell) for cell in closing if cell["cell_type"] == "code"]
    assert [int(re.match(r"# Answer to exercise (\d)", answer).group(1)) for answer in answers] == numbers
    assert all(len(answer.strip().splitlines()) > 1 for answer in answers), "answers are computed, not typed"
    assert not any(cell["cell_type"] == "code" and not source(cell).startswith("# Answer") for cell in closing)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_only_check_cells_store_outputs_and_those_are_small_text(path):
    notebook = load(path)
    assert "widgets" not in notebook["metadata"], "widget state is output: strip it (tools/notebooks.py strip)"
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        outputs = cell["outputs"]
        if not source(cell).startswith(CHECK_MARK):
            assert outputs == [], f"cell {number}: outputs stored; only {CHECK_MARK} cells keep theirs"
            assert cell["execution_count"] is None, f"cell {number}: execution count stored"
            continue
        assert outputs, f"cell {number} is a {CHECK_MARK} cell without its expected output (tools/notebooks.py refresh)"
        assert isinstance(cell["execution_count"], int), f"cell {number}: nbval skips a check cell without execution count"
        for output in outputs:
            if output["output_type"] == "stream":
                assert output["name"] == "stdout", f"cell {number}: stderr is not a checked output"
            else:
                assert output["output_type"] in ("execute_result", "display_data")
                assert set(output["data"]) == {"text/plain"}, f"cell {number}: checked outputs are text only"
        text = "".join("".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
                       for output in outputs)
        assert len(text) < 4000, f"cell {number}: a checked output should be a few lines"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_no_absolute_or_machine_paths(path):
    for number, cell in enumerate(load(path)["cells"]):
        text = source(cell)
        assert not MACHINE_PATHS.search(text), f"cell {number}: a path of someone's machine"
        for output in cell.get("outputs", []):
            assert not MACHINE_PATHS.search(json.dumps(output)), f"cell {number}: a machine path in the output"
        if cell["cell_type"] == "code":
            assert not ABSOLUTE_PATH.search(text), f"cell {number}: an absolute path; use course.run_dir() or a relative one"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_stands_alone(path):
    """Nothing is taken from another notebook: no %run, no import of a notebook or its files."""
    for cell in load(path)["cells"]:
        if cell["cell_type"] == "code":
            text = source(cell)
            assert "%run" not in text and ".ipynb" not in text and "import_ipynb" not in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_in_the_readme_course_map(path):
    readme = (ROOT / "README.md").read_text()
    course_map = readme.split("## The course map", 1)[1].split("\n## ", 1)[0]
    assert f"| `{path.stem}` |" in course_map
    assert f"`{path.stem}`" in (ROOT / "notebooks" / "README.md").read_text()


def test_pytest_runs_the_notebooks_with_nbval_in_fast_mode():
    tomllib = pytest.importorskip("tomllib")
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests", "notebooks"]
    assert "--nbval-lax" in options["addopts"].split()
    conftest = (ROOT / "conftest.py").read_text()
    assert 'os.environ["CSLEARN_FAST"] = "1"' in conftest and 'os.environ["CSLEARN_RUNS"]' in conftest
