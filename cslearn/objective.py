"""The objective of one step: the weighted sum of a method's loss terms, built from its `Term`s.

`cslearn.methods.objective_for_step(method, step)` builds the right one for a step; the training
loop (`cslearn.engine`) calls `prepare` and then the objective on every batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

import torch

from cslearn.losses import REWRITERS, TERMS
from cslearn.losses.base import Batch, LossTerm, SharedState, StepContext, TargetRewriter

if TYPE_CHECKING:
    from cslearn.methods import Term


class Objective:
    """The weighted sum of a step's loss terms; returns the total and every term's value.

        batch = objective.prepare(batch)   # rewrite targets (PLOP), let every term observe
        total, values = objective(batch)   # values = {"unbiased_ce": 0.71, "unbiased_kd": 0.02}

    `observers` are terms that are not in the loss at this step but keep state (SDR's prototype
    bank is filled at step 0). Shared states declared by the terms are created once here.
    """

    def __init__(self, terms: tuple[Term, ...], observers: tuple[Term, ...] = (),
                 rewriter: Optional[str] = None, rewriter_options: Optional[Mapping[str, Any]] = None) -> None:
        if not terms:
            raise ValueError("an objective needs at least one loss term (a method without terms cannot train)")
        self.weights = {term.name: term.weight for term in terms}
        self.terms: dict[str, LossTerm] = {term.name: TERMS[term.name](**dict(term.options)) for term in terms}
        self.observers: dict[str, LossTerm] = {term.name: TERMS[term.name](**dict(term.options))
                                               for term in observers if term.name not in self.weights}
        self.rewriter: Optional[TargetRewriter] = (REWRITERS[rewriter](**dict(rewriter_options or {}))
                                                   if rewriter is not None else None)
        self.shared: dict[str, SharedState] = {}
        for term in self._all_terms():
            for key, state_class in term.shared_state.items():
                self.shared.setdefault(key, state_class())
            term.shared = self.shared

    def _all_terms(self) -> list[LossTerm]:
        return [*self.terms.values(), *self.observers.values(), *([self.rewriter] if self.rewriter else [])]

    @property
    def needs_old(self) -> bool:
        return any(term.needs_old for term in self.terms.values()) or self.rewriter is not None

    def begin_step(self, context: StepContext) -> None:
        for state in self.shared.values():
            state.begin_step(context)
        for term in self._all_terms():
            term.begin_step(context)

    def prepare(self, batch: Batch) -> Batch:
        """Rewrite the targets (if the method has a rewriter and an old model exists), then let
        every shared state and term observe the batch, without gradients."""
        if self.rewriter is not None and batch.old is not None:
            batch = self.rewriter(batch)
        with torch.no_grad():
            for state in self.shared.values():
                state.observe(batch)
            for term in (*self.terms.values(), *self.observers.values()):
                term.observe(batch)
        return batch

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: term(batch) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, {name: value.detach() for name, value in values.items()}

    def state_dict(self) -> dict[str, dict]:
        terms = {name: term.state_dict() for name, term in {**self.terms, **self.observers}.items()}
        return {"terms": terms, "shared": {key: state.state_dict() for key, state in self.shared.items()},
                "rewriter": self.rewriter.state_dict() if self.rewriter is not None else {}}

    def load_state_dict(self, state: dict[str, dict], carry_over: bool = False) -> None:
        """Restore state. `carry_over=True` (a new step) loads what both objectives have and
        ignores the rest; otherwise (resuming inside a step) every entry must match."""
        terms = {**self.terms, **self.observers}
        for group, targets in (("terms", terms), ("shared", self.shared)):
            for name, entry in state.get(group, {}).items():
                if name in targets:
                    targets[name].load_state_dict(entry)
                elif not carry_over:
                    raise ValueError(f"checkpoint holds state for '{name}', which this objective lacks")
        if self.rewriter is not None and state.get("rewriter") and not carry_over:
            self.rewriter.load_state_dict(state["rewriter"])
