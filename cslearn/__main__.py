"""The command line: `python -m cslearn run | report | data check | data download | tasks | methods`.

It maps flags onto the config dataclasses and prints what the package returns; nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence


def _value(text: str) -> Any:
    """`--set` values are JSON when they parse as JSON (numbers, true, null, lists), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """`--set SECTION.KEY=VALUE` options as config overrides."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        if not separator:
            raise SystemExit(f"--set expects SECTION.KEY=VALUE, got {assignment!r}")
        overrides[key] = _value(text)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cslearn", description="Continual semantic segmentation.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run (or resume) a class-incremental experiment")
    run.add_argument("--dataset", default="toy", choices=["toy", "voc", "ade"])
    run.add_argument("--task", default=None, help="e.g. 15-1, 15-5, 10-1, 100-50 (default: 15-1, ADE 100-50)")
    run.add_argument("--setting", default="overlapped", choices=["overlapped", "disjoint"])
    run.add_argument("--method", default="mib", help="ft, joint, lwf, lwf-mc, ilt, mib, ...")
    run.add_argument("--preset", default=None, choices=["fast", "paper", "colab"],
                     help="default: fast on toy, paper on voc/ade")
    run.add_argument("--root", default=None, help="dataset folder (voc, ade)")
    run.add_argument("--index-dir", default=None, help="folder of MiB's per-step .npy index files")
    run.add_argument("--run-dir", default=None, help="default: runs/<dataset>-<task>-<setting>-<method>-<preset>")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    run.add_argument("--epochs", type=int, default=None, help="epochs per step (all steps)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="any config field, e.g. --set train.lr=0.02 --set data.num_workers=2")
    run.add_argument("--dry-run", action="store_true", help="print the resolved configuration and stop")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--estimate", action="store_true",
                     help="measure a few iterations and print the hours per step (always done by the colab preset)")

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="validate a downloaded dataset")
    check.add_argument("--dataset", required=True, choices=["voc", "ade"])
    check.add_argument("--root", required=True)
    fetch = data_commands.add_parser("download", help="download, verify, extract and check a dataset")
    fetch.add_argument("dataset", choices=["voc", "ade", "mib-index"])
    fetch.add_argument("--root", required=True, help="dataset folder (archives go to ROOT/downloads)")
    fetch.add_argument("--mirror", action="append", default=None, metavar="URL",
                       help="base URL to use instead of the built-in mirrors (repeatable; the file name is appended)")
    fetch.add_argument("--keep-archives", action="store_true", help="keep the archives after extraction")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")

    tasks = commands.add_parser("tasks", help="list the tasks of a dataset")
    tasks.add_argument("--dataset", default="voc", choices=["toy", "voc", "ade"])
    commands.add_parser("methods", help="list the methods and their weighted terms")

    ablate = commands.add_parser("ablate", help="a method with loss terms dropped or reweighted, over seeds")
    ablate.add_argument("--method", required=True, help="the method to take apart, e.g. mib+sdr")
    ablate.add_argument("--task", default="15-1")
    ablate.add_argument("--dataset", default="toy", choices=["toy", "voc", "ade"])
    ablate.add_argument("--preset", default=None, choices=["fast", "paper", "colab"],
                        help="default: fast on toy, paper on voc/ade")
    ablate.add_argument("--drop", default="", metavar="TERM,TERM+TERM",
                        help="one variant per entry without that term ('a+b' drops both)")
    ablate.add_argument("--sweep", action="append", default=[], metavar="TERM=V1,V2",
                        help="one variant per value of a term's weight (or TERM.OPTION=...); repeatable")
    ablate.add_argument("--seeds", type=int, default=1)
    ablate.add_argument("--out", default=None, help="default: runs/ablation-<method>-<dataset>-<task>")
    ablate.add_argument("--root", default=None, help="dataset folder (voc, ade)")
    ablate.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="any config field for every run, e.g. --set train.epochs=2")
    ablate.add_argument("--no-progress", action="store_true")

    exercises = commands.add_parser("exercises", help="instructor tools for notebooks/exercises (INSTRUCTORS.md)")
    exercise_commands = exercises.add_subparsers(dest="exercises_command", required=True)
    export = exercise_commands.add_parser("export", help="write student versions: solutions replaced, outputs cleared")
    export.add_argument("--out", required=True, metavar="DIR", help="folder for the student notebooks")
    export.add_argument("--notebooks", default="notebooks/exercises", metavar="DIR_OR_FILE",
                        help="the solution notebooks (default: notebooks/exercises)")

    report = commands.add_parser("report", help="runs grouped by seed (mean ± std) beside the published numbers")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default=None, metavar="FILE.csv", help="also write the table as CSV")
    report.add_argument("--plot", default=None, metavar="FILE.png", help="plot mIoU per step (seed spread as a band)")
    report.add_argument("--plot-metric", default="all", choices=["old", "new", "all", "old_bg", "all_bg"],
                        help="the class group plotted (default: all, without background)")
    return parser


def config_from_args(args: argparse.Namespace):
    from cslearn.config import make_config

    preset = args.preset or ("fast" if args.dataset == "toy" else "paper")
    task = args.task or ("100-50" if args.dataset == "ade" else "15-1")
    overrides: dict[str, Any] = {"data.task": task, "data.setting": args.setting, "train.device": args.device}
    if args.root is not None:
        overrides["data.root"] = args.root
    if args.index_dir is not None:
        overrides["data.index_dir"] = args.index_dir
    if args.epochs is not None:
        overrides.update({"train.epochs": args.epochs, "train.epochs_incremental": args.epochs})
    if args.seed is not None:
        overrides["train.seed"] = args.seed
    overrides.update(_assignments(args.set))
    try:
        return make_config(preset, args.dataset, overrides, method=args.method)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def command_run(args: argparse.Namespace) -> int:
    from cslearn.config import describe
    from cslearn.continual import run_protocol
    from cslearn.methods import get_method
    from cslearn.metrics import format_history
    from cslearn.protocol import Conventions, get_task

    config = config_from_args(args)
    try:
        task = get_task(config.data.dataset, config.data.task, config.data.order)
        method = get_method(config.method).for_task(task)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    run_dir = Path(args.run_dir or f"runs/{config.data.dataset}-{config.data.task}-{config.data.setting}"
                                   f"-{config.method}-{config.preset}")
    conventions = Conventions(config.data.train_void, config.data.test_future, config.data.ade_class0,
                              config.data.background_in_mean)
    print(f"task {task.dataset} {task.name} ({config.data.setting}): classes per step {task.classes_per_step}")
    print(f"method {method.name}: steps >= 1 use " + " + ".join(f"{t.weight:g}*{t.name}" for t in method.terms)
          + f"; new classifier init: {method.classifier_init}")
    print(f"conventions: {conventions.describe()}")
    print(f"run directory: {run_dir}")
    print(f"settings (preset {config.preset}):")
    for line in describe(config):
        print(f"  {line}")
    from cslearn.checkpoints import RunDirectoryError
    from cslearn.data.errors import DatasetError

    if args.estimate or (config.preset == "colab" and not args.dry_run):
        try:
            print(estimate_run(config, task, method.joint), flush=True)
        except DatasetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.dry_run:
        print(config.dumps())
        return 0

    try:
        history = run_protocol(config, run_dir, progress=not args.no_progress,
                               on_step_end=lambda entry: print(f"step {entry['step']} done in {entry['seconds']:.0f} s"))
    except (RunDirectoryError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_history(history, config.data.background_in_mean))
    if history and int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 writes
        from cslearn.results import compare, format_comparison, write_comparison

        comparison = compare(history, config)
        print(format_comparison(comparison))
        write_comparison(comparison, run_dir)
    return 0


def estimate_run(config, task, joint: bool) -> str:
    """Hours per step on this machine (`cslearn.estimate`), from the images each step trains on."""
    from cslearn.continual import resolve_device
    from cslearn.data.sources import StepData
    from cslearn.estimate import estimate_hours, format_estimate
    from cslearn.protocol import get_task

    train_task = get_task(task.dataset, "offline", config.data.order) if joint else task
    data = StepData(config.data)
    images = [len(data.train_dataset(train_task, step)) for step in range(train_task.num_steps)]
    device = resolve_device(config.train.device)
    return format_estimate(estimate_hours(config, train_task.classes_per_step, images, device), device)


def command_report(args: argparse.Namespace) -> int:
    from cslearn.results import format_report, group_runs, load_run, plot_report, write_report_csv

    runs = []
    for run_dir in args.run_dirs:
        try:
            runs.append(load_run(run_dir))
        except ValueError as error:
            print(f"skipped: {error}", file=sys.stderr)
    if not runs:
        print("error: no run directory with a finished step", file=sys.stderr)
        return 2
    groups = group_runs(runs)
    print(format_report(groups))
    if args.out:
        write_report_csv(groups, args.out)
        print(f"table written to {args.out}")
    if args.plot:
        plot_report(groups, args.plot, args.plot_metric)
        print(f"plot written to {args.plot}")
    return 0


def command_data_check(args: argparse.Namespace) -> int:
    from cslearn.data.check import check_dataset, format_report
    from cslearn.data.errors import DatasetError

    try:
        report = check_dataset(args.dataset, args.root)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 1 if report["problems"] else 0


def command_data_download(args: argparse.Namespace) -> int:
    from cslearn.data.download import DownloadError, download_dataset, format_download_report
    from cslearn.data.errors import DatasetError

    try:
        result = download_dataset(args.dataset, args.root, mirrors=args.mirror, progress=not args.no_progress,
                                  keep_archives=args.keep_archives, log=lambda line: print(line, file=sys.stderr))
    except (DownloadError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_download_report(result))
    return 1 if result["problems"] else 0


def command_tasks(args: argparse.Namespace) -> int:
    from cslearn.protocol import NAMED_TASKS, get_task

    for name in NAMED_TASKS[args.dataset]:
        task = get_task(args.dataset, name)
        print(f"{name:>8}: {task.num_steps} steps, classes per step {task.classes_per_step}")
    print("any other 'B-I' (B classes, then steps of I) or 'A-B-C' (explicit step sizes) also works")
    return 0


def command_methods(_: argparse.Namespace) -> int:
    from cslearn.methods import METHODS

    for name, method in METHODS.items():
        terms = " + ".join(f"{term.weight:g}*{term.name}" for term in method.terms)
        rewriter = f"; targets rewritten by {method.target_rewriter}" if method.target_rewriter else ""
        print(f"{name:>12}: {terms}; init {method.classifier_init}{rewriter}{'; joint' if method.joint else ''}")
    return 0


def command_ablate(args: argparse.Namespace) -> int:
    from cslearn import ablation
    from cslearn.checkpoints import RunDirectoryError
    from cslearn.data.errors import DatasetError

    sweep = {}
    for entry in args.sweep:
        key, separator, values = entry.partition("=")
        if not separator or not values:
            raise SystemExit(f"--sweep expects TERM=V1,V2,..., got {entry!r}")
        sweep[key] = [_value(value) for value in values.split(",")]
    overrides = _assignments(args.set)
    if args.root is not None:
        overrides["data.root"] = args.root
    preset = args.preset or ("fast" if args.dataset == "toy" else "paper")
    out = args.out or f"runs/ablation-{ablation.folder_name(args.method)}-{args.dataset}-{args.task}"
    drop = [name for name in args.drop.split(",") if name]
    try:
        specs = ablation.variants(args.method, drop, sweep)
        print(f"{len(specs)} variants x {args.seeds} seed(s) -> {out}")
        for spec in specs:
            print(f"  {spec}")
        table = ablation.run_grid(
            args.method, args.task, dataset=args.dataset, drop=drop, sweep=sweep, seeds=args.seeds,
            preset=preset, overrides=overrides, out=out, progress=not args.no_progress,
            on_run_end=lambda spec, seed, history: print(
                f"done: {spec} seed {seed}: all-mIoU {100 * history[-1]['summary']['all']:.1f}%", flush=True))
    except (KeyError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    except (RunDirectoryError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    last = table[table.step == table.step.max()]
    summary = last.pivot_table(index="variant", columns="group", values="miou", aggfunc=["mean", "std"])
    print((summary * 100).round(1).to_string())
    print(f"written: {out}/ablation.csv, terms.csv, heatmap.png, curves.png")
    return 0


def command_exercises(args: argparse.Namespace) -> int:
    from cslearn.export import SolutionMarkerError, export_notebooks

    try:
        written = export_notebooks(args.notebooks, args.out)
    except (SolutionMarkerError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, solutions in written:
        print(f"{path}: {solutions} solution(s) removed")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return command_run(args)
    if args.command == "data":
        return command_data_download(args) if args.data_command == "download" else command_data_check(args)
    if args.command == "tasks":
        return command_tasks(args)
    if args.command == "report":
        return command_report(args)
    if args.command == "ablate":
        return command_ablate(args)
    if args.command == "exercises":
        return command_exercises(args)
    return command_methods(args)


if __name__ == "__main__":
    sys.exit(main())
