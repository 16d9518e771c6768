"""The contract between the training loop and the loss terms.

A loss term is a small callable that reads a `Batch` and returns a scalar. The training loop
builds one `Batch` per iteration: it runs the current model once and the frozen old model once
(under no_grad) and hands both outputs to every term, so no term ever runs a model itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from cslearn.models.output import SegOutput

IGNORE_INDEX = 255


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
    """

    images: torch.Tensor
    targets: torch.Tensor
    out: SegOutput
    old: Optional[SegOutput]
    num_old: int
    num_new: int
    step: int

    @property
    def num_seen(self) -> int:
        return self.num_old + self.num_new


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

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"loss term '{self.name}' has no state but got {sorted(state)}")
