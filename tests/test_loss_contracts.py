"""Contract tests run on EVERY entry of TERMS: a term is tested the moment it is registered.

The batch factory gives what the training loop gives: current logits at input resolution
(H = W = 16) with named features at h = w = 4, the old model's outputs (no gradient), and targets
with background, new classes and 255 pixels (labels are constant on 4x4 blocks so terms that
read labels at feature resolution see every class, then 255 is sprinkled per pixel).
"""
from __future__ import annotations

from typing import Optional

import pytest
import torch

from cslearn.losses import TERMS, Batch, MissingOldModelError
from cslearn.models.output import SegOutput

SIZE, FEATURE_SIZE, BODY_CHANNELS, HEAD_CHANNELS = 16, 4, 8, 6

# (num_old, num_new, step): step 0, a usual step, a single new class, many classes (ADE-like).
SETTINGS = {
    "step0": (0, 3, 0),
    "step1": (3, 2, 1),
    "one_new_class": (4, 1, 2),
    "many_classes": (150, 1, 1),
}
NEEDS_OLD = [key for key, term in TERMS.items() if term.needs_old]
NO_OLD = [key for key, term in TERMS.items() if not term.needs_old]
# Terms that distil output logits on every pixel and read no labels (methods.md §2-3: KD, UNKD and
# LwF-MC's distillation average over all pixels), so 255 pixels are not ignored there on purpose.
DISTILS_EVERY_PIXEL = {"kd", "unbiased_kd", "bce_distillation"}


def seg_output(num_channels: int, batch_size: int, generator: torch.Generator,
               requires_grad: bool) -> SegOutput:
    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).requires_grad_(requires_grad)

    return SegOutput(
        logits=random(batch_size, num_channels, SIZE, SIZE),  # (B, C, H, W)
        features={
            "body": random(batch_size, BODY_CHANNELS, FEATURE_SIZE, FEATURE_SIZE),  # (B, 8, h, w)
            "pre_logits": random(batch_size, HEAD_CHANNELS, FEATURE_SIZE, FEATURE_SIZE),
            "logits_low": random(batch_size, num_channels, FEATURE_SIZE, FEATURE_SIZE),
        },
    )


def make_batch(setting: str, with_old: Optional[bool] = None, seed: int = 0,
               batch_size: int = 2) -> Batch:
    """A random batch of the given setting; old model outputs present iff num_old > 0."""
    num_old, num_new, step = SETTINGS[setting]
    generator = torch.Generator().manual_seed(seed)
    with_old = num_old > 0 if with_old is None else with_old
    labels = torch.tensor([0] + list(range(max(num_old, 1), num_old + num_new)))
    block_labels = labels[torch.randint(len(labels), (batch_size, FEATURE_SIZE, FEATURE_SIZE),
                                        generator=generator)]  # (B, h, w)
    block_labels[:, 0, :2] = labels[-1]  # every image shows a new class and (below) background
    block_labels[:, 1, :2] = 0
    scale = SIZE // FEATURE_SIZE
    targets = block_labels.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # (B, H, W)
    ignored = torch.rand(batch_size, SIZE, SIZE, generator=generator) < 0.15  # (B, H, W)
    targets = torch.where(ignored, torch.full_like(targets, 255), targets)
    return Batch(
        images=torch.randn(batch_size, 3, SIZE, SIZE, generator=generator),
        targets=targets,
        out=seg_output(num_old + num_new, batch_size, generator, requires_grad=True),
        old=seg_output(num_old, batch_size, generator, False) if with_old else None,
        num_old=num_old, num_new=num_new, step=step,
    )


def settings_for(key: str) -> list[str]:
    return [s for s in SETTINGS if SETTINGS[s][0] > 0 or not TERMS[key].needs_old]


CASES = [(key, setting) for key in TERMS for setting in settings_for(key)]


def current_tensors(batch: Batch) -> list[torch.Tensor]:
    return [batch.out.logits, *batch.out.features.values()]


def old_tensors(batch: Batch) -> list[torch.Tensor]:
    return [] if batch.old is None else [batch.old.logits, *batch.old.features.values()]


@pytest.mark.parametrize("key", TERMS)
def test_name_is_the_key(key):
    assert TERMS[key].name == key


@pytest.mark.parametrize("key", TERMS)
def test_unknown_option_raises_type_error(key):
    with pytest.raises(TypeError):
        TERMS[key](no_such_option=1)


@pytest.mark.parametrize("key", TERMS)
def test_state_dict_round_trip(key):
    term = TERMS[key]()
    term(make_batch("step1"))
    TERMS[key]().load_state_dict(term.state_dict())


@pytest.mark.parametrize("key,setting", CASES)
def test_finite_float32_scalar_with_gradient_to_current_outputs_only(key, setting):
    batch = make_batch(setting)
    targets_before = batch.targets.clone()
    loss = TERMS[key]()(batch)
    assert loss.shape == () and loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert torch.equal(batch.targets, targets_before)  # no in-place change (MiB commit 1c58983)
    loss.backward()
    assert any(t.grad is not None and t.grad.abs().sum() > 0 for t in current_tensors(batch))
    assert all(not t.requires_grad and t.grad is None for t in old_tensors(batch))


@pytest.mark.parametrize("key", NEEDS_OLD)
def test_refuses_a_missing_old_model(key):
    with pytest.raises(MissingOldModelError):
        TERMS[key]()(make_batch("step1", with_old=False))


@pytest.mark.parametrize("key", NO_OLD)
def test_runs_without_an_old_model(key):
    assert torch.isfinite(TERMS[key]()(make_batch("step1", with_old=False)))


@pytest.mark.parametrize("key,setting", [case for case in CASES
                                         if case[0] not in DISTILS_EVERY_PIXEL])
def test_ignores_pixels_labelled_255(key, setting):
    batch = make_batch(setting)
    loss = TERMS[key]()(batch)
    ignored = (batch.targets == 255).unsqueeze(1).expand_as(batch.out.logits)  # (B, C, H, W)
    assert ignored.any()
    with torch.no_grad():
        batch.out.logits[ignored] = 50 * torch.randn(int(ignored.sum()))
    assert torch.allclose(TERMS[key]()(batch), loss, rtol=1e-5, atol=1e-6)


def to_bfloat16(batch: Batch) -> Batch:
    def convert(output: Optional[SegOutput], requires_grad: bool) -> Optional[SegOutput]:
        if output is None:
            return None
        cast = {name: t.detach().bfloat16().requires_grad_(requires_grad)
                for name, t in output.features.items()}
        return SegOutput(output.logits.detach().bfloat16().requires_grad_(requires_grad), cast)

    return Batch(batch.images, batch.targets, convert(batch.out, True), convert(batch.old, False),
                 batch.num_old, batch.num_new, batch.step)


def to_float32(batch: Batch) -> Batch:
    def convert(output: Optional[SegOutput]) -> Optional[SegOutput]:
        if output is None:
            return None
        return SegOutput(output.logits.detach().float(),
                         {name: t.detach().float() for name, t in output.features.items()})

    return Batch(batch.images, batch.targets, convert(batch.out), convert(batch.old),
                 batch.num_old, batch.num_new, batch.step)


@pytest.mark.parametrize("key,setting", CASES)
def test_bfloat16_autocast(key, setting):
    batch = to_bfloat16(make_batch(setting))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = TERMS[key]()(batch)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert any(t.grad is not None for t in current_tensors(batch))
    reference = TERMS[key]()(to_float32(batch))  # the same bf16-rounded values, in float32
    assert torch.allclose(loss, reference, rtol=1e-2, atol=1e-3)
