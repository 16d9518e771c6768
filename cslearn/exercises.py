"""Autograded checks for the exercise notebooks (notebooks/exercises/, INSTRUCTORS.md).

Each `check_*` calls the learner's function on several random inputs (fixed seeds, a few shapes,
edge cases such as ignored 255 pixels or a class absent from the batch) and compares its output
and its gradients with the package's implementation (`cslearn.losses`), wrapped to the same
simple signature. On success it prints "✓ ... passed (N random cases)" and returns True; on the
first failing case it prints what went wrong (input shapes, which output differs and by how
much, wrong shape or dtype, missing gradient) and returns False, or raises `ExerciseCheckError`
with `raise_on_failure=True`. The messages never show the expected formula.
The checks print by design: they are called from notebook cells, not by the package.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from cslearn.losses import Attraction, Batch, ContrastiveDistillation, Repulsion, UnbiasedCrossEntropy
from cslearn.losses.latent import BANK, PrototypeBank
from cslearn.models.output import SegOutput

Case = tuple[str, dict[str, Any]]  # (what is special about it, the arguments in signature order)


class ExerciseCheckError(AssertionError):
    """A learner's function disagrees with the package (raised with `raise_on_failure=True`)."""


def _batch(targets: torch.Tensor, num_old: int, num_seen: int, logits: Optional[torch.Tensor] = None,
           features: Optional[dict] = None, old: Optional[SegOutput] = None) -> Batch:
    batch_size, height, width = targets.shape
    logits = torch.zeros(batch_size, num_seen, height, width) if logits is None else logits  # (B, |S|, H, W)
    return Batch(torch.zeros(batch_size, 3, height, width), targets, SegOutput(logits, features or {}), old,
                 num_old, num_seen - num_old, step=int(num_old > 0))


# ----- the package, wrapped to the learner-facing signatures -----

def _package_unbiased_ce(logits, targets, num_old):
    return UnbiasedCrossEntropy()(_batch(targets, num_old, logits.shape[1], logits=logits))


def _bank(prototypes: torch.Tensor, counts: torch.Tensor) -> PrototypeBank:
    bank = PrototypeBank()
    bank.load_state_dict({"prototypes": prototypes, "counts": counts})
    return bank


def _package_prototype_running_mean(prototypes, counts, features, labels, num_old):
    bank = _bank(prototypes, counts)
    with torch.no_grad():
        bank.observe(_batch(labels, num_old, len(counts), features={"body": features}))
    return bank.prototypes, bank.counts


def _package_attraction(features, labels, prototypes):
    term = Attraction()
    term.shared = {BANK: _bank(prototypes, torch.ones(len(prototypes), dtype=torch.int64))}
    return term(_batch(labels, 1, len(prototypes), features={"body": features}))


def _package_repulsion(features, labels):
    return Repulsion()(_batch(labels, 1, 2, features={"body": features}))  # channel counts unused


def _package_ucd_loss(features, old_features, old_logits, labels, temperature=0.07):
    num_old = old_logits.shape[1]
    old = SegOutput(old_logits, {"pre_logits": old_features, "logits_low": old_logits})
    batch = _batch(labels, num_old, num_old + 1, features={"pre_logits": features}, old=old)  # num_new unused
    return ContrastiveDistillation(temperature=temperature)(batch)


# ----- random inputs -----

def _labels(generator, shape, choices: Sequence[int], spread: bool = False) -> torch.Tensor:
    """Random labels (B, h, w) int64 from `choices`; `spread` puts every class into every image."""
    values = torch.tensor(list(choices))
    labels = values[torch.randint(len(values), shape, generator=generator)]  # (B, h, w)
    for slot, value in enumerate([choice for choice in choices if choice != 255] if spread else []):
        labels[:, 0, slot] = value  # so a class spans several images
    return labels


def _ce_cases() -> list[Case]:
    cases = []
    for seed, (batch, old, new, height, width), choices, what in [
            (0, (2, 3, 2, 4, 4), None, "3 old channels (background included), 2 new"),
            (1, (3, 4, 3, 5, 7), None, "4 old, 3 new, non-square images"),
            (2, (2, 3, 2, 6, 6), [0, 3, 255], "ignored pixels (255)"),
            (3, (2, 0, 5, 4, 4), [0, 1, 2, 3, 4], "step 0: num_old = 0"),
            (4, (1, 1, 3, 4, 4), [0, 1, 2, 255], "num_old = 1 (only background is old)"),
            (5, (2, 4, 2, 3, 3), [4, 5], "no background pixel in the batch"),
            (6, (2, 3, 2, 3, 3), [255], "every pixel ignored")]:
        generator = torch.Generator().manual_seed(seed)
        choices = choices or [0, 0] + list(range(max(old, 1), old + new))
        cases.append((what, {"logits": 3 * torch.randn(batch, old + new, height, width, generator=generator),
                             "targets": _labels(generator, (batch, height, width), choices), "num_old": old}))
    return cases


def _prototype_cases() -> list[Case]:
    cases = []
    for seed, (batch, channels, size, classes, old), seen_before, choices, what in [
            (0, (2, 4, 4, 4, 0), False, [0, 1, 2, 3], "step 0 (num_old = 0), empty bank, classes in several images"),
            (1, (3, 5, 4, 6, 4), True, [0, 4, 5], "step t >= 1 (num_old = 4), prototypes seen before"),
            (2, (2, 3, 5, 5, 3), True, [0, 3, 255], "ignored positions (255); class 4 absent from the batch"),
            (3, (1, 4, 4, 4, 2), True, [0, 1, 2, 3], "one image, old-class labels present")]:
        generator = torch.Generator().manual_seed(seed)
        counts = torch.randint(1, 50, (classes,), generator=generator) if seen_before else torch.zeros(classes, dtype=torch.int64)
        prototypes = torch.rand(classes, channels, generator=generator) * (counts > 0)[:, None]  # (S, C)
        labels = _labels(generator, (batch, size, size), choices, spread=True)
        cases.append((what, {"prototypes": prototypes, "counts": counts,
                             "features": torch.rand(batch, channels, size, size, generator=generator),
                             "labels": labels, "num_old": old}))
    return cases


def _latent_cases(with_prototypes: bool) -> list[Case]:
    cases = []
    for seed, (batch, channels, size, classes), choices, what in [
            (0, (2, 4, 4, 4), [0, 1, 2, 3], "classes present in several images"),
            (1, (3, 6, 5, 6), [0, 4, 5, 255], "ignored positions (255), a class absent from the batch"),
            (2, (2, 3, 3, 3), [2], "a single class in the batch"),
            (3, (1, 5, 4, 5), [0, 1, 3, 4], "one image")]:
        generator = torch.Generator().manual_seed(seed)
        labels = _labels(generator, (batch, size, size), choices, spread=True)
        arguments = {"features": torch.rand(batch, channels, size, size, generator=generator), "labels": labels}
        if with_prototypes:
            arguments["prototypes"] = torch.rand(classes, channels, generator=generator)  # (S, C)
        cases.append((what, arguments))
    return cases


def _ucd_cases() -> list[Case]:
    cases = []
    for seed, (batch, channels, size, old, new), choices, temperature, what in [
            (0, (2, 5, 4, 4, 2), [0, 0, 4, 5, 255], 0.07, "background, 2 new classes, ignored pixels"),
            (1, (3, 6, 4, 3, 1), [0, 3], 0.07, "one new class"),
            (2, (2, 4, 3, 4, 2), [0, 4, 5], 0.5, "temperature 0.5"),
            (3, (2, 5, 4, 4, 0), [0, 255], 0.07, "no new-class pixel: only pseudo-labelled old classes"),
            (4, (1, 4, 3, 3, 2), [255], 0.07, "every pixel ignored")]:
        generator = torch.Generator().manual_seed(seed)
        cases.append((what, {"features": torch.randn(batch, channels, size, size, generator=generator),
                             "old_features": torch.randn(batch, channels, size, size, generator=generator),
                             "old_logits": 2 * torch.randn(batch, old, size, size, generator=generator),
                             "labels": _labels(generator, (batch, size, size), choices),
                             "temperature": temperature}))
    return cases


# ----- comparison -----

def _describe(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{name} {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
                     if isinstance(value, torch.Tensor) else f"{name}={value!r}" for name, value in arguments.items())


def _evaluate(function: Callable, arguments: dict[str, Any], grad_names: Sequence[str]):
    copies = {name: value.detach().clone().requires_grad_(name in grad_names) if isinstance(value, torch.Tensor)
              else value for name, value in arguments.items()}
    result = function(*copies.values())
    outputs = result if isinstance(result, tuple) else (result,)
    gradients = None
    if grad_names and isinstance(outputs[0], torch.Tensor) and outputs[0].requires_grad:
        gradients = torch.autograd.grad(outputs[0].sum(), [copies[name] for name in grad_names], allow_unused=True)
    return outputs, gradients


def _difference(got, expected, names: Sequence[str], rtol: float, atol: float) -> Optional[str]:
    if len(got) != len(expected):
        return f"returned {len(got)} value(s), expected {len(expected)}: {', '.join(names)}"
    for name, mine, theirs in zip(names, got, expected):
        if not isinstance(mine, torch.Tensor):
            return f"`{name}` is a {type(mine).__name__}, expected a torch.Tensor (keep tensors; no .item() or numpy)"
        if mine.shape != theirs.shape:
            return f"`{name}` has shape {tuple(mine.shape)}, expected {tuple(theirs.shape)}"
        if mine.dtype != theirs.dtype:
            return f"`{name}` has dtype {mine.dtype}, expected {theirs.dtype}"
        mine, theirs = mine.detach(), theirs.detach()
        if not torch.isfinite(mine[torch.isfinite(theirs)]).all():
            return f"`{name}` contains NaN or inf where the expected value is finite"
        if not torch.allclose(mine, theirs, rtol=rtol, atol=atol):
            gap = (mine.double() - theirs.double()).abs()
            if mine.dim() == 0:
                return f"`{name}` differs: yours {mine.item():.6g}, expected {theirs.item():.6g} (off by {gap.item():.3g})"
            where = (gap > atol + rtol * theirs.double().abs()).reshape(len(gap), -1).any(dim=1)
            return (f"`{name}` differs in rows {where.nonzero().flatten().tolist()} (largest difference "
                    f"{gap.max().item():.3g})" + (f": yours {mine.tolist()}, expected {theirs.tolist()}" if mine.dim() == 1 else ""))
    return None


def _gradient_problem(gradients, expected_gradients, grad_names, rtol: float, atol: float) -> Optional[str]:
    wanted = {name: grad for name, grad in zip(grad_names, expected_gradients or [None] * len(grad_names))
              if grad is not None and grad.abs().max() > 0}
    if not wanted:
        return None
    if gradients is None:
        return ("your output carries no gradient (requires_grad is False): was something computed under "
                "torch.no_grad(), detached, or converted to a Python number or numpy array?")
    for name, mine in zip(grad_names, gradients):
        if name not in wanted:
            continue
        if mine is None:
            return f"no gradient reaches `{name}`: your output does not depend on it through autograd"
        if not torch.allclose(mine, wanted[name], rtol=rtol, atol=atol):
            gap = (mine - wanted[name]).abs().max().item()
            return (f"the values match but the gradient w.r.t. `{name}` differs (largest difference {gap:.3g}): "
                    f"is a tensor detached that should not be, or the reverse?")
    return None


def _check(title: str, learner: Callable, package: Callable, cases: list[Case], names: Sequence[str],
           grad_names: Sequence[str], raise_on_failure: bool, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    for number, (what, arguments) in enumerate(cases, start=1):
        expected, expected_gradients = _evaluate(package, arguments, grad_names)
        try:
            got, gradients = _evaluate(learner, arguments, grad_names)
            problem = (_difference(got, expected, names, rtol, atol)
                       or _gradient_problem(gradients, expected_gradients, grad_names, 10 * rtol, 10 * atol))
        except NotImplementedError:
            problem = "not implemented yet (the function raises NotImplementedError)"
        except Exception as error:  # the learner's bug, shown as a message rather than a traceback
            problem = f"your function raised {type(error).__name__}: {error}"
        if problem:
            message = (f"✗ {title}: case {number} of {len(cases)} ({what}) failed.\n"
                       f"  inputs: {_describe(arguments)}\n  {problem}")
            if raise_on_failure:  # the exception shows the message (printing it too would show it twice)
                raise ExerciseCheckError(message)
            print(message)
            return False
    print(f"✓ {title} passed ({len(cases)} random cases)")
    return True


def check_unbiased_ce(fn: Callable, raise_on_failure: bool = False) -> bool:
    """Check `unbiased_ce(logits, targets, num_old) -> loss` against `cslearn.losses.UnbiasedCrossEntropy`.

    logits (B, C, H, W) float32 over the C seen channels, the first `num_old` of them old
    (background included); targets (B, H, W) int64 with 0 = background, new classes >= num_old and
    255 = ignore; returns a float32 scalar averaged over all B·H·W pixels (ignored ones count as 0),
    differentiable w.r.t. logits. Exercise 1 of notebooks/exercises/ex1_mib_and_sdr_losses.
    """
    return _check("unbiased_ce", fn, _package_unbiased_ce, _ce_cases(), ["loss"], ["logits"], raise_on_failure)


def check_prototype_running_mean(fn: Callable, raise_on_failure: bool = False) -> bool:
    """Check `prototype_running_mean(prototypes, counts, features, labels, num_old) -> (prototypes, counts)`
    against SDR's `cslearn.losses.PrototypeBank`.

    prototypes (S, C) float32 and counts (S,) int64: the bank before this batch; features
    (B, C, h, w) float32 and labels (B, h, w) int64 (255 = ignore) at feature resolution; classes
    >= num_old are updated. Returns the new prototypes (S, C) float32 and counts (S,) int64
    (no gradient needed). Exercise 2 of notebooks/exercises/ex1_mib_and_sdr_losses.
    """
    return _check("prototype_running_mean", fn, _package_prototype_running_mean, _prototype_cases(),
                  ["prototypes", "counts"], [], raise_on_failure)


def check_attraction(fn: Callable, raise_on_failure: bool = False) -> bool:
    """Check `attraction(features, labels, prototypes) -> loss` against `cslearn.losses.Attraction`.

    features (B, C, h, w) float32, labels (B, h, w) int64 (255 = ignore) at feature resolution,
    prototypes (S, C) float32 (stored, no gradient); returns a float32 scalar, differentiable
    w.r.t. features. Exercise 3 of notebooks/exercises/ex1_mib_and_sdr_losses.
    """
    return _check("attraction", fn, _package_attraction, _latent_cases(True), ["loss"], ["features"], raise_on_failure)


def check_repulsion(fn: Callable, raise_on_failure: bool = False) -> bool:
    """Check `repulsion(features, labels) -> loss` against `cslearn.losses.Repulsion`.

    features (B, C, h, w) float32, labels (B, h, w) int64 (255 = ignore); returns a float32
    scalar, differentiable w.r.t. features. Exercise 4 of notebooks/exercises/ex1_mib_and_sdr_losses.
    """
    return _check("repulsion", fn, _package_repulsion, _latent_cases(False), ["loss"], ["features"], raise_on_failure)


def check_ucd_loss(fn: Callable, raise_on_failure: bool = False) -> bool:
    """Check `ucd_loss(features, old_features, old_logits, labels, temperature=0.07) -> loss`
    against `cslearn.losses.ContrastiveDistillation` (UCD's weighted contrastive loss).

    features, old_features (B, C, h, w) float32 (current and old `pre_logits`), old_logits
    (B, |O|, h, w) float32 (old model, background included), labels (B, h, w) int64 at feature
    resolution (0 = background, new classes >= |O|, 255 = ignore); returns a float32 scalar,
    differentiable w.r.t. features only. Exercise 5 of notebooks/exercises/ex2_ucd_contrastive_loss.
    """
    return _check("ucd_loss", fn, _package_ucd_loss, _ucd_cases(), ["loss"], ["features"], raise_on_failure,
                  rtol=1e-4, atol=1e-4)
