"""The baselines on the toy dataset, task 15-1 overlapped, `fast` preset.

    python benchmarks/toy_protocol.py [--runs DIR] [--methods joint,ft,lwf,ilt,mib] [--seeds 1]
    python benchmarks/toy_protocol.py --methods mib,mib+sdr,mib+ucd --seeds 3 --section toy_protocol_seeds

Trains every method for every seed (step 0 is trained once per seed and shared through the
step-0 cache), prints the per-method table (mean and spread over seeds), rewrites its section
of BENCHMARKS.md, and prints one JSON object with the figures as its last line. Targets:
joint all-mIoU >= 0.70; fine-tuning keeps <= 20 % of its step-0 old-class mIoU; MiB keeps
>= 50 % and beats LwF and ILT; mib+sdr and mib+ucd keep more old-class mIoU than mib.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cslearn.__main__ import _assignments
from cslearn.config import make_config
from cslearn.continual import run_protocol
from cslearn.protocol import get_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=None, help="keep run directories here (default: a temporary folder)")
    parser.add_argument("--methods", default="joint,ft,lwf,ilt,mib")
    parser.add_argument("--task", default="15-1")
    parser.add_argument("--setting", default="overlapped")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="any config field for every run, e.g. --set train.lr_incremental=0.01")
    parser.add_argument("--section", default="toy_protocol", help="the BENCHMARKS.md section to rewrite")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    overrides = _assignments(args.set)
    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="cslearn-bench-"))
    started = time.time()
    per_seed: dict[str, list[dict]] = {}
    for seed in range(args.seeds):
        for method in args.methods.split(","):
            config = make_config("fast", "toy", {"data.task": args.task, "data.setting": args.setting,
                                                 "train.device": "cpu", "train.seed": 42 + seed, **overrides},
                                 method=method)
            method_started = time.time()
            history = run_protocol(config, runs / f"{method}-seed{seed}", progress=False,
                                   step0_cache=runs / "step0-cache")
            first, last = history[0]["summary"], history[-1]["summary"]
            figures = {"step0_old": first["old"], "old": last["old"], "new": last["new"], "all": last["all"],
                       "all_bg": last["all_bg"], "retention": last["old"] / first["old"],
                       "seconds": time.time() - method_started}
            per_seed.setdefault(method, []).append(figures)
            print(f"seed {seed} {method:>12}: old {last['old']:.3f}  new {last['new']:.3f}  all {last['all']:.3f}  "
                  f"(retention {figures['retention']:.2f}, {figures['seconds']:.0f} s)", flush=True)
    results = {method: {key: statistics.mean(run[key] for run in runs_) for key in runs_[0]}
               for method, runs_ in per_seed.items()}
    for method, runs_ in per_seed.items():
        for key in ("old", "new", "all"):
            results[method][f"{key}_std"] = statistics.stdev(run[key] for run in runs_) if len(runs_) > 1 else 0.0
    total = time.time() - started
    checks = {  # only the checks whose methods ran are reported

        "joint_all>=0.70": results.get("joint", {}).get("all", 0) >= 0.70,
        "ft_retention<=0.20": results.get("ft", {}).get("retention", 1) <= 0.20,
        "mib_retention>=0.50": results.get("mib", {}).get("retention", 0) >= 0.50,
        "mib_beats_lwf_and_ilt": all(results.get("mib", {}).get("all", 0) > results.get(m, {}).get("all", 1)
                                     for m in ("lwf", "ilt")),
        "mib+sdr_old>mib_old": results.get("mib+sdr", {}).get("old", 0) > results.get("mib", {}).get("old", 1),
        "mib+ucd_old>mib_old": results.get("mib+ucd", {}).get("old", 0) > results.get("mib", {}).get("old", 1),
        "total<15min": total < 15 * 60,
    }
    needed = {"joint_all>=0.70": ["joint"], "ft_retention<=0.20": ["ft"], "mib_retention>=0.50": ["mib"],
              "mib_beats_lwf_and_ilt": ["mib", "lwf", "ilt"], "mib+sdr_old>mib_old": ["mib", "mib+sdr"],
              "mib+ucd_old>mib_old": ["mib", "mib+ucd"], "total<15min": []}
    checks = {name: ok for name, ok in checks.items() if all(m in results for m in needed[name])}
    if args.seeds > 1 or args.methods != parser.get_default("methods"):
        checks.pop("total<15min")  # the 15-minute budget is for the default five-method, one-seed run
    table = format_table(results, total, checks, args)
    print(table)
    if not args.no_write:
        write_section(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", table, args.section)
    if not args.runs:
        shutil.rmtree(runs, ignore_errors=True)
    print(json.dumps({"task": args.task, "setting": args.setting, "seeds": args.seeds, "results": results,
                      "per_seed": per_seed, "total_seconds": total, "checks": checks}))


def format_table(results: dict, total: float, checks: dict, args) -> str:
    base = get_task("toy", args.task).classes_per_step[0]  # background + the step-0 classes
    preset = "preset `fast`" + "".join(f", `{assignment}`" for assignment in args.set)
    lines = [f"Toy dataset, task {args.task} {args.setting}, {preset}, CPU "
             f"({torch.get_num_threads()} threads, {platform.processor() or platform.machine()}); "
             f"mIoU after the last step, background excluded; old = classes 1-{base - 1}, new = {base}-20; "
             f"retention = final old / step-0 old; {args.seeds} seed(s)"
             + (", mean ± standard deviation" if args.seeds > 1 else "") + ".", "",
             "| method | old | new | all | all (with bg) | retention | seconds per seed |", "|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        spread = (lambda key: f" ± {r[key + '_std']:.3f}") if args.seeds > 1 else (lambda key: "")
        lines.append(f"| {method} | {r['old']:.3f}{spread('old')} | {r['new']:.3f}{spread('new')} "
                     f"| {r['all']:.3f}{spread('all')} | {r['all_bg']:.3f} | {r['retention']:.2f} | {r['seconds']:.0f} |")
    command = " ".join(["python benchmarks/toy_protocol.py", *sys.argv[1:]])
    lines += ["", f"Total {total:.0f} s (step 0 trained once per seed and shared through the step-0 cache).",
              "Checks: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in checks.items()),
              "", f"Command: `{command}`"]
    return "\n".join(lines)


def write_section(path: Path, table: str, section: str) -> None:
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{table}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## Toy protocol: {section} (`benchmarks/toy_protocol.py`)\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
