"""The instructor kit: autograded checks (cslearn.exercises), the student export (cslearn.export,
`python -m cslearn exercises export`) and the exercise notebooks' shape (notebooks/exercises/)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cslearn import exercises
from cslearn.__main__ import main
from cslearn.export import BEGIN, END, SolutionMarkerError, export_notebooks, student_notebook

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb"))
COLAB = "https://colab.research.google.com/github/cslearn/cslearn/blob/main/notebooks/exercises/{}.ipynb"


# ----- learner-style implementations: right ones, written from the definitions, and classic mistakes -----

def unbiased_ce(logits, targets, num_old):
    log_probs = logits.log_softmax(dim=1)  # (B, C, H, W)
    background = torch.logsumexp(log_probs[:, :max(num_old, 1)], dim=1, keepdim=True)  # (B, 1, H, W)
    log_probs = torch.cat([background, log_probs[:, 1:]], dim=1)  # (B, C, H, W)
    return F.nll_loss(log_probs, targets, ignore_index=255, reduction="none").mean()


def plain_ce(logits, targets, num_old):
    return F.cross_entropy(logits, targets, ignore_index=255, reduction="none").mean()


def valid_pixel_mean(logits, targets, num_old):
    return F.nll_loss(torch.cat([torch.logsumexp(logits.log_softmax(1)[:, :max(num_old, 1)], 1, keepdim=True),
                                 logits.log_softmax(1)[:, 1:]], 1), targets, ignore_index=255)


def rows(features):  # (B, C, h, w) -> (B·h·w, C), channels kept together
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def view_rows(features, labels, c):
    """The official SDR gather: masked select, then .view(C, -1): mixes channels across images."""
    mask = (labels == c)[:, None].expand_as(features)  # (B, C, h, w)
    return features.masked_select(mask).view(features.shape[1], -1).T  # (n, C), wrong for B > 1


def running_mean(prototypes, counts, features, labels, num_old, gather=None, overwrite=False):
    prototypes, counts = prototypes.clone(), counts.clone()
    for c in labels.unique().tolist():
        if c == 255 or c < num_old:
            continue
        vectors = gather(features, labels, c) if gather else rows(features)[labels.reshape(-1) == c]  # (n, C)
        seen = 0 if overwrite else counts[c]
        prototypes[c] = (vectors.sum(0) + seen * prototypes[c]) / (seen + len(vectors))
        counts[c] += len(vectors)
    return prototypes, counts


def attraction(features, labels, prototypes):
    flat = labels.reshape(-1)
    terms = [(rows(features)[flat == c] - prototypes[c]).pow(2).sum().sqrt() for c in flat.unique().tolist() if c != 255]
    return torch.stack(terms).mean()


def repulsion(features, labels, gather=None):
    classes = [c for c in labels.unique().tolist() if c != 255]
    if len(classes) < 2:
        return features.sum() * 0
    means = torch.stack([(gather(features, labels, c) if gather else rows(features)[labels.reshape(-1) == c]).mean(0)
                         for c in classes])  # (K, C)
    total = sum(1 / ((means[i] - means[j]).norm() + 1e-6) for i in range(len(classes)) for j in range(len(classes)) if i != j)
    return total / len(classes)


def ucd_loss(features, old_features, old_logits, labels, temperature=0.07, uncertainty=True, detach_copies=True):
    z, z_old = F.normalize(rows(features), dim=1), F.normalize(rows(old_features), dim=1)  # (N, C)
    q = rows(old_logits.softmax(dim=1))  # (N, |O|)
    y = labels.reshape(-1)
    truth = (y != 255) & (y > 0)
    pseudo = torch.where(truth, y, q.argmax(dim=1))  # (N,)
    anchor, key = (y != 255) & (pseudo > 0), (y == 0) & (pseudo > 0)
    anchors = z[anchor]  # (N_a, C)
    contrast = torch.cat([anchors.detach() if detach_copies else anchors, z_old[key]])  # (N_c, C)
    anchor_labels, contrast_labels = pseudo[anchor], torch.cat([pseudo[anchor], pseudo[key]])
    weights = q[anchor] @ torch.cat([q[anchor], q[key]]).T if uncertainty else torch.ones(len(anchors), len(contrast))
    both_true = truth[anchor][:, None] & torch.cat([truth[anchor], torch.zeros_like(pseudo[key], dtype=torch.bool)])[None]
    weights = torch.where(both_true, torch.ones_like(weights), weights)  # (N_a, N_c)
    similarity = anchors @ contrast.T / temperature  # (N_a, N_c)
    same = anchor_labels[:, None] == contrast_labels[None, :]
    positive = same & ~torch.eye(len(anchors), len(contrast), dtype=torch.bool)
    negatives = torch.logsumexp(similarity.masked_fill(same, torch.finfo(similarity.dtype).min), dim=1, keepdim=True)
    count = positive.sum(dim=1)
    per_anchor = (weights * positive * (torch.logaddexp(similarity, negatives) - similarity)).sum(1) / count.clamp(min=1)
    return per_anchor[count > 0].mean() if (count > 0).any() else features.sum() * 0


# ----- the checks -----

CHECKS = {
    "unbiased_ce": (exercises.check_unbiased_ce, unbiased_ce),
    "prototype_running_mean": (exercises.check_prototype_running_mean, running_mean),
    "attraction": (exercises.check_attraction, attraction),
    "repulsion": (exercises.check_repulsion, repulsion),
    "ucd_loss": (exercises.check_ucd_loss, ucd_loss),
}
PACKAGE = {"unbiased_ce": exercises._package_unbiased_ce,
           "prototype_running_mean": exercises._package_prototype_running_mean,
           "attraction": exercises._package_attraction, "repulsion": exercises._package_repulsion,
           "ucd_loss": exercises._package_ucd_loss}


@pytest.mark.parametrize("name", CHECKS)
def test_each_check_passes_on_the_package_and_on_an_implementation_from_the_definition(name, capsys):
    check, learner = CHECKS[name]
    assert check(PACKAGE[name]) is True
    assert check(learner) is True
    printed = capsys.readouterr().out
    assert re.fullmatch(rf"(✓ {name} passed \(\d+ random cases\)\n){{2}}", printed)


WRONG = [
    ("unbiased_ce", plain_ce, r"`loss` differs: yours [\d.]+, expected [\d.]+ \(off by"),
    ("unbiased_ce", valid_pixel_mean, r"\(ignored pixels \(255\)\) failed.*`loss` differs"),
    ("unbiased_ce", lambda *a: unbiased_ce(*a).item(), r"`loss` is a float, expected a torch.Tensor"),
    ("unbiased_ce", lambda logits, *a: unbiased_ce(logits.detach(), *a), r"carries no gradient"),
    ("unbiased_ce", lambda *a: unbiased_ce(*a).double(), r"`loss` has dtype torch.float64, expected torch.float32"),
    ("unbiased_ce", lambda *a: unbiased_ce(*a)[None], r"`loss` has shape \(1,\), expected \(\)"),
    ("unbiased_ce", lambda *a: 1 / 0, r"your function raised ZeroDivisionError"),
    ("prototype_running_mean", lambda *a: running_mean(*a, overwrite=True),
     r"prototypes seen before\) failed.*`prototypes` differs in rows \[4, 5\]"),
    ("prototype_running_mean", lambda *a: running_mean(*a, gather=view_rows), r"`prototypes` differs in rows"),
    ("prototype_running_mean", lambda p, c, *a: (running_mean(p, c, *a)[0], c), r"`counts` differs in rows \[0, 1, 2, 3\].*: yours \[0, 0, 0, 0\], expected \["),
    ("prototype_running_mean", lambda *a: running_mean(*a)[0], r"returned 1 value\(s\), expected 2"),
    ("attraction", lambda f, l, p: attraction(f, l, p) * 2, r"`loss` differs"),
    ("repulsion", lambda *a: repulsion(*a, gather=view_rows), r"several images\) failed.*`loss` differs"),
    ("ucd_loss", lambda *a: ucd_loss(*a, uncertainty=False), r"`loss` differs"),
    ("ucd_loss", lambda f, o, q, l, t=0.07: ucd_loss(f, o, q, l), r"temperature 0.5\) failed.*`loss` differs"),
    ("ucd_loss", lambda *a: ucd_loss(*a, detach_copies=False), r"the values match but the gradient w.r.t. `features` differs"),
]


@pytest.mark.parametrize("name, learner, message", WRONG, ids=[f"{name}-{index}" for index, (name, _, _) in enumerate(WRONG)])
def test_each_check_fails_a_wrong_implementation_with_a_clear_message(name, learner, message, capsys):
    check = CHECKS[name][0]
    assert check(learner) is False
    printed = capsys.readouterr().out
    assert printed.startswith(f"✗ {name}: case ") and "inputs: " in printed
    assert re.search(message, printed, re.DOTALL), printed
    with pytest.raises(exercises.ExerciseCheckError, match=re.escape(printed.strip().splitlines()[-1].strip())):
        check(learner, raise_on_failure=True)
    assert capsys.readouterr().out == ""  # raised, not printed twice


def test_a_missing_solution_is_reported_as_not_implemented(capsys):
    def unfinished(*arguments):
        raise NotImplementedError()

    assert exercises.check_repulsion(unfinished) is False
    assert "not implemented yet" in capsys.readouterr().out


def test_messages_never_show_the_solution():
    """The checks' messages are built from shapes, values and fixed sentences; no formula."""
    text = Path(exercises.__file__).read_text()
    messages = re.findall(r'f?"[^"\n]*(?:differs|expected|gradient|raised)[^"\n]*"', text)
    assert messages
    assert not any(re.search(r"logsumexp|softmax|log\(|sqrt|Σ|mean of|q_i", message) for message in messages)


def test_checks_do_not_change_the_learners_inputs_or_depend_on_global_randomness():
    torch.manual_seed(0)
    first = exercises._ce_cases()
    torch.manual_seed(1)
    second = exercises._ce_cases()
    assert all(torch.equal(a[1]["logits"], b[1]["logits"]) for a, b in zip(first, second))


# ----- the student export -----

def notebook(*cells: tuple[str, str, dict]) -> dict:
    made = []
    for index, (kind, text, nbgrader) in enumerate(cells):
        cell = {"cell_type": kind, "id": f"c{index}", "metadata": {"nbgrader": nbgrader} if nbgrader else {},
                "source": text.splitlines(keepends=True)}
        if kind == "code":
            cell.update(outputs=[{"name": "stdout", "output_type": "stream", "text": ["hi\n"]}], execution_count=3)
        made.append(cell)
    return {"cells": made, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                       "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


SOLUTION = {"solution": True, "grade": False, "locked": False, "grade_id": "f", "schema_version": 3}
ANSWER = {"solution": True, "grade": True, "points": 1, "locked": False, "grade_id": "why", "schema_version": 3}
GRADED = {"solution": False, "grade": True, "points": 2, "locked": True, "grade_id": "f_check", "schema_version": 3}


def test_export_replaces_every_solution_and_keeps_every_other_cell(tmp_path):
    source = tmp_path / "solutions"
    source.mkdir()
    original = notebook(
        ("markdown", "# Title\n", {}),
        ("code", f"def f(x):\n    \"\"\"Doc.\"\"\"\n    {BEGIN}\n    return x + 1\n    {END}\n", SOLUTION),
        ("code", "assert check(f)\n", GRADED),
        ("markdown", f"**Why?**\n\n{BEGIN}\nBecause.\n{END}\n", ANSWER),
        ("markdown", "A solution cell without markers goes whole.\n", {**ANSWER, "grade_id": "whole"}),
        ("code", "print(1)\n", {}))
    (source / "ex.ipynb").write_text(json.dumps(original, indent=1))
    [(path, removed)] = export_notebooks(source, tmp_path / "student")
    assert path == tmp_path / "student" / "ex.ipynb" and removed == 3
    exported = json.loads(path.read_text())
    texts = ["".join(cell["source"]) for cell in exported["cells"]]
    assert texts[1] == 'def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
    assert texts[3] == "**Why?**\n\nYOUR ANSWER HERE\n" and texts[4] == "YOUR ANSWER HERE"
    assert not any(BEGIN in text or END in text or "return x + 1" in text or "Because" in text for text in texts)
    for before, after in zip(original["cells"], exported["cells"]):
        if after["cell_type"] == "code":
            assert after["outputs"] == [] and after["execution_count"] is None
        unchanged = {key: value for key, value in before.items() if key not in ("outputs", "execution_count")}
        if not before["metadata"].get("nbgrader", {}).get("solution"):
            assert {key: after[key] for key in unchanged} == unchanged  # the cell as it was
        assert after["metadata"] == before["metadata"] and after["id"] == before["id"]
    assert exported["metadata"] == original["metadata"]


def test_export_refuses_unbalanced_markers_and_writes_nothing(tmp_path):
    for name, text, problem in [("open", f"{BEGIN}\nx = 1\n", "is never closed"),
                                ("close", f"x = 1\n{END}\n", "without a '### BEGIN SOLUTION' before it"),
                                ("nested", f"{BEGIN}\n{BEGIN}\n{END}\n", "inside the region opened on line 1")]:
        source = tmp_path / name
        source.mkdir()
        (source / "a_fine.ipynb").write_text(json.dumps(notebook(("code", f"{BEGIN}\n1\n{END}\n", SOLUTION))))
        (source / "b_broken.ipynb").write_text(json.dumps(notebook(("markdown", "ok\n", {}), ("code", text, SOLUTION))))
        with pytest.raises(SolutionMarkerError, match=rf"b_broken.ipynb, cell 1 \(id c1\): .*{re.escape(problem)}"):
            export_notebooks(source, tmp_path / f"out-{name}")
        assert not (tmp_path / f"out-{name}").exists()  # nothing written, not even the fine notebook


def test_export_refuses_to_overwrite_the_solutions(tmp_path):
    (tmp_path / "ex.ipynb").write_text(json.dumps(notebook(("code", "1\n", {}))))
    with pytest.raises(ValueError, match="would be overwritten"):
        export_notebooks(tmp_path, tmp_path)


def test_command_line_exports_the_course_exercises_as_valid_nbformat(tmp_path, capsys):
    nbformat = pytest.importorskip("nbformat")
    assert EXERCISES, "notebooks/exercises/ has the exercise notebooks"
    assert main(["exercises", "export", "--out", str(tmp_path), "--notebooks", str(ROOT / "notebooks" / "exercises")]) == 0
    printed = capsys.readouterr().out
    for path in EXERCISES:
        solution = json.loads(path.read_text())
        exported = tmp_path / path.name
        assert f"{exported}: " in printed
        student = nbformat.read(exported, as_version=nbformat.NO_CONVERT)
        nbformat.validate(student)
        assert len(student.cells) == len(solution["cells"])
        for before, after in zip(solution["cells"], student.cells):
            text = "".join(before["source"])
            if BEGIN in text:
                assert BEGIN not in after.source and ("raise NotImplementedError()" in after.source
                                                      or "YOUR ANSWER HERE" in after.source)
            else:
                assert after.source == text


def test_command_line_reports_an_unbalanced_marker(tmp_path, capsys):
    (tmp_path / "bad.ipynb").write_text(json.dumps(notebook(("code", f"{BEGIN}\n", SOLUTION))))
    assert main(["exercises", "export", "--out", str(tmp_path / "out"), "--notebooks", str(tmp_path)]) == 2
    assert "is never closed" in capsys.readouterr().err


def test_student_notebook_leaves_a_notebook_without_solutions_unchanged():
    plain = notebook(("markdown", "# T\n", {}), ("code", "x = 1\n", {}))
    for cell in plain["cells"]:
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
    assert student_notebook(plain) == (plain, 0)


# ----- the exercise notebooks (run by nbval through `pytest`, which proves the solutions pass) -----

def cells_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def text_of(cell: dict) -> str:
    return "".join(cell["source"])


def test_pytest_collects_the_exercise_notebooks():
    options = (ROOT / "pyproject.toml").read_text()
    assert 'testpaths = ["tests", "notebooks"]' in options  # pytest recurses into notebooks/exercises/
    assert len(EXERCISES) >= 2


@pytest.mark.parametrize("path", EXERCISES, ids=[path.stem for path in EXERCISES])
def test_exercise_notebook_follows_the_course_conventions(path):
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(path, as_version=nbformat.NO_CONVERT))
    cells = cells_of(path)
    opening = text_of(cells[0])
    assert opening.startswith("# ") and "## What you will learn" in opening and "**Prerequisites:**" in opening
    assert f"({COLAB.format(path.stem)})" in opening and "colab-badge.svg" in opening
    setup = text_of(next(cell for cell in cells if cell["cell_type"] == "code"))
    assert "!pip install -q git+https://github.com/cslearn/cslearn" in setup and "DEVICE = course.device()" in setup
    assert any(cell["cell_type"] == "markdown" and "## What to remember" in text_of(cell) for cell in cells)
    for cell in cells:
        if cell["cell_type"] == "code" and not text_of(cell).startswith("# NBVAL_CHECK_OUTPUT"):
            assert cell["outputs"] == [] and cell["execution_count"] is None
        assert not re.search(r"/work/|/home/|/tmp/", text_of(cell))


def all_exercise_cells():
    return [(path.stem, cell) for path in EXERCISES for cell in cells_of(path)]


def test_exercise_cells_carry_nbgrader_metadata_with_unique_ids():
    graded = [(name, cell) for name, cell in all_exercise_cells() if "nbgrader" in cell["metadata"]]
    ids = [cell["metadata"]["nbgrader"]["grade_id"] for _, cell in graded]
    assert len(ids) == len(set(ids))
    checks = [cell for _, cell in graded if cell["metadata"]["nbgrader"]["grade"] and cell["cell_type"] == "code"]
    assert len(checks) >= 5
    for name, cell in graded:
        meta = cell["metadata"]["nbgrader"]
        assert meta["schema_version"] == 3
        text = text_of(cell)
        if meta["solution"]:
            assert text.count(BEGIN) == text.count(END) == 1 and not meta["locked"], (name, cell["id"])
        else:
            assert meta["grade"] and meta["locked"] and meta["points"] > 0 and BEGIN not in text
            assert "exercises.check_" in text and "raise_on_failure=True" in text


def test_there_are_at_least_six_exercises_with_solutions():
    titles = [text_of(cell) for _, cell in all_exercise_cells()
              if cell["cell_type"] == "markdown" and re.match(r"## Exercise \d+ ·", text_of(cell))]
    numbers = [int(re.match(r"## Exercise (\d+)", title).group(1)) for title in titles]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 6
    solutions = [cell for _, cell in all_exercise_cells() if cell["metadata"].get("nbgrader", {}).get("solution")]
    assert len(solutions) >= len(numbers)


def test_instructors_guide_covers_every_notebook_and_exercise():
    guide = (ROOT / "INSTRUCTORS.md").read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")) + EXERCISES:
        assert f"`{path.stem}`" in guide, f"INSTRUCTORS.md does not mention {path.stem}"
    for name in CHECKS:
        assert f"check_{name}" in guide
    assert "python -m cslearn exercises export" in guide and "--estimate" in guide
