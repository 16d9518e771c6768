"""The command line: `python -m cslearn run | data check | tasks | methods`.

It maps flags onto the config dataclasses and prints what the package returns; nothing else.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence


def _value(text: str) -> Any:
    """`--set` values are JSON when they parse as JSON (numbers, true, null, lists), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


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

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="validate a downloaded dataset")
    check.add_argument("--dataset", required=True, choices=["voc", "ade"])
    check.add_argument("--root", required=True)

    tasks = commands.add_parser("tasks", help="list the tasks of a dataset")
    tasks.add_argument("--dataset", default="voc", choices=["toy", "voc", "ade"])
    commands.add_parser("methods", help="list the methods and their weighted terms")
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
    for assignment in args.set:
        key, separator, text = assignment.partition("=")
        if not separator:
            raise SystemExit(f"--set expects SECTION.KEY=VALUE, got {assignment!r}")
        overrides[key] = _value(text)
    try:
        return make_config(preset, args.dataset, overrides, method=args.method)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def command_run(args: argparse.Namespace) -> int:
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
    if args.dry_run:
        print(config.dumps())
        return 0
    from cslearn.checkpoints import RunDirectoryError
    from cslearn.data.errors import DatasetError

    try:
        history = run_protocol(config, run_dir, progress=not args.no_progress,
                               on_step_end=lambda entry: print(f"step {entry['step']} done in {entry['seconds']:.0f} s"))
    except (RunDirectoryError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_history(history, config.data.background_in_mean))
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
        print(f"{name:>8}: {terms}; init {method.classifier_init}{'; joint' if method.joint else ''}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return command_run(args)
    if args.command == "data":
        return command_data_check(args)
    if args.command == "tasks":
        return command_tasks(args)
    return command_methods(args)


if __name__ == "__main__":
    sys.exit(main())
