"""Loss ablations in one call: a method with terms removed or reweighted, over seeds.

    from cslearn import ablation
    table = ablation.run_grid("mib+sdr", task="15-1", drop=["attraction", "repulsion"],
                              sweep={"prototype_matching": [1e-1, 1e-2, 1e-3]}, seeds=3, out="runs/ablation")
    # or: python -m cslearn ablate --method mib+sdr --task 15-1 --drop attraction,repulsion \\
    #         --sweep prototype_matching=1e-1,1e-2,1e-3 --seeds 3 --out runs/ablation

Each variant is a method spec (`cslearn.methods.parse_method`): the method itself, one variant
per dropped term ("mib+sdr:-attraction"; "attraction+repulsion" drops both at once) and one per
swept weight or option value ("mib+sdr:prototype_matching=0.1"). Every variant x seed is a
normal run in `<out>/<variant>-seed<k>` (so an interrupted grid resumes where it stopped), and all
of them share step 0 through `<out>/step0-cache`: step 0 is plain CE for every variant. A variant
that trains exactly what an earlier one trains (a swept weight equal to the method's own) is not
trained again: its rows repeat that run's figures under its own name.

Outputs in `out`: `ablation.csv` (one row per variant x seed x step x class group), `terms.csv`
(the mean value of every loss term per variant x seed x step, raw and weighted, to see which
term dominates), `heatmap.png` (final old/new/all mIoU per variant, mean over seeds) and
`curves.png` (mIoU per step, the band is the seed spread). Taught in notebook 11_ablation_lab.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from cslearn.config import RunConfig, make_config
from cslearn.continual import run_protocol
from cslearn.methods import Method, get_method
from cslearn.protocol import get_task

GROUPS = ("old", "new", "all", "old_bg", "all_bg")


def variants(method: str, drop: Sequence[str] = (), sweep: Optional[Mapping[str, Sequence[Any]]] = None) -> list[str]:
    """The method specs of the grid, the method itself first; each is validated here, so a typo
    in a term name fails before anything trains. `sweep` keys are term names (weights) or
    "term.option" (options)."""
    specs = [method]
    for dropped in drop:
        specs.append(f"{method}:" + ",".join(f"-{name}" for name in dropped.split("+")))
    for key, values in (sweep or {}).items():
        specs += [f"{method}:{key}={_text(value)}" for value in values]
    for spec in specs:
        get_method(spec)  # raises with the spec syntax on a bad name
    return list(dict.fromkeys(specs))  # in order, without duplicates


def _text(value: Any) -> str:
    """How a swept value is written in a spec: 0.1, 100, true / false (as course notebooks write them)."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def folder_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9+._=-]", "_", spec)


def variant_config(spec: str, seed: int, task: str, dataset: str, preset: str,
                   overrides: Optional[Mapping[str, Any]] = None) -> RunConfig:
    values = {"data.task": task, **(overrides or {})}
    values["train.seed"] = values.get("train.seed", 42) + seed
    return make_config(preset, dataset, values, method=spec)


def trains_with(spec: str, config: RunConfig) -> Method:
    """The method a spec trains with on the config's task, without its name. Two specs that give
    the same (a swept weight equal to the method's own, as prototype_matching=0.01 for mib+sdr)
    train the same model, so the grid trains it once and reports it under both names."""
    task = get_task(config.data.dataset, config.data.task, config.data.order)
    # for_task has applied the per-task weights and per-dataset options: what is left is the recipe.
    return dataclasses.replace(get_method(spec).for_task(task), name="", task_weights={}, dataset_options={})


def run_grid(method: str, task: str = "15-1", *, dataset: str = "toy", drop: Sequence[str] = (),
             sweep: Optional[Mapping[str, Sequence[Any]]] = None, seeds: int = 1, preset: str = "fast",
             overrides: Optional[Mapping[str, Any]] = None, out: Path | str = "runs/ablation",
             progress: bool = False, on_run_end: Optional[Callable[[str, int, list], None]] = None,
             figures: bool = True, specs: Optional[Sequence[str]] = None,
             run_dir_for: Optional[Callable[[RunConfig], Path]] = None, step0_cache: Optional[Path | str] = None):
    """Run (or resume, or reload) every variant x seed; return the tidy pandas DataFrame.

    `overrides` are config settings for every run ({"train.epochs": 2}); seed k trains with
    `train.seed` + k. `on_run_end(spec, seed, history)` is called after each run (a live plot).
    `specs` replaces the grid of `variants(method, drop, sweep)` by explicit method specs;
    `run_dir_for(config)` and `step0_cache` place the runs elsewhere than `out` (the course keeps
    them with its other runs, so a variant already run by a notebook is reloaded).
    """
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = list(specs) if specs is not None else variants(method, drop, sweep)
    for spec in specs:
        get_method(spec)
    rows, term_rows = [], []
    trained = []  # (seed, what the spec trains with, history): equal variants are trained once
    for seed in range(seeds):
        for spec in specs:
            config = variant_config(spec, seed, task, dataset, preset, overrides)
            resolved = trains_with(spec, config)
            history = next((done for done_seed, method, done in trained if done_seed == seed and method == resolved),
                           None)
            if history is None:
                directory = run_dir_for(config) if run_dir_for else out / f"{folder_name(spec)}-seed{seed}"
                history = run_protocol(config, directory, progress=progress,
                                       step0_cache=step0_cache if step0_cache is not None else out / "step0-cache")
                trained.append((seed, resolved, history))
            rows += result_rows(spec, seed, history)
            term_rows += term_rows_of(spec, seed, history, config)
            if on_run_end is not None:
                on_run_end(spec, seed, history)
    table = pd.DataFrame(rows, columns=["variant", "seed", "step", "group", "miou"])
    table.to_csv(out / "ablation.csv", index=False)
    terms = pd.DataFrame(term_rows, columns=["variant", "seed", "step", "term", "weight", "value", "weighted"])
    terms.to_csv(out / "terms.csv", index=False)
    if figures:
        import matplotlib.pyplot as plt

        for name, draw in (("heatmap.png", plot_heatmap), ("curves.png", plot_curves)):
            figure = draw(table)
            figure.savefig(out / name, dpi=120, bbox_inches="tight")
            plt.close(figure)
    return table


def result_rows(spec: str, seed: int, history: Sequence[dict]) -> list[tuple]:
    """(variant, seed, step, group, mIoU) for every step and class group of one run."""
    return [(spec, seed, entry["step"], group, entry["summary"][group]) for entry in history for group in GROUPS
            if entry["summary"].get(group) is not None and not math.isnan(entry["summary"][group])]  # no new at step 0


def term_rows_of(spec: str, seed: int, history: Sequence[dict], config: RunConfig) -> list[tuple]:
    """Per step, the mean over its epochs of every loss term (each epoch value is already a mean
    over its batches of equal size), with the term's weight at that step and the weighted value."""
    method = get_method(spec).for_task(get_task(config.data.dataset, config.data.task, config.data.order))
    weights = {term.name: term.weight for term in method.terms}
    rows = []
    for entry in history:
        epochs = entry.get("losses") or []
        for term in (epochs[0] if epochs else {}):
            if term == "total":
                continue
            value = sum(epoch[term] for epoch in epochs) / len(epochs)
            weight = 1.0 if entry["step"] == 0 or method.joint else weights.get(term, 1.0)  # step 0: plain CE
            rows.append((spec, seed, entry["step"], term, weight, value, weight * value))
    return rows


def plot_heatmap(table, groups: Sequence[str] = ("old", "new", "all")):
    """Final-step mIoU (%) per variant (rows) and class group (columns), mean over seeds."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    last = table[table.step == table.step.max()]
    grid = (last[last.group.isin(groups)].pivot_table(index="variant", columns="group", values="miou", aggfunc="mean")
            .reindex(index=list(dict.fromkeys(last.variant)), columns=list(groups)) * 100)
    figure, ax = plt.subplots(figsize=(1.6 * len(groups) + 3, 0.5 * len(grid) + 1.2))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "mIoU (%)"}, ax=ax)
    ax.set(xlabel="", ylabel="", title=f"after the last step (mean of {table.seed.nunique()} seed(s))")
    return figure


def plot_curves(table, groups: Sequence[str] = ("old", "new", "all")):
    """mIoU per step per variant, one panel per class group; the band is the seed spread (sd)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    figure, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), sharey=True, squeeze=False)
    data = table.assign(miou=table.miou * 100)
    for ax, group in zip(axes[0], groups):
        sns.lineplot(data=data[data.group == group], x="step", y="miou", hue="variant", marker="o",
                     errorbar="sd", ax=ax, legend=group == groups[-1])
        ax.set(title=group, ylabel="mIoU (%)")
    if len(table.variant.unique()) and axes[0][-1].get_legend() is not None:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.tight_layout()
    return figure
