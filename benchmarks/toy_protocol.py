"""The baselines on the toy dataset, task 15-1 overlapped, `fast` preset.

    python benchmarks/toy_protocol.py [--runs DIR] [--methods joint,ft,lwf,ilt,mib]

Trains every method (step 0 is trained once and shared through the step-0 cache), prints the
per-method table, rewrites the "toy protocol" section of BENCHMARKS.md, and prints one JSON
object with the figures as its last line. Targets (issue "Foundation"): joint all-mIoU >= 0.70;
fine-tuning keeps <= 20 % of its step-0 old-class mIoU; MiB keeps >= 50 % and beats LwF and ILT.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from cslearn.config import make_config
from cslearn.continual import run_protocol

SECTION_START, SECTION_END = "<!-- toy_protocol:start -->", "<!-- toy_protocol:end -->"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=None, help="keep run directories here (default: a temporary folder)")
    parser.add_argument("--methods", default="joint,ft,lwf,ilt,mib")
    parser.add_argument("--task", default="15-1")
    parser.add_argument("--setting", default="overlapped")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="cslearn-bench-"))
    started = time.time()
    results = {}
    for method in args.methods.split(","):
        config = make_config("fast", "toy", {"data.task": args.task, "data.setting": args.setting,
                                             "train.device": "cpu"}, method=method)
        method_started = time.time()
        history = run_protocol(config, runs / method, progress=False, step0_cache=runs / "step0-cache")
        first, last = history[0]["summary"], history[-1]["summary"]
        results[method] = {"step0_old": first["old"], "old": last["old"], "new": last["new"], "all": last["all"],
                           "all_bg": last["all_bg"], "retention": last["old"] / first["old"],
                           "seconds": time.time() - method_started}
        print(f"{method:>6}: old {last['old']:.3f}  new {last['new']:.3f}  all {last['all']:.3f}  "
              f"(retention {results[method]['retention']:.2f}, {results[method]['seconds']:.0f} s)", flush=True)
    total = time.time() - started
    checks = {
        "joint_all>=0.70": results.get("joint", {}).get("all", 0) >= 0.70,
        "ft_retention<=0.20": results.get("ft", {}).get("retention", 1) <= 0.20,
        "mib_retention>=0.50": results.get("mib", {}).get("retention", 0) >= 0.50,
        "mib_beats_lwf_and_ilt": all(results.get("mib", {}).get("all", 0) > results.get(m, {}).get("all", 1)
                                     for m in ("lwf", "ilt")),
        "total<15min": total < 15 * 60,
    }
    table = format_table(results, total, checks, args)
    print(table)
    if not args.no_write:
        write_section(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", table)
    if not args.runs:
        shutil.rmtree(runs, ignore_errors=True)
    print(json.dumps({"task": args.task, "setting": args.setting, "results": results,
                      "total_seconds": total, "checks": checks}))


def format_table(results: dict, total: float, checks: dict, args) -> str:
    lines = [f"Toy dataset, task {args.task} {args.setting}, preset `fast`, CPU "
             f"({torch.get_num_threads()} threads, {platform.processor() or platform.machine()}); "
             f"mIoU after the last step, background excluded; old = classes 1-15, new = 16-20; "
             f"retention = final old / step-0 old.", "",
             "| method | old | new | all | all (with bg) | retention | seconds |", "|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        lines.append(f"| {method} | {r['old']:.3f} | {r['new']:.3f} | {r['all']:.3f} | {r['all_bg']:.3f} "
                     f"| {r['retention']:.2f} | {r['seconds']:.0f} |")
    lines += ["", f"Total {total:.0f} s (step 0 trained once, shared by ft/lwf/ilt/mib through the step-0 cache).",
              "Checks: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in checks.items()),
              "", "Command: `python benchmarks/toy_protocol.py`"]
    return "\n".join(lines)


def write_section(path: Path, table: str) -> None:
    block = f"{SECTION_START}\n{table}\n{SECTION_END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION_START in text:
        text = re.sub(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Toy protocol (`benchmarks/toy_protocol.py`)\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
