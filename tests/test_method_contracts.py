"""Every entry of METHODS, end to end: objectives at step 0 and 1, and a tiny two-step run."""
from __future__ import annotations

import io
import math

import pytest
import torch

from cslearn.config import make_config
from cslearn.continual import run_protocol
from cslearn.losses import TERMS
from cslearn.losses.base import Batch, StepContext
from cslearn.methods import METHODS, objective_for_step
from cslearn.models import build_model

NUM_OLD, NUM_NEW = 4, 2


def _batches(count=2, size=16):
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        images = torch.randn(2, 3, size, size, generator=generator)  # (B, 3, H, W)
        targets = torch.randint(0, NUM_OLD + NUM_NEW, (2, size, size), generator=generator)  # (B, H, W)
        targets[targets < NUM_OLD] = 0  # old classes are background in the labels
        targets[:, :2] = 255
        batches.append((images, targets))
    return batches


@pytest.mark.parametrize("name", list(METHODS))
def test_method_objectives_train_the_model_not_the_old_model(name):
    method = METHODS[name]
    torch.manual_seed(0)
    old_model = build_model("tiny", [NUM_OLD], width=4).freeze()
    model = build_model("tiny", [NUM_OLD, NUM_NEW], width=4)
    loader = _batches()
    for step in (0, 1):
        objective = objective_for_step(method, step)
        steps_old = None if step == 0 else old_model
        num_old, num_new = (NUM_OLD, NUM_NEW) if step else (0, NUM_OLD + NUM_NEW)  # one 6-class model
        objective.begin_step(StepContext(step=step, num_old=num_old, num_new=num_new,
                                         model=model, old_model=steps_old, train_loader=loader,
                                         device=torch.device("cpu")))
        images, targets = loader[0]
        out = model(images)
        with torch.no_grad():
            old = old_model(images) if step else None
        batch = objective.prepare(Batch(images=images, targets=targets, out=out, old=old,
                                        num_old=num_old, num_new=num_new, step=step))
        total, values = objective(batch)
        assert total.dim() == 0 and math.isfinite(total.item()), values
        expected = {"ce"} if step == 0 or method.joint else set(method.term_names)
        assert set(values) == expected
        model.zero_grad()
        total.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        assert all(p.grad is None for p in old_model.parameters())
        buffer = io.BytesIO()
        torch.save(objective.state_dict(), buffer)
        buffer.seek(0)
        restored = objective_for_step(method, step)
        restored.load_state_dict(torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_runs_the_protocol(tmp_path, name):
    config = make_config("fast", "toy", {"data.task": "15-5", "data.toy_train_images": 64, "data.toy_val_images": 16,
                                         "model.width": 4, "train.epochs": 1, "train.epochs_incremental": 1,
                                         "train.batch_size": 8, "train.device": "cpu"}, method=name)
    history = run_protocol(config, tmp_path, progress=False)
    assert len(history) == (1 if METHODS[name].joint else 2)
    for entry in history:
        assert all(math.isfinite(value) for epoch in entry["losses"] for value in epoch.values())


def test_methods_only_name_registered_terms():
    for method in METHODS.values():
        assert set(method.term_names) <= set(TERMS)
