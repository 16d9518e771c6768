"""What a run writes besides checkpoints: history.json, metrics.csv, per_class_iou.csv and
forgetting.csv (per class: best IoU at an earlier step minus the final IoU)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from cslearn.checkpoints import write_text
from cslearn.metrics import forgetting
from cslearn.protocol import Task


def load_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "history.json"
    history = json.loads(path.read_text()) if path.exists() else []
    for entry in history:  # JSON null back to NaN
        entry["iou"] = [math.nan if value is None else value for value in entry["iou"]]
        entry["summary"] = {key: math.nan if value is None else value for key, value in entry["summary"].items()}
    return history


def write_history(run_dir: Path, history: list[dict], task: Task, background_in_mean: bool) -> None:
    """history.json (everything), metrics.csv (one row per step), per_class_iou.csv (long format)."""
    run_dir = Path(run_dir)
    write_text(run_dir / "history.json", json.dumps(_json_safe(history), indent=1))
    groups = ["old", "new", "all", "old_bg", "all_bg"]
    summary_table = io.StringIO()
    writer = csv.writer(summary_table)
    writer.writerow(["step", *groups, "headline_includes_background"])
    for entry in history:
        writer.writerow([entry["step"], *[entry["summary"][g] for g in groups], background_in_mean])
    write_text(run_dir / "metrics.csv", summary_table.getvalue())
    per_class = io.StringIO()
    writer = csv.writer(per_class)
    writer.writerow(["step", "channel", "class_id", "iou"])
    order = task.class_of_channel()
    for entry in history:
        for channel, value in enumerate(entry["iou"]):
            writer.writerow([entry["step"], channel, order[channel], value])
    write_text(run_dir / "per_class_iou.csv", per_class.getvalue())
    if len(history) > 1:
        drop = forgetting([entry["iou"] for entry in history])
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["channel", "class_id", "final_iou", "forgetting"])
        for channel, value in enumerate(drop):
            writer.writerow([channel, order[channel], history[-1]["iou"][channel], value])
        write_text(run_dir / "forgetting.csv", table.getvalue())


def _json_safe(value):
    """NaN is not JSON: store it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value
