"""The ablation lab's controls: a checkbox per loss term, a log-scale weight slider, a run button.

    lab = AblationLab("mib+sdr", "15-1")
    display(lab.widget)          # tick terms, move sliders, press "Run"
    lab.run()                    # the same without clicking: what a script or nbval does

A choice of terms and weights becomes a method spec (`spec_from_choices`): "mib+sdr:-attraction,
prototype_matching=0.1". Running it trains the method and the variant through `course.ablate`
(finished runs are reloaded) and redraws the per-step curves after each run. Notebook 11_ablation_lab.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

from cslearn import course
from cslearn.methods import get_method
from cslearn.protocol import get_task


def task_weights(method: str, task: str, dataset: str = "toy") -> dict[str, float]:
    """The weight of every term of `method` on `task` (with the reference's task-specific weights)."""
    return {term.name: term.weight for term in get_method(method).for_task(get_task(dataset, task)).terms}


def spec_from_choices(method: str, keep: Mapping[str, bool], weights: Mapping[str, float], task: str = "15-1",
                      dataset: str = "toy") -> str:
    """The method spec of a choice: unticked terms dropped, weights that differ from the
    method's own (on this task) written out; the method itself when nothing changed."""
    defaults = task_weights(method, task, dataset)
    unknown = sorted(set(keep) - set(defaults))
    if unknown:
        raise ValueError(f"'{method}' has no term {unknown}; its terms: {list(defaults)}")
    edits = [f"-{name}" for name in defaults if not keep.get(name, True)]
    edits += [f"{name}={weights[name]:.3g}" for name in defaults
              if keep.get(name, True) and name in weights and not math.isclose(weights[name], defaults[name])]
    return f"{method}:{','.join(edits)}" if edits else method


class AblationLab:
    """ipywidgets controls for one method on one task; `run()` trains the method and the chosen
    variant (course settings: FAST on the CPU, the real dataset on a GPU) and plots them live."""

    def __init__(self, method: str = "mib+sdr", task: str = "15-1", seeds: int = 1, dataset: Optional[str] = None) -> None:
        import ipywidgets as widgets

        self.method, self.task, self.seeds, self.dataset = method, task, seeds, dataset
        self.defaults = task_weights(method, task, dataset or ("toy" if course.FAST else "voc"))
        self.keep = {name: widgets.Checkbox(value=True, description=name, indent=False) for name in self.defaults}
        self.weights = {name: widgets.FloatLogSlider(value=weight, base=10, min=math.log10(weight) - 3,
                                                     max=math.log10(weight) + 2, step=0.25, description="weight",
                                                     readout_format=".2g")
                        for name, weight in self.defaults.items()}
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.output = widgets.Output()
        self.button.on_click(lambda _: self.run())
        rows = [widgets.HBox([self.keep[name], self.weights[name]]) for name in self.defaults]
        self.widget = widgets.VBox([widgets.HTML(f"<b>{method}</b> on {task}: untick a term to drop it, "
                                                 "move a slider to reweight it, then press Run"),
                                    *rows, self.button, self.output])
        self.table = None

    def spec(self) -> str:
        return spec_from_choices(self.method, {name: box.value for name, box in self.keep.items()},
                                 {name: slider.value for name, slider in self.weights.items()}, self.task,
                                 self.dataset or ("toy" if course.FAST else "voc"))

    def run(self):
        """Train (or reload) the method and the chosen variant; returns the tidy table."""
        import matplotlib.pyplot as plt
        import pandas as pd
        from IPython.display import display

        from cslearn.ablation import plot_curves, result_rows

        specs = list(dict.fromkeys([self.method, self.spec()]))
        rows: list[tuple] = []

        def redraw(spec: str, seed: int, history: list) -> None:
            rows.extend(result_rows(spec, seed, history))
            table = pd.DataFrame(rows, columns=["variant", "seed", "step", "group", "miou"])
            with self.output:
                self.output.clear_output(wait=True)
                figure = plot_curves(table)
                display(figure)
                plt.close(figure)

        self.button.disabled = True
        try:
            self.table = course.ablate(self.method, self.task, specs=specs, seeds=self.seeds, dataset=self.dataset,
                                       name=f"lab-{self.method}", on_run_end=redraw, figures=False)
        finally:
            self.button.disabled = False
        return self.table
