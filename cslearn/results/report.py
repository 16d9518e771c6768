"""Many runs in one table: runs that differ only by seed are grouped, their final numbers
averaged (mean ± sample standard deviation over seeds), and the published rows of the same
method, dataset, task and setting printed beneath, each in the columns of its own convention
(background excluded: old / new / all; included: old+bg / new / all+bg).

Used by `python -m cslearn report RUN_DIR ...`; reads `config.json` and `history.json` only.
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

from cslearn.results.compare import caveats, run_setting
from cslearn.results.published import canonical_task, lookup

QUANTITIES = ("old", "new", "all", "old_bg", "all_bg")
HEADINGS = {"old": "old", "new": "new", "all": "all", "old_bg": "old+bg", "all_bg": "all+bg"}
# Settings that do not change what a run computes (besides the seed, which is what a group spans).
NOT_GROUPED = ("train.seed", "train.device", "data.num_workers", "data.root")
CSV_COLUMNS = ("kind", "method", "dataset", "task", "setting", "variant", "seeds", "runs", "steps",
               *[f"{q}_{s}" for q in QUANTITIES for s in ("mean", "std")],
               "source", "paper_method", "status", "flag", "note", "run_dirs")


def load_run(run_dir: Path | str) -> dict[str, Any]:
    """{"dir", "config", "history"} of a run directory; ValueError if it has no finished step."""
    from cslearn.reports import load_history

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run directory (no config.json)")
    history = load_history(run_dir)
    if not history:
        raise ValueError(f"{run_dir} has no finished step (no history.json entries)")
    return {"dir": str(run_dir), "config": json.loads((run_dir / "config.json").read_text()), "history": history}


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _mean_std(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    present = [value for value in values if value is not None and not math.isnan(value)]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


def group_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs whose configs agree except for NOT_GROUPED keys (and that finished as many steps) form
    a group: its seeds, mean and std of every final quantity (percent), per-step values, and the
    published rows. `variant` names the settings that tell groups apart beyond method/dataset/task/setting."""
    grouped: dict[str, list[dict]] = {}
    flats: dict[str, dict[str, Any]] = {}  # group key -> its settings as {"train.lr": 0.01, ..., "steps": 2}
    for run in runs:
        settings = {k: v for k, v in _flat(run["config"]).items() if k not in NOT_GROUPED}
        settings["steps"] = len(run["history"])
        key = json.dumps(settings, sort_keys=True)
        grouped.setdefault(key, []).append(run)
        flats[key] = settings
    shown = ("method", "data.dataset", "data.task", "data.setting")
    varying = sorted({k for flat in flats.values() for k in flat
                      if k not in shown and len({json.dumps(f.get(k)) for f in flats.values()}) > 1})
    groups = []
    for key, members in grouped.items():
        config = members[0]["config"]
        data = config["data"]
        group = {"method": config["method"], "dataset": data["dataset"],
                 "task": canonical_task(data["dataset"], data["task"]), "setting": run_setting(config),
                 "variant": ", ".join(f"{k}={flats[key].get(k)}" for k in varying),
                 "seeds": sorted(run["config"]["train"]["seed"] for run in members), "runs": len(members),
                 "steps": len(members[0]["history"]), "run_dirs": [run["dir"] for run in members],
                 "per_step": {q: [[100 * entry["summary"][q] for entry in run["history"]] for run in members]
                              for q in QUANTITIES}}  # runs x steps, NaN where a group is empty
        for quantity in QUANTITIES:
            group[quantity] = _mean_std([100 * run["history"][-1]["summary"][quantity] for run in members])
        group["published"] = lookup(group["method"], group["dataset"], group["task"], group["setting"])
        group["caveats"] = caveats(members[0]["history"], config, group["published"]) if group["published"] else []
        groups.append(group)
    return sorted(groups, key=lambda g: (g["dataset"], g["task"], g["setting"], g["method"], g["variant"]))


def _published_columns(record) -> dict[str, Optional[float]]:
    """A published row's numbers in the report's columns of its own convention."""
    if record.background == "included":
        return {"old_bg": record.old, "new": record.new, "all_bg": record.all}
    return {"old": record.old, "new": record.new, "all": record.all}


def _cell(mean: Optional[float], std: Optional[float] = None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "")


def format_report(groups: Sequence[dict[str, Any]]) -> str:
    """The table: one line per group of seeds, the published rows indented beneath it."""
    table = [["method", "dataset", "task", "setting", "seeds", *HEADINGS.values(), "source"]]
    footnotes: list[str] = []
    notes: dict[str, list[str]] = {}  # caveat -> the groups it applies to
    for group in groups:
        source = "this project" + (f" ({group['variant']})" if group["variant"] else "")
        table.append([group["method"], group["dataset"], group["task"], group["setting"],
                      ",".join(map(str, group["seeds"])), *[_cell(*group[q]) for q in QUANTITIES], source])
        for record in group["published"]:
            columns = _published_columns(record)
            label = f"{record.source} paper [{record.status}]"
            if record.flag:
                footnotes.append(f"[{len(footnotes) + 1}] {record.source} {record.paper_method} {record.dataset} "
                                 f"{record.task} {record.setting}: {record.flag}")
                label += f" flagged [{len(footnotes)}]"
            precision = 2 if record.rounding < 0.1 else 1
            table.append([f"  {record.paper_method}", "", "", "", "paper",
                          *["" if columns.get(q) is None else f"{columns[q]:.{precision}f}" for q in QUANTITIES],
                          label])
        for caveat in group["caveats"]:
            notes.setdefault(caveat, []).append(f"{group['method']} {group['task']} {group['setting']}")
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("mIoU % after the last step; mean ± sample std over seeds. old/new/all leave background "
                 "(ADE class 0) out of the mean, old+bg/all+bg count it; each paper row sits in the columns "
                 "of its own convention.")
    notes_text = [f"note ({'; '.join(labels) if len(labels) < len(groups) else 'every group'}): {caveat}"
                  for caveat, labels in notes.items()]
    return "\n".join(lines + footnotes + notes_text)


def report_rows(groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows: kind "run" (one per group) and "published" (numbers in their convention's columns)."""
    rows = []
    for group in groups:
        common = {key: group[key] for key in ("method", "dataset", "task", "setting")}
        row = {"kind": "run", **common, "variant": group["variant"], "seeds": " ".join(map(str, group["seeds"])),
               "runs": group["runs"], "steps": group["steps"], "run_dirs": " ".join(group["run_dirs"]),
               "source": "this project", "note": "; ".join(group["caveats"])}
        for quantity in QUANTITIES:
            mean, std = group[quantity]
            row[f"{quantity}_mean"] = None if mean is None else round(mean, 3)
            row[f"{quantity}_std"] = None if std is None else round(std, 3)
        rows.append(row)
        for record in group["published"]:
            rows.append({"kind": "published", **common, "source": record.source, "paper_method": record.paper_method,
                         "status": record.status, "flag": record.flag, "note": record.note,
                         **{f"{q}_mean": v for q, v in _published_columns(record).items()}})
    return rows


def write_report_csv(groups: Sequence[dict[str, Any]], path: Path | str) -> None:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(report_rows(groups))
    Path(path).write_text(table.getvalue())


def plot_report(groups: Sequence[dict[str, Any]], path: Path | str, quantity: str = "all") -> None:
    """mIoU per step, one line per group (mean over seeds), the seed spread (± std) as a band."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    tasks = {(group["dataset"], group["task"], group["setting"]) for group in groups}
    for group in groups:
        runs = group["per_step"][quantity]  # runs x steps
        steps = range(len(runs[0]))
        means = [_mean_std([run[step] for run in runs]) for step in steps]
        label = group["method"] + ("" if len(tasks) == 1 else f" {group['dataset']} {group['task']} {group['setting']}")
        label += f" ({group['variant']})" if group["variant"] else ""
        mean = [math.nan if m is None else m for m, _ in means]
        line, = axes.plot(list(steps), mean, marker="o", label=f"{label}, {group['runs']} seed(s)")
        if group["runs"] > 1:
            spread = [0.0 if s is None else s for _, s in means]
            axes.fill_between(list(steps), [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                              color=line.get_color(), alpha=0.2)
    background = "with" if quantity.endswith("_bg") else "without"
    axes.set(xlabel="step", ylabel=f"mIoU '{quantity}' (%), {background} background",
             title="mIoU after each step (band: ± std over seeds)")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
