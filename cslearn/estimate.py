"""How long will a run take? A short measurement on this machine, projected to every step.

    python -m cslearn run --preset colab --dataset voc --root DIR --estimate   # prints, then trains
    python -m cslearn run ... --estimate --dry-run                             # prints only

`seconds_per_iteration` times a few real training iterations (forward, backward, optimiser step,
with the run's model, crop, batch, mixed precision and channels-last) on random images, after a
warm-up; an incremental iteration adds the frozen old model's forward pass. `estimate_hours`
multiplies by the iterations of each step (images of the step // batch, times the epochs).
Assumptions, printed with the figures: the data loader keeps up with the GPU, and the method's
loss terms cost what `benchmarks/loss_cost.py` measures (a few % of a step; BENCHMARKS.md), not
counted here; evaluation after each step is not counted.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from cslearn.config import RunConfig
from cslearn.engine import autocast, make_optimizer
from cslearn.models import build_model
from cslearn.protocol import IGNORE_INDEX


@dataclass
class StepEstimate:
    step: int
    images: int
    iterations: int  # optimiser iterations of micro-batches over all the step's epochs
    seconds_per_iteration: float

    @property
    def hours(self) -> float:
        return self.iterations * self.seconds_per_iteration / 3600


def seconds_per_iteration(config: RunConfig, classes_per_step: Sequence[int], device: torch.device,
                          with_old_model: bool, iterations: int = 3, warmup: int = 1) -> float:
    """Mean wall time of one training iteration (one micro-batch of `config.train.batch_size`
    crops) of the run's model on `device`, after `warmup` untimed iterations. Random weights: the
    cost does not depend on them, and nothing is downloaded."""
    options = {"width": config.model.width} if config.model.name == "tiny" else {}
    model = build_model(config.model.name, list(classes_per_step), output_stride=config.model.output_stride,
                        **options).to(device)
    old_model = copy.deepcopy(model).eval() if with_old_model else None
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, lr=1e-4)
    size, batch = config.data.crop_size, config.train.batch_size
    images = torch.randn(batch, 3, size, size, device=device)  # (B, 3, S, S)
    targets = torch.randint(0, sum(classes_per_step), (batch, size, size), device=device)  # (B, S, S)
    targets[:, :, ::50] = IGNORE_INDEX
    model.train()
    elapsed = 0.0
    for iteration in range(warmup + iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with autocast(device, config.train.amp):
            if old_model is not None:
                with torch.no_grad():
                    old_model(images)
            logits = model(images).logits  # (B, C, S, S)
            loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if iteration >= warmup:
            elapsed += time.perf_counter() - started
    return elapsed / iterations


def estimate_hours(config: RunConfig, classes_per_step: Sequence[int], images_per_step: Sequence[int],
                   device: torch.device, iterations: int = 3) -> list[StepEstimate]:
    """Measure step 0 and an incremental iteration once, then project every step."""
    step0 = seconds_per_iteration(config, classes_per_step[:1], device, False, iterations)
    later = (seconds_per_iteration(config, classes_per_step, device, True, iterations)
             if len(classes_per_step) > 1 else step0)
    estimates = []
    for step, images in enumerate(images_per_step):
        epochs = config.train.epochs if step == 0 else config.train.epochs_incremental
        per_epoch = images // config.train.batch_size  # drop_last, as in training
        estimates.append(StepEstimate(step, images, epochs * per_epoch, step0 if step == 0 else later))
    return estimates


def format_estimate(estimates: Sequence[StepEstimate], device: torch.device) -> str:
    lines = [f"estimated training time on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
             f"measured over a few iterations:"]
    for entry in estimates:
        lines.append(f"  step {entry.step}: {entry.images} images, {entry.iterations} iterations x "
                     f"{entry.seconds_per_iteration:.2f} s = {entry.hours:.2f} h")
    lines.append(f"  total {sum(entry.hours for entry in estimates):.1f} h (assumes the data loader keeps up; "
                 f"loss terms and evaluation not counted: see BENCHMARKS.md)")
    return "\n".join(lines)
