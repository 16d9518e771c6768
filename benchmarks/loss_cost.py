"""Cost of every loss term and method at realistic shapes, relative to plain cross-entropy.

    python benchmarks/loss_cost.py [--batch 24] [--skip-model-step] [--datasets voc,ade] [--terms ce,...]
                                   [--size 512]

Shapes are those of DeepLab-V3 / ResNet-101 at 512x512 crops, output stride 16: logits
(B, C, 512, 512), "body" (B, 2048, 32, 32), "pre_logits" (B, 256, 32, 32), "logits_low"
(B, C, 32, 32) and the four stage pre-activations, with VOC-like (21 classes, a few objects per
image, 35 % object pixels) and ADE-like (151 classes, many regions per image, 90 % object pixels)
label maps at step t >= 1, and old logits that agree with them (see make_batch).
For each term: forward + backward time (seconds and / plain CE), and the peak extra memory,
measured in a fresh subprocess as the rise of the resident size's high-water mark
(benchmarks/memory.py; it includes the gradients of the features the term reads). The model step (one
DeepLabV3-ResNet-101 forward + backward at 512x512, measured at a small batch and scaled
linearly to --batch, an assumption stated in the output) gives the "share of a training step";
for a classification term (which replaces the CE the step already has) also what it adds over
plain CE.
The last printed line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

from cslearn.losses import TERMS
from cslearn.losses.base import Batch, StepContext
from cslearn.methods import METHODS, objective_for_step
from cslearn.models.output import SegOutput

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.memory` when run as a script
from benchmarks.memory import GIB, run_python  # noqa: E402

# Label statistics of a step t >= 1 batch, from methods.md's UCD memory table: on VOC about 35 % of the
# pixels are objects ("anchors", old and new classes) and 25 % old-class objects; on ADE20K about 90 %
# and 80 % (the rest is class 0, "other", trained as background; the old classes 1-100 are the frequent ones).
SETTINGS = {"voc": {"num_old": 16, "num_new": 5, "regions": 3, "objects": 0.35, "old_objects": 0.25},
            "ade": {"num_old": 101, "num_new": 50, "regions": 12, "objects": 0.90, "old_objects": 0.80}}
STAGES = {"stage1_preact": (256, 128), "stage2_preact": (512, 64), "stage3_preact": (1024, 32), "stage4_preact": (2048, 32)}
# A method's classification loss replaces the plain CE that the model step already includes: what
# it adds to a step is its time minus plain CE's.
CLASSIFICATION_TERMS = {"ce", "bce", "unbiased_ce", "pseudo_label_ce"}
OLD_MODEL_MARGIN = 4.0  # the old model's logit for its answer exceeds the others by this (plus noise)


def make_batch(dataset: str, batch_size: int, size: int = 512, low: int = 32, seed: int = 0) -> Batch:
    """A step-1 batch: random features, and label maps of `regions` vertical bands per image, each
    an old-class object, a new-class object or background (ADE20K's class 0, "other", is trained
    as background) with the shares of SETTINGS, plus a few void columns. The old model's logits
    favour its answer: the class of an old-class band, background elsewhere; so, as in training,
    only object pixels become UCD anchors or keys, and PLOP's pseudo-labels and SDR's matching see
    old classes where they are."""
    generator = torch.Generator().manual_seed(seed)
    setting = SETTINGS[dataset]
    num_old, num_new = setting["num_old"], setting["num_new"]
    num_seen = num_old + num_new

    def leaf(*shape, grad=True):
        return torch.randn(*shape, generator=generator).requires_grad_(grad)

    # True classes of the bands: old object, new object, or background / void.
    draw = torch.rand(batch_size, setting["regions"], generator=generator)  # (B, R)
    old_class = torch.randint(1, num_old, draw.shape, generator=generator)  # (B, R)
    new_class = torch.randint(num_old, num_seen, draw.shape, generator=generator)  # (B, R)
    truth = torch.where(draw < setting["old_objects"], old_class,
                        torch.where(draw < setting["objects"], new_class, 0))  # (B, R), 0 = background
    old_answer = torch.where(truth < num_old, truth, 0)  # (B, R): background for new classes

    def bands(values: torch.Tensor, width: int) -> torch.Tensor:  # (B, R) -> (B, width, width)
        columns = torch.arange(width) * setting["regions"] // width  # (width,) band of each column
        return values[:, columns][:, None, :].expand(batch_size, width, width)

    def output(channels: int, grad: bool) -> SegOutput:
        features = {name: leaf(batch_size, c, s, s, grad=grad) for name, (c, s) in STAGES.items()}
        features["body"] = torch.randn(batch_size, 2048, low, low, generator=generator).relu().requires_grad_(grad)
        features["pre_logits"] = leaf(batch_size, 256, low, low, grad=grad)
        features["logits_low"] = leaf(batch_size, channels, low, low, grad=grad)
        return SegOutput(logits=leaf(batch_size, channels, size, size, grad=grad), features=features)

    old = output(num_old, False)
    for key, width in (("logits", size), ("logits_low", low)):
        logits = old.logits if key == "logits" else old.features[key]  # (B, |O|, width, width)
        margin = torch.full((batch_size, 1, width, width), OLD_MODEL_MARGIN)  # (B, 1, width, width)
        logits.scatter_add_(1, bands(old_answer, width)[:, None], margin)
    targets = torch.where(truth < num_old, 0, truth)  # (B, R) old classes -> 0, the background shift
    targets = bands(targets, size).clone()  # (B, H, W)
    targets[:, :, ::97] = 255  # some void columns (object borders)
    return Batch(images=torch.zeros(batch_size, 3, 1, 1), targets=targets, out=output(num_seen, True),
                 old=old, num_old=num_old, num_new=num_new, step=1)


def loss_seconds(run, repeats: int = 2) -> float:
    """Best-of-`repeats` wall time of one forward + backward."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def runner(kind: str, name: str, batch: Batch):
    """A closure doing one forward + backward of a term (kind "term") or a method's step-1 objective."""
    if kind == "term":
        method_terms = [m for m in METHODS.values() if name in m.term_names]
        objective = objective_for_step(method_terms[0] if method_terms else METHODS["mib"], 1)
        term = objective.terms.get(name) or TERMS[name]()
    else:
        objective = objective_for_step(METHODS[name], 1)
    # PLOP's threshold pass runs the old model over the step's loader: here one batch, whose old
    # output is the batch's own.
    old_model = FixedOutput(batch.old)
    objective.begin_step(StepContext(step=1, num_old=batch.num_old, num_new=batch.num_new, model=None,
                                     old_model=old_model, train_loader=[(batch.images, batch.targets)],
                                     device=torch.device("cpu")))

    if kind == "term" and name not in CLASSIFICATION_TERMS:
        # A term's time includes PLOP's pseudo-labelling only if it reads the rewritten labels (the
        # classification term); local_pod and UCD do not, although they belong to methods that rewrite.
        objective.rewriter = None

    def run():
        prepared = objective.prepare(batch)  # the rewriter, then every term's and state's observe
        loss = term(prepared) if kind == "term" else objective(prepared)[0]
        loss.backward()
    return run


class FixedOutput(torch.nn.Module):
    """A stand-in old model that returns a fixed SegOutput."""

    def __init__(self, output: SegOutput) -> None:
        super().__init__()
        self.output = output

    def forward(self, images: torch.Tensor) -> SegOutput:
        return self.output


def measure_memory(dataset: str, kind: str, name: str, batch_size: int, size: int = 512) -> float:
    """Peak extra memory (GiB) of one forward + backward, in a fresh process (benchmarks/memory.py)."""
    code = (f"import benchmarks.loss_cost as b; from benchmarks.memory import peak_growth_bytes; "
            f"batch = b.make_batch({dataset!r}, {batch_size}, {size}); run = b.runner({kind!r}, {name!r}, batch); "
            f"print(peak_growth_bytes(run))")
    return int(run_python(code)) / GIB


def model_step_seconds(batch_size: int) -> tuple[float, int]:
    """One DeepLabV3-ResNet-101 forward + backward at 512x512 on this CPU: best of three after a
    warm-up at batch 4, scaled linearly (per image, batch 4 takes ~7 % longer than batch 2, so the
    scaled step is if anything underestimated; no optimizer step either: every term's share is
    slightly overestimated). A single timing varied by 25 % between runs; the best of three did not."""
    from cslearn.models import build_model

    measured_batch = 4
    model = build_model("deeplabv3_resnet101", [16, 5])
    images = torch.randn(measured_batch, 3, 512, 512)
    targets = torch.randint(0, 21, (measured_batch, 512, 512))

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images).logits, targets).backward()
    step()  # warm-up: the first iteration allocates and is slower
    return loss_seconds(step, repeats=3) * batch_size / measured_batch, measured_batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--datasets", default="voc,ade")
    parser.add_argument("--skip-model-step", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--terms", default=None, help="only these terms (comma-separated), and no methods")
    parser.add_argument("--size", type=int, default=512,
                        help="logit resolution (512); with 32, terms that read only the 32x32 maps (UCD) "
                             "can be measured on ADE20K at batch 24, which does not fit in 24 GiB at 512")
    args = parser.parse_args()
    terms = args.terms.split(",") if args.terms else list(TERMS)
    figures: dict = {"batch": args.batch, "size": args.size, "threads": torch.get_num_threads(), "terms": {}, "methods": {}}
    if not args.skip_model_step:
        seconds, measured = model_step_seconds(args.batch)
        figures["model_step_seconds"] = seconds
        print(f"DeepLabV3-ResNet-101 step at 512x512, batch {args.batch}: {seconds:.1f} s "
              f"(measured at batch {measured}, scaled linearly)", flush=True)
    for dataset in args.datasets.split(","):
        batch = make_batch(dataset, args.batch, args.size)
        objects = batch.old.logits.argmax(dim=1).gt(0) | batch.targets.gt(0)  # (B, H, W) old or new objects
        objects &= batch.targets.ne(255)
        print(f"{dataset}: {100 * objects.float().mean():.0f} % object pixels (old or new, not void), "
              f"{100 * batch.targets.eq(255).float().mean():.0f} % void", flush=True)
        plain_ce = runner("term", "ce", batch)
        plain_ce()  # warm-up: allocates the features' gradients, which every later run accumulates into
        ce_seconds = loss_seconds(plain_ce, repeats=5)  # the baseline of every ratio: more repeats
        for kind, names in (("term", terms), ("method", [] if args.terms else list(METHODS))):
            for name in names:
                seconds = loss_seconds(runner(kind, name, batch))
                entry = {"seconds": seconds, "vs_ce": seconds / ce_seconds}
                if "model_step_seconds" in figures:
                    entry["share_of_model_step"] = seconds / figures["model_step_seconds"]
                    if kind == "term" and name in CLASSIFICATION_TERMS:  # replaces the step's own CE
                        entry["added_share_over_ce"] = (seconds - ce_seconds) / figures["model_step_seconds"]
                figures[f"{kind}s"].setdefault(name, {})[dataset] = entry
                share = entry.get("share_of_model_step")
                added = entry.get("added_share_over_ce")
                print(f"{dataset} {kind:>6} {name:>24}: {seconds * 1000:8.1f} ms  x{entry['vs_ce']:5.2f} CE"
                      + (f"  {100 * share:5.2f}% of a step" if share is not None else "")
                      + (f" (+{100 * added:.2f}% over plain CE)" if added is not None else ""), flush=True)
        del batch, plain_ce  # the memory subprocesses build their own batch: ADE's at batch 24 is ~10 GiB
        gc.collect()
        for name in [] if args.skip_memory else terms:
            entry = figures["terms"][name][dataset]
            entry["peak_extra_gib"] = measure_memory(dataset, "term", name, args.batch, args.size)
            print(f"{dataset}   term {name:>24}: peak +{entry['peak_extra_gib']:.2f} GiB", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
