"""A run's final numbers beside the published ones, each in the published row's convention.

What is compared (mIoU in percent after the run's **last** step, from `history[-1]["summary"]`,
whose groups are defined by `cslearn.metrics.class_groups`):

- a row with background **excluded** (MiB paper, UCD Table 1, SDR on ADE) gets the run's `old`,
  `new`, `all`: channel 0 (VOC background, ADE "other") left out of every mean;
- a row with background **included** (PLOP's own runs, SDR on VOC, UCD's MiB+SDR row) gets the
  run's `old_bg`, `new`, `all_bg`. There is no "new with background": channel 0 is a step-0
  class in every paper, so "new" is the same quantity in both conventions;
- PLOP's "avg" gets the mean over the run's steps of "all" after each step (same convention);
- the per-step groups of MiB's ADE table ("101-110", ...) get the mean IoU of those channels.

A run matches rows of the same method (a `METHODS` key), dataset, task and setting; an ADE run
with MiB's index files (`data.index_dir`) is in the "partition" setting.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from cslearn.protocol import get_task
from cslearn.results.published import Published, canonical_task, class_range, lookup


def run_setting(config: dict[str, Any]) -> str:
    """The published setting of a run: ADE with MiB's index files is MiB's fixed partition."""
    data = config["data"]
    if data["dataset"] == "ade" and data.get("index_dir"):
        return "partition"
    return data["setting"]


def _percent(value: Optional[float]) -> Optional[float]:
    return None if value is None or math.isnan(value) else 100.0 * value


def run_numbers(history: Sequence[dict], included: bool) -> dict[str, Optional[float]]:
    """The run's final old, new, all and its avg over steps, in percent, in one convention."""
    suffix = "_bg" if included else ""
    final = history[-1]["summary"]
    per_step = [_percent(entry["summary"][f"all{suffix}"]) for entry in history]
    per_step = [value for value in per_step if value is not None]
    return {"old": _percent(final[f"old{suffix}"]), "new": _percent(final["new"]),
            "all": _percent(final[f"all{suffix}"]), "avg": sum(per_step) / len(per_step) if per_step else None}


def channels_mean(iou: Sequence[Optional[float]], label: str) -> Optional[float]:
    """Mean IoU (percent) of the channels of a group label such as "101-110", NaN/None left out."""
    first, last = class_range(label)
    present = [value for value in iou[first:last + 1] if value is not None and not math.isnan(value)]
    return 100.0 * sum(present) / len(present) if present else None


def compare(history: Sequence[dict], config: Any) -> dict[str, Any]:
    """The run's final numbers beside every published row for its method, dataset, task and setting.

    `config`: a RunConfig or its dict (`config.json`). Returns a JSON-ready dict: the run's numbers
    in both conventions, one row per published record (for each printed number: published, run,
    difference = run - published, verification mark) and the caveats that apply to this run.
    """
    config = config.to_dict() if hasattr(config, "to_dict") else config
    data = config["data"]
    task = canonical_task(data["dataset"], data["task"])
    records = lookup(config["method"], data["dataset"], task, run_setting(config)) if history else []
    rows = [_row(record, history) for record in records]
    return {"method": config["method"], "dataset": data["dataset"], "task": task, "setting": run_setting(config),
            "preset": config.get("preset"), "seed": config.get("train", {}).get("seed"), "steps_done": len(history),
            "run": {"excluded": run_numbers(history, False) if history else {},
                    "included": run_numbers(history, True) if history else {}},
            "rows": rows, "caveats": caveats(history, config, records)}


def _row(record: Published, history: Sequence[dict]) -> dict[str, Any]:
    measured = run_numbers(history, record.background == "included")
    measured.update({label: channels_mean(history[-1]["iou"], label) for label, _ in record.groups})
    cells = [{"name": name, "published": published, "run": measured.get(name),
              "difference": None if measured.get(name) is None else measured[name] - published,
              "status": record.status_of(name)} for name, published in record.values().items()]
    return {"source": record.source, "paper_method": record.paper_method, "table": record.table,
            "background": record.background, "status": record.status, "flag": record.flag, "note": record.note,
            "rounding": record.rounding, "cells": cells}


def caveats(history: Sequence[dict], config: dict[str, Any], records: Sequence[Published]) -> list[str]:
    """What makes this run's numbers differ from the papers' besides the method itself."""
    data = config["data"]
    if not records:
        return [f"no published numbers for {config['method']} on {data['dataset']} {data['task']} "
                f"({run_setting(config)})"]
    found = []
    expected = 1 if config["method"] == "joint" else get_task(data["dataset"], data["task"]).num_steps
    if len(history) < expected:
        found.append(f"the run stopped after {len(history)} of {expected} steps: its numbers are not final")
    preset = config.get("preset")
    if preset == "colab":
        found.append("preset 'colab': the paper recipe with 12 images per BatchNorm batch and mixed precision; "
                     "expect some difference")
    elif preset != "paper":
        found.append(f"preset '{preset}' is not the papers' recipe: the numbers are not comparable in size")
    if preset in ("paper", "colab"):
        found.append("public reproductions differ from the papers by 1-2 points between environments, "
                     "and 15-1 / 10-1 vary strongly with the seed: compare means over seeds")
    if data.get("order"):
        found.append("custom class order: the papers use the numeric order (MiB's ADE rows average several)")
    if data["dataset"] == "ade" and data.get("ade_class0") != "score" and any(
            record.background == "included" for record in records):
        found.append("ADE class 0 was not scored (data.ade_class0='ignore'), so the run's background-included "
                     "numbers equal its excluded ones; PLOP scores class 0")
    if data["dataset"] == "ade" and data.get("ade_class0") == "score" and any(
            record.background == "excluded" for record in records):
        found.append("ADE class 0 was scored: its pixels count against the other classes, unlike in the "
                     "class-0-ignored rows (MiB, SDR)")
    return found


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def _number(value: Optional[float], rounding: float = 0.1) -> str:
    return "-" if value is None else f"{value:.{2 if rounding < 0.1 else 1}f}"


def format_comparison(comparison: dict[str, Any]) -> str:
    """Plain text: one line per published row, each number as "published / run"."""
    lines = [f"published numbers for {comparison['method']} on {comparison['dataset']} {comparison['task']} "
             f"({comparison['setting']}), mIoU % after the last step, each as paper / this run:"]
    for row in comparison["rows"]:
        cells = "  ".join(f"{cell['name']} {_number(cell['published'], row['rounding'])} / "
                          f"{_number(cell['run'], row['rounding'])}" for cell in row["cells"])
        background = "with bg" if row["background"] == "included" else "no bg"
        lines.append(f"  {row['source']:<4} {row['paper_method']:<9} {background:<7} {cells}  [{row['status']}]"
                     + (f"  FLAGGED: {row['flag']}" if row["flag"] else ""))
    lines += [f"  note: {caveat}" for caveat in comparison["caveats"]]
    return "\n".join(lines)


def comparison_rows(comparison: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Long format (comparison.csv): one line per published number."""
    for row in comparison["rows"]:
        for cell in row["cells"]:
            yield {"method": comparison["method"], "dataset": comparison["dataset"], "task": comparison["task"],
                   "setting": comparison["setting"], "source": row["source"], "paper_method": row["paper_method"],
                   "background": row["background"], "quantity": cell["name"], "published": cell["published"],
                   "run": _rounded(cell["run"]), "difference": _rounded(cell["difference"]), "status": cell["status"],
                   "flag": row["flag"]}


COMPARISON_COLUMNS = ("method", "dataset", "task", "setting", "source", "paper_method", "background", "quantity",
                      "published", "run", "difference", "status", "flag")


def write_comparison(comparison: dict[str, Any], run_dir: Path | str) -> None:
    """`comparison.json` (everything) and `comparison.csv` (one line per published number)."""
    from cslearn.checkpoints import write_text

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COMPARISON_COLUMNS)
    writer.writeheader()
    writer.writerows(comparison_rows(comparison))
    write_text(Path(run_dir) / "comparison.json", json.dumps(comparison, indent=1, ensure_ascii=False))
    write_text(Path(run_dir) / "comparison.csv", table.getvalue())
