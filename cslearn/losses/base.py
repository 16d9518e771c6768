"""The contract between the training loop and the loss terms.

A loss term is a small callable that reads a `Batch` and returns a scalar. The training loop
builds one `Batch` per iteration: it runs the current model once and the frozen old model once
(under no_grad) and hands both outputs to every term, so no term ever runs a model itself.

Life cycle of a step (driven by `cslearn.objective.Objective`, called by `cslearn.continual`):
1. state carried over from the previous step is loaded (`load_state_dict`);
2. `begin_step(context)` once, with the models and the step's loader (PLOP's threshold pass,
   SDR's prototype bank growing to the new classes);
3. per iteration: the target rewriter (PLOP's pseudo-labels) may replace `batch.targets`; then
   `observe(batch)` under no_grad for every term and shared state, also for terms that are not
   in the loss at this step (SDR accumulates prototypes at step 0); then the weighted loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Optional

import torch

from cslearn.models.output import SegOutput

from cslearn.protocol import IGNORE_INDEX  # noqa: F401 (re-exported; defined once in protocol)


@dataclass
class Batch:
    """Everything a loss term may look at for one training iteration.

    images:   (B, 3, H, W) float, normalised.
    targets:  (B, H, W) int64 channel indices of the current step; 0 = background (which
              absorbs old and future classes, the background shift), 255 = ignore.
    out:      current model output; out.logits is (B, num_old + num_new, H, W).
    old:      frozen previous-step model output (computed once under no_grad), or None at
              step 0; old.logits is (B, num_old, H, W).
    num_old:  number of old output channels, background included (|O| in methods.md); 0 at step 0.
    num_new:  number of channels added at this step (at step 0: all step-0 channels).
    step:     the step index t.
    original_targets: the targets before any target rewriter (PLOP's pseudo-labels), (B, H, W);
              equal to `targets` when the method has no rewriter.
    extras:   named tensors a rewriter passes to terms, e.g. "image_weights" (B,) (PLOP's
              adaptive factor).
    """

    images: torch.Tensor
    targets: torch.Tensor
    out: SegOutput
    old: Optional[SegOutput]
    num_old: int
    num_new: int
    step: int
    original_targets: Optional[torch.Tensor] = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.original_targets is None:
            self.original_targets = self.targets

    @property
    def num_seen(self) -> int:
        return self.num_old + self.num_new


@dataclass
class StepContext:
    """What `begin_step` may use: the step's models and its (augmented) training loader."""

    step: int
    num_old: int
    num_new: int
    model: torch.nn.Module
    old_model: Optional[torch.nn.Module]
    train_loader: Iterable
    device: torch.device
    amp: bool = False


class SharedState:
    """State that several terms of one method read, updated once per iteration and carried
    across steps (SDR's class prototypes). Terms declare it in `shared_state`; the objective
    creates one instance per name and gives every term the same `shared` dict."""

    def begin_step(self, context: StepContext) -> None:
        pass

    def observe(self, batch: "Batch") -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class MissingOldModelError(RuntimeError):
    """A term that distils from the previous model was called without one."""


class LossTerm:
    """Base class of every loss term: `term(batch) -> scalar tensor`.

    Subclasses set `needs_old = True` when they read `batch.old`; `__call__` then refuses a
    batch without it. Terms that keep state across iterations and steps (SDR prototypes)
    override `state_dict` / `load_state_dict` so the state is checkpointed with the run.
    """

    name: ClassVar[str] = ""  # equals the term's key in TERMS (a test checks it)
    needs_old: ClassVar[bool] = False
    shared_state: ClassVar[dict[str, type[SharedState]]] = {}  # name -> class, created by the objective
    shared: dict[str, SharedState]  # set by the objective before begin_step

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} got unknown options {sorted(options)}")

    def __call__(self, batch: Batch) -> torch.Tensor:
        if self.needs_old and batch.old is None:
            raise MissingOldModelError(
                f"loss term '{self.name}' distils from the previous step's model, but the batch "
                f"has none (step {batch.step}); it can only be used at steps t >= 1"
            )
        return self.forward(batch)

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def begin_step(self, context: StepContext) -> None:
        """Called once before training a step (after any carried-over state is loaded)."""

    def observe(self, batch: Batch) -> None:
        """Called every iteration under no_grad, before the losses, even when inactive."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"loss term '{self.name}' has no state but got {sorted(state)}")


class TargetRewriter(LossTerm):
    """Replaces `batch.targets` at steps t >= 1 (PLOP's pseudo-labels); registered in REWRITERS.

    `__call__(batch)` returns the batch with new `targets` (and possibly `extras`), keeping
    `original_targets`. It shares the life cycle and checkpointing of loss terms.
    """

    needs_old: ClassVar[bool] = True

    def forward(self, batch: Batch) -> Batch:  # type: ignore[override]  # pragma: no cover - abstract
        raise NotImplementedError
