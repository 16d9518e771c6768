"""Methods as data: a method is a list of weighted loss terms plus two optional behaviours.

    MiB = Method("mib", terms=(Term("unbiased_ce", 1), Term("unbiased_kd", 10)),
                 classifier_init="background")

An ablation is a one-liner: `METHODS["ilt"].without("feature_distillation")`,
`METHODS["mib"].with_weight("unbiased_kd", 1)`, `METHODS["lwf"].extend(Term("feature_distillation", 100))`.
Every method trains step 0 with plain cross-entropy (the reference protocol); its terms apply
at steps t >= 1. Weights are those of the reference implementations (see each entry).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from cslearn.losses import TERMS
from cslearn.losses.base import Batch, LossTerm
from cslearn.protocol import Task


@dataclass(frozen=True)
class Term:
    """One weighted loss term: `name` is a key of `cslearn.losses.TERMS`."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TERMS:
            raise ValueError(f"unknown loss term '{self.name}'; known terms: {', '.join(sorted(TERMS))}")


@dataclass(frozen=True)
class Method:
    """A continual-learning method: weighted terms for steps t >= 1, and how to start a step.

    classifier_init: "default" (PyTorch's init for the new classifier) or "background"
                     (MiB's background-based initialisation).
    joint:           train one step on all classes with all images (the upper bound).
    task_weights:    weights that the reference changes for specific tasks,
                     {(dataset, task steps name): {term: weight}}.
    """

    name: str
    terms: tuple[Term, ...]
    classifier_init: str = "default"
    joint: bool = False
    task_weights: Mapping[tuple[str, str], Mapping[str, float]] = field(default_factory=dict)

    def without(self, *names: str) -> "Method":
        self._require(names)
        kept = tuple(term for term in self.terms if term.name not in names)
        return dataclasses.replace(self, name=f"{self.name}-without-{'-'.join(names)}", terms=kept)

    def with_weight(self, name: str, weight: float) -> "Method":
        self._require([name])
        terms = tuple(dataclasses.replace(term, weight=weight) if term.name == name else term
                      for term in self.terms)
        return dataclasses.replace(self, name=f"{self.name}-{name}={weight:g}", terms=terms)

    def extend(self, *terms: Term) -> "Method":
        added_names = [term.name for term in terms]
        clash = [name for index, name in enumerate(added_names)
                 if name in self.term_names or name in added_names[:index]]
        if clash:
            raise ValueError(f"method '{self.name}' already has {clash}; use with_weight to change a weight")
        added = "+".join(term.name for term in terms)
        return dataclasses.replace(self, name=f"{self.name}+{added}", terms=self.terms + tuple(terms))

    @property
    def term_names(self) -> list[str]:
        return [term.name for term in self.terms]

    def for_task(self, task: Task) -> "Method":
        """The method with the reference's task-specific weights applied (MiB: KD 100 on 15-1)."""
        overrides = self.task_weights.get((task.dataset, _steps_name(task)), {})
        method = self
        for name, weight in overrides.items():
            method = dataclasses.replace(method.with_weight(name, weight), name=self.name)
        return method

    def _require(self, names) -> None:
        missing = [name for name in names if name not in self.term_names]
        if missing:
            raise ValueError(f"method '{self.name}' has no term {missing}; its terms: {self.term_names}")


STEP0_TERMS = (Term("ce", 1.0),)

_MIB_15_1 = {"unbiased_kd": 100.0}  # MiB#22, MiB#43 and MiBv2's argparser: lambda = 100 on VOC 15-1

METHODS: dict[str, Method] = {
    # Fine-tuning: plain CE on the current labels; old classes are background (the shift).
    "ft": Method("ft", terms=(Term("ce", 1.0),)),
    # Joint training on all classes at once: the upper bound.
    "joint": Method("joint", terms=(Term("ce", 1.0),), joint=True),
    # LwF (Li & Hoiem 2016) as configured in MiB's code: loss_kd = 100.
    "lwf": Method("lwf", terms=(Term("ce", 1.0), Term("kd", 100.0))),
    # LwF-MC (iCaRL's loss without exemplars): icarl_importance = 10.
    "lwf-mc": Method("lwf-mc", terms=(Term("bce", 1.0), Term("bce_distillation", 10.0))),
    # ILT (Michieli & Zanuttigh 2019): loss_kd = 100, loss_de = 100 on the backbone output.
    "ilt": Method("ilt", terms=(Term("ce", 1.0), Term("kd", 100.0), Term("feature_distillation", 100.0))),
    # MiB (Cermelli et al. 2020): unbiased CE + unbiased KD (10; 100 on VOC 15-1) + background init.
    "mib": Method("mib", terms=(Term("unbiased_ce", 1.0), Term("unbiased_kd", 10.0)),
                  classifier_init="background",
                  task_weights={("voc", "15-1"): _MIB_15_1, ("toy", "15-1"): _MIB_15_1}),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known methods: {', '.join(METHODS)}")
    return METHODS[name]


class Objective:
    """The weighted sum of a step's loss terms; returns the total and every term's value.

        total, values = objective(batch)   # values = {"unbiased_ce": 0.71, "unbiased_kd": 0.02}
    """

    def __init__(self, terms: tuple[Term, ...]) -> None:
        if not terms:
            raise ValueError("an objective needs at least one loss term (a method without terms cannot train)")
        self.weights = {term.name: term.weight for term in terms}
        self.terms: dict[str, LossTerm] = {term.name: TERMS[term.name](**dict(term.options)) for term in terms}

    @property
    def needs_old(self) -> bool:
        return any(term.needs_old for term in self.terms.values())

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: term(batch) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, {name: value.detach() for name, value in values.items()}

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: term.state_dict() for name, term in self.terms.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, term_state in state.items():
            if name not in self.terms:
                raise ValueError(f"checkpoint holds state for loss term '{name}', which this objective lacks")
            self.terms[name].load_state_dict(term_state)


def objective_for_step(method: Method, step: int) -> Objective:
    """Step 0 (and joint training) uses plain CE; later steps use the method's terms."""
    return Objective(STEP0_TERMS if step == 0 or method.joint else method.terms)


def _steps_name(task: Task) -> str:
    """"15-1" for any task whose steps are 16 classes then five single classes, etc."""
    sizes = task.classes_per_step
    base = sizes[0] - 1
    if len(sizes) == 1:
        return "offline"
    if len(set(sizes[1:])) == 1:
        return f"{base}-{sizes[1]}"
    return "-".join([str(base)] + [str(size) for size in sizes[1:]])
