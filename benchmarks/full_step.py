"""One DeepLabV3-ResNet-101 training step at 512x512 per method, and the GPU hours of each task.

    python benchmarks/full_step.py [--methods ft,mib,...] [--batch 2] [--skip-memory]

For each method: one incremental-step iteration (current model forward, frozen old model forward,
the method's target rewriting and loss terms, backward, SGD step) on `--batch` random 512x512
images with VOC-like label maps at step 1 of VOC 15-1 (16 old + 1 new classes), random weights
(the cost does not depend on them). Time is the best of two iterations after a warm-up, relative
to fine-tuning; peak extra memory is the rise of the resident size's high-water
mark during one iteration, in a fresh process (benchmarks/memory.py).

GPU projection (an estimate, not a measurement): the floating-point operations of the
fine-tuning iteration are counted with `torch.utils.flop_counter` and scaled to batch 24; a GPU is
assumed to sustain UTILISATION of its datasheet mixed-precision tensor peak (T4 65, V100 125,
A100 312 TFLOPS); each method costs its measured CPU ratio to fine-tuning; iterations per task
come from the images per step of MiB's index files (protocol.md) at batch 24 and 30 (VOC) or 60
(ADE) epochs per step. Data loading and evaluation are not counted. `python -m cslearn run
--estimate` measures the real thing on the user's GPU. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cslearn.engine import make_optimizer
from cslearn.losses.base import Batch, StepContext
from cslearn.methods import get_method, objective_for_step
from cslearn.models import build_model
from cslearn.protocol import get_task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.memory` when run as a script
from benchmarks.memory import GIB, run_python  # noqa: E402

METHODS = ["ft", "lwf", "ilt", "mib", "plop", "sdr", "mib+sdr", "mib+ucd", "plop+ucd"]
GPU_PEAK_TFLOPS = {"T4": 65.0, "V100": 125.0, "A100": 312.0}  # datasheet FP16 tensor-core peaks (dense)
UTILISATION = 0.3
# Images per step in MiB's index files (protocol.md, "Images per step"), overlapped setting.
TASK_IMAGES = {("voc", "15-1"): [9568, 487, 299, 491, 500, 548], ("voc", "15-5"): [9568, 2145],
               ("voc", "19-1"): [10410, 548], ("ade", "100-50"): [13452, 6744],
               ("ade", "100-10"): [13452, 1130, 1200, 1366, 1550, 1498], ("ade", "50-50"): [8219, 6384, 5593]}
EPOCHS = {"voc": 30, "ade": 60}


def make_iteration(method_name: str, batch_size: int, seed: int = 0):
    """A closure running one training iteration of `method_name` at step 1 of VOC 15-1."""
    torch.manual_seed(seed)
    task = get_task("voc", "15-1")
    method = get_method(method_name).for_task(task)
    old_model = build_model("deeplabv3_resnet101", [16]).eval()
    model = build_model("deeplabv3_resnet101", [16, 1])
    images = torch.randn(batch_size, 3, 512, 512)  # (B, 3, 512, 512)
    # Label maps: vertical bands of background, the new class 16 and void, as a step-1 image has.
    band = torch.arange(512) * 4 // 512  # (512,) band index per column
    targets = torch.tensor([0, 16, 0, 255])[band].expand(batch_size, 512, 512).clone()  # (B, 512, 512)
    step0 = objective_for_step(method, 0)  # fills SDR's prototypes as step 0 of a run would
    with torch.no_grad():
        out = old_model(images)
        step0.prepare(Batch(images=images, targets=targets.clamp(max=15).where(targets != 255, 255),
                            out=out, old=None, num_old=0, num_new=16, step=0))
    objective = objective_for_step(method, 1)
    objective.load_state_dict(step0.state_dict(), carry_over=True)
    objective.begin_step(StepContext(step=1, num_old=16, num_new=1, model=model, old_model=old_model,
                                     train_loader=[(images, targets)], device=torch.device("cpu")))
    optimizer = make_optimizer(model, lr=1e-3)
    model.train()

    def iteration() -> None:
        out = model(images)
        with torch.no_grad():
            old = old_model(images) if objective.needs_old else None
        batch = objective.prepare(Batch(images=images, targets=targets, out=out, old=old, num_old=16,
                                        num_new=1, step=1))
        loss, _ = objective(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return iteration


def seconds(iteration, repeats: int = 2) -> float:
    iteration()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        iteration()
        best = min(best, time.perf_counter() - started)
    return best


def peak_memory_gib(method: str, batch_size: int) -> float:
    """Growth of the resident size's high-water mark during one iteration, in a fresh process (GiB)."""
    code = ("import benchmarks.full_step as b; from benchmarks.memory import peak_growth_bytes; "
            f"run = b.make_iteration({method!r}, {batch_size}); print(peak_growth_bytes(run))")
    return int(run_python(code)) / GIB


def flops_per_image() -> float:
    """FLOPs of one fine-tuning iteration per image (forward + backward; fine-tuning runs no old model)."""
    iteration = make_iteration("ft", 2)  # two images: BatchNorm in training mode needs more than one
    with FlopCounterMode(display=False) as counter:
        iteration()
    return float(counter.get_total_flops()) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch", type=int, default=2, help="images per measured iteration (CPU)")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if args.batch < 2:
        parser.error("--batch must be >= 2: BatchNorm in training mode needs two values per channel")
    methods = args.methods.split(",")
    if "ft" not in methods:
        methods.insert(0, "ft")
    print(f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"batch {args.batch} at 512x512, DeepLabV3-ResNet-101 OS16, step 1 of VOC 15-1", flush=True)
    timing, memory = {}, {}
    for method in methods:
        iteration = make_iteration(method, args.batch)
        timing[method] = seconds(iteration)
        del iteration
        gc.collect()
        memory[method] = None if args.skip_memory else peak_memory_gib(method, args.batch)
        extra = "" if memory[method] is None else f", peak extra memory {memory[method]:.2f} GiB"
        print(f"{method:>10}: {timing[method]:.1f} s per iteration ({timing[method] / timing['ft']:.2f} x ft){extra}",
              flush=True)
    flops = flops_per_image()
    print(f"fine-tuning iteration: {flops / 1e9:.0f} GFLOP per image (forward + backward)")
    projection = {}
    print(f"\nProjected GPU hours per task (assumption: {UTILISATION:.0%} of the datasheet FP16 tensor peak, "
          "batch 24, recipe epochs, MiB's images per step; no data loading or evaluation):")
    header = "| task | method | " + " | ".join(GPU_PEAK_TFLOPS) + " |"
    print(header + "\n|" + "---|" * (2 + len(GPU_PEAK_TFLOPS)))
    for (dataset, task), images in TASK_IMAGES.items():
        for method in ("ft", "mib", "mib+sdr", "mib+ucd"):
            if method not in timing:
                continue
            ratio = timing[method] / timing["ft"]
            total_images = sum(EPOCHS[dataset] * (count // 24) * 24 for count in images)  # drop_last
            hours = {gpu: total_images * flops * ratio / (peak * 1e12 * UTILISATION) / 3600
                     for gpu, peak in GPU_PEAK_TFLOPS.items()}
            projection[f"{dataset} {task} {method}"] = hours
            print(f"| {dataset} {task} | {method} | " + " | ".join(f"{hours[gpu]:.1f}" for gpu in GPU_PEAK_TFLOPS) + " |")
    print(json.dumps({"batch": args.batch, "threads": torch.get_num_threads(), "seconds": timing,
                      "ratio_to_ft": {m: t / timing["ft"] for m, t in timing.items()}, "peak_extra_gib": memory,
                      "gflop_per_image": flops / 1e9, "utilisation": UTILISATION, "gpu_hours": projection}))


if __name__ == "__main__":
    main()
