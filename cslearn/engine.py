"""One epoch of training and one evaluation pass: plain functions with explicit arguments.

The old model runs once per batch under no_grad; its output is shared by every loss term.
Taught in `01_segmentation_refresher` (evaluate) and `03_catastrophic_forgetting` (training).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Optional

import torch
from tqdm.auto import tqdm

from cslearn.losses.base import Batch
from cslearn.objective import Objective
from cslearn.metrics import ConfusionMatrix
from cslearn.models import Segmenter
from cslearn.models.output import predicted_labels


def poly_scheduler(optimizer: torch.optim.Optimizer, total_iterations: int, power: float = 0.9):
    """lr = lr0 * (1 - it / it_max) ** power, stepped every optimiser iteration (restarted per step)."""
    total = max(total_iterations, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / total) ** power)


def make_optimizer(model: torch.nn.Module, lr: float, momentum: float = 0.9, nesterov: bool = True,
                   weight_decay: float = 1e-4) -> torch.optim.SGD:
    """SGD with Nesterov momentum, weight decay on every parameter (BN included), as in MiB."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def train_one_epoch(model: torch.nn.Module, old_model: Optional[Segmenter], loader: Iterable,
                    objective: Objective, optimizer: torch.optim.Optimizer, scheduler, *, step: int,
                    num_old: int, num_new: int, device: torch.device, amp: bool = False,
                    scaler: Optional[torch.amp.GradScaler] = None, grad_accum: int = 1,
                    channels_last: bool = False, freeze_bn: bool = False, progress: bool = True,
                    description: str = "") -> dict[str, float]:
    """Train for one pass over `loader`; return the mean of the total and of every term.

    freeze_bn keeps every BatchNorm in eval mode (running statistics, no updates), as the
    reference's --fix_bn option does."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    sums: dict[str, float] = {}
    count = 0
    optimizer.zero_grad(set_to_none=True)
    batches = tqdm(loader, desc=description, leave=False, disable=not progress)
    for index, (images, targets) in enumerate(batches):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = model(images)
            old = None
            if old_model is not None:
                with torch.no_grad():
                    old = old_model(images)
            batch = objective.prepare(Batch(images=images, targets=targets, out=out, old=old,
                                            num_old=num_old, num_new=num_new, step=step))
            total, values = objective(batch)
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {total.item()} at step {step}, batch {index}: "
                                     f"terms {({k: v.item() for k, v in values.items()})}; lower the lr")
        loss = total / grad_accum
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if (index + 1) % grad_accum == 0:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        count += 1
        for name, value in {"total": total.detach(), **values}.items():
            sums[name] = sums.get(name, 0.0) + float(value)
        batches.set_postfix(loss=f"{sums['total'] / count:.3f}")
    return {name: total_value / max(count, 1) for name, total_value in sums.items()}


@torch.no_grad()
def evaluate(model: Segmenter, loader: Iterable, num_classes: int, device: torch.device,
             amp: bool = False, progress: bool = True, description: str = "eval") -> ConfusionMatrix:
    """Accumulate the confusion matrix of the argmax predictions over `loader`."""
    model.eval()
    matrix = ConfusionMatrix(num_classes, device=device)
    for images, targets in tqdm(loader, desc=description, leave=False, disable=not progress):
        images, targets = images.to(device), targets.to(device)
        with autocast(device, amp):
            logits = model(images).logits  # (B, C_seen, H, W)
        matrix.update(predicted_labels(logits), targets)
    return matrix
