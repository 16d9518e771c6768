"""Cost of every loss term and method at realistic shapes, relative to plain cross-entropy.

    python benchmarks/loss_cost.py [--batch 24] [--skip-model-step] [--datasets voc,ade] [--terms ce,...]
                                   [--size 512] [--skip-memory]
    python benchmarks/loss_cost.py --model toy

Shapes are those of DeepLab-V3 / ResNet-101 at 512x512 crops, output stride 16: logits
(B, C, 512, 512), "body" (B, 2048, 32, 32), "pre_logits" (B, 256, 32, 32), "logits_low"
(B, C, 32, 32) and the four stage pre-activations, with VOC-like (21 classes, a few objects per
image, 35 % object pixels) and ADE-like (151 classes, many regions per image, 90 % object pixels)
label maps at step t >= 1, and old logits that agree with them (see make_batch). With `--model
toy`: the tiny toy model's shapes at 64x64 (output stride 4), batch 16 as in the fast preset, and
the label statistics of the toy's step 1 of 15-1; its step is measured at that batch.
For each term: forward + backward time (seconds and / plain CE), and the peak extra memory,
measured in a fresh subprocess as the rise of the resident size's high-water mark
(benchmarks/memory.py; it includes the gradients of the features the term reads). The model step (one
DeepLabV3-ResNet-101 forward + backward at 512x512, measured at a small batch and scaled
linearly to --batch, an assumption stated in the output; or the toy model's at 64x64) gives the
"share of a training step"; for a classification term (which replaces the CE the step already
has) also what it adds over plain CE.
The last printed line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Optional

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
# The toy's step 1 of 15-1 (its 173 training images that hold class 16): 6 % new-class and 6 % old-class
# pixels; bands of 8 pixels.
SETTINGS = {"voc": {"num_old": 16, "num_new": 5, "regions": 3, "objects": 0.35, "old_objects": 0.25},
            "ade": {"num_old": 101, "num_new": 50, "regions": 12, "objects": 0.90, "old_objects": 0.80},
            "toy": {"num_old": 16, "num_new": 1, "regions": 8, "objects": 0.12, "old_objects": 0.06}}
# (channels, side) of every feature map but logits_low, at 512x512: DeepLab-V3 / ResNet-101, output stride 16.
DEEPLAB_SHAPES = {"stage1_preact": (256, 128), "stage2_preact": (512, 64), "stage3_preact": (1024, 32),
                  "stage4_preact": (2048, 32), "body": (2048, 32), "pre_logits": (256, 32)}
# A method's classification loss replaces the plain CE that the model step already includes: what
# it adds to a step is its time minus plain CE's.
CLASSIFICATION_TERMS = {"ce", "bce", "unbiased_ce", "pseudo_label_ce"}
OLD_MODEL_MARGIN = 4.0  # the old model's logit for its answer exceeds the others by this (plus noise)


def toy_shapes(size: int = 64) -> dict[str, tuple[int, int]]:
    """(channels, side) of the tiny toy model's feature maps but logits_low, from one forward pass."""
    from cslearn.models import build_model

    with torch.no_grad():
        out = build_model("tiny", [1])(torch.zeros(2, 3, size, size))
    return {name: (f.shape[1], f.shape[2]) for name, f in out.features.items() if name != "logits_low"}


def make_batch(dataset: str, batch_size: int, size: int = 512, seed: int = 0,
               shapes: Optional[dict[str, tuple[int, int]]] = None) -> Batch:
    """A step-1 batch: random features of `shapes` (DEEPLAB_SHAPES by default; logits_low at the
    side of pre_logits, the logits at `size`), and label maps of `regions` vertical bands per image, each
    an old-class object, a new-class object or background (ADE20K's class 0, "other", is trained
    as background) with the shares of SETTINGS, plus a few void columns. The old model's logits
    favour its answer: the class of an old-class band, background elsewhere; so, as in training,
    only object pixels become UCD anchors or keys, and PLOP's pseudo-labels and SDR's matching see
    old classes where they are."""
    generator = torch.Generator().manual_seed(seed)
    setting = SETTINGS[dataset]
    shapes = DEEPLAB_SHAPES if shapes is None else shapes
    low = shapes["pre_logits"][1]
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
        features = {name: leaf(batch_size, c, s, s, grad=grad) for name, (c, s) in shapes.items()}
        features["body"] = features["body"].detach().relu().requires_grad_(grad)  # after a ReLU
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


def model_batch(model_name: str, dataset: str, batch_size: int, size: int) -> Batch:
    """make_batch with the feature shapes of `model_name` ("deeplab" or "toy")."""
    return make_batch(dataset, batch_size, size, shapes=toy_shapes(size) if model_name == "toy" else None)


def measure_memory(model_name: str, dataset: str, kind: str, name: str, batch_size: int, size: int) -> float:
    """Peak extra memory (GiB) of one forward + backward, in a fresh process (benchmarks/memory.py)."""
    code = (f"import benchmarks.loss_cost as b; from benchmarks.memory import peak_growth_bytes; "
            f"batch = b.model_batch({model_name!r}, {dataset!r}, {batch_size}, {size}); "
            f"run = b.runner({kind!r}, {name!r}, batch); "
            f"print(peak_growth_bytes(run))")
    return int(run_python(code)) / GIB


def model_step_seconds(batch_size: int, model_name: str = "deeplab", size: int = 512) -> tuple[float, int]:
    """One forward + backward with plain CE at `size` on this CPU.

    DeepLabV3-ResNet-101: best of three after a warm-up at batch 4, scaled linearly (per image,
    batch 4 takes ~7 % longer than batch 2, so the scaled step is if anything underestimated; no
    optimizer step either: every term's share is slightly overestimated). A single timing varied
    by 25 % between runs; the best of three did not. The toy model: at `batch_size` itself, best of 20.
    """
    from cslearn.models import build_model

    deeplab = model_name == "deeplab"
    measured_batch = 4 if deeplab else batch_size
    model = build_model("deeplabv3_resnet101", [16, 5]) if deeplab else build_model("tiny", [16, 1])
    images = torch.randn(measured_batch, 3, size, size)
    targets = torch.randint(0, 21 if deeplab else 17, (measured_batch, size, size))

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images).logits, targets).backward()
    step()  # warm-up: the first iteration allocates and is slower
    return loss_seconds(step, repeats=3 if deeplab else 20) * batch_size / measured_batch, measured_batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="deeplab", choices=["deeplab", "toy"],
                        help="feature shapes and model step: DeepLabV3-ResNet-101 at 512x512, or the "
                             "tiny toy model at 64x64 (then --batch 16 --datasets toy --size 64 by default)")
    parser.add_argument("--batch", type=int, default=None, help="24 (deeplab) or 16 (toy, the fast preset's)")
    parser.add_argument("--datasets", default=None, help="label statistics: voc,ade (deeplab) or toy")
    parser.add_argument("--skip-model-step", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--terms", default=None, help="only these terms (comma-separated), and no methods")
    parser.add_argument("--size", type=int, default=None,
                        help="logit resolution (512, toy 64); with 32, terms that read only the 32x32 maps (UCD) "
                             "can be measured on ADE20K at batch 24, which does not fit in 24 GiB at 512")
    args = parser.parse_args()
    toy = args.model == "toy"
    args.batch = args.batch or (16 if toy else 24)
    args.datasets = args.datasets or ("toy" if toy else "voc,ade")
    args.size = args.size or (64 if toy else 512)
    terms = args.terms.split(",") if args.terms else list(TERMS)
    figures: dict = {"model": args.model, "batch": args.batch, "size": args.size,
                     "threads": torch.get_num_threads(), "terms": {}, "methods": {}}
    if not args.skip_model_step:
        step_size = 64 if toy else 512  # the model's training crop, whatever --size the loss maps have
        seconds, measured = model_step_seconds(args.batch, args.model, step_size)
        figures["model_step_seconds"] = seconds
        print(f"{'Tiny toy model' if toy else 'DeepLabV3-ResNet-101'} step at {step_size}x{step_size}, "
              f"batch {args.batch}: {seconds:.3f} s (measured at batch {measured}"
              + (")" if measured == args.batch else ", scaled linearly)"), flush=True)
    for dataset in args.datasets.split(","):
        batch = model_batch(args.model, dataset, args.batch, args.size)
        objects = batch.old.logits.argmax(dim=1).gt(0) | batch.targets.gt(0)  # (B, H, W) old or new objects
        objects &= batch.targets.ne(255)
        print(f"{dataset}: {100 * objects.float().mean():.0f} % object pixels (old or new, not void), "
              f"{100 * batch.targets.eq(255).float().mean():.0f} % void", flush=True)
        plain_ce = runner("term", "ce", batch)
        plain_ce()  # warm-up: allocates the features' gradients, which every later run accumulates into
        # Milliseconds on the toy: more repeats there. CE is the baseline of every ratio: more repeats.
        repeats = 20 if toy else 2
        ce_seconds = loss_seconds(plain_ce, repeats=5 * repeats // 2)
        for kind, names in (("term", terms), ("method", [] if args.terms else list(METHODS))):
            for name in names:
                seconds = loss_seconds(runner(kind, name, batch), repeats)
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
            entry["peak_extra_gib"] = measure_memory(args.model, dataset, "term", name, args.batch, args.size)
            print(f"{dataset}   term {name:>24}: peak +{entry['peak_extra_gib']:.2f} GiB", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
