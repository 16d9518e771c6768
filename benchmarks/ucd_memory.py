"""Peak extra memory of UCD's contrastive distillation (cslearn.losses.contrastive), forward + backward.

Setting (methods.md §6.7 item 7, the "ADE-like" column): 32x32 features per image (512 crops, OS16),
256 channels, ADE 100-10 last step (141 old channels incl. background, 10 new), and per position:
10 % labelled new class, 80 % background pseudo-labelled by the old model with an old class (old keys),
8 % background the old model calls background, 2 % void. So anchors ≈ 90 %, old keys ≈ 80 % of B·32·32.
Labels are given at feature resolution (the loss resizes by nearest, an identity here).

Each configuration runs in a fresh subprocess. On CPU the figure is
    peak extra = the resident size's high-water mark during forward + backward − RSS just before
(benchmarks/memory.py). The subprocess runs with glibc's
MALLOC_MMAP_THRESHOLD_=131072, so every large tensor is mmap-ed and returned on free and RSS follows
the live tensors (with glibc's dynamic threshold, freed buffers under 32 MiB stay in the heap and
RSS overstates the peak). On CUDA, max_memory_allocated − allocated before.
The dense formulation (`dense_loss`: the same loss as one (N_a, N_c) computation under autograd, as
in the official code) is only run at small batch sizes; its per-buffer count there extrapolates it
to larger batches.

Run: ``OMP_NUM_THREADS=1 python benchmarks/ucd_memory.py [--batch-sizes 4 24] [--chunk-sizes 512 1024]
[--dense-batch-sizes 2 4] [--device cpu]``. The last line printed is one JSON object with the figures.
On one CPU thread batch 24 takes about 15 s per chunk size (45 s for the default run).

Measured (session 5, CPU, 1 thread, torch 2.14; BENCHMARKS.md): batch 24, N_a = 22,081 anchors,
N_c = 41,710 contrast entries: chunks of 512 or 1024 anchors -> 0.31 GiB peak extra (chunks also end
at label boundaries, ~150 anchors per class here). `dense_loss` keeps 8.2 (N_a, N_c) fp32 buffers
(measured at batch 2 and 4), i.e. about 28 GiB at batch 24.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.memory` when run as a script
from benchmarks.memory import GIB, peak_growth_bytes  # noqa: E402
NUM_OLD, NUM_NEW, CHANNELS, FEATURE_SIZE = 141, 10, 256, 32


def ade_like_batch(batch_size: int, device: torch.device):
    from cslearn.losses import Batch
    from cslearn.models.output import SegOutput

    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, FEATURE_SIZE, FEATURE_SIZE)
    kind = torch.rand(shape, generator=generator)  # (B, h, w) which kind of position
    new_ids = torch.randint(NUM_OLD, NUM_OLD + NUM_NEW, shape, generator=generator)  # (B, h, w)
    old_ids = torch.randint(1, NUM_OLD, shape, generator=generator)  # (B, h, w) the old model's class
    targets = torch.where(kind < 0.10, new_ids, torch.zeros_like(new_ids))  # (B, h, w) ỹ
    targets[kind > 0.98] = 255
    old_argmax = torch.where((kind >= 0.10) & (kind < 0.90), old_ids, torch.zeros_like(old_ids))  # (B, h, w)
    old_logits = torch.randn(batch_size, NUM_OLD, *shape[1:], generator=generator)  # (B, |O|, h, w)
    old_logits.scatter_add_(1, old_argmax[:, None], torch.full((batch_size, 1, *shape[1:]), 10.0))
    features = torch.randn(batch_size, CHANNELS, *shape[1:], generator=generator)  # (B, 256, h, w)
    old_features = features + 0.5 * torch.randn(features.shape, generator=generator)  # (B, 256, h, w)
    out = SegOutput(torch.zeros(1), {"pre_logits": features.to(device).requires_grad_()})
    old = SegOutput(torch.zeros(1), {"pre_logits": old_features.to(device), "logits_low": old_logits.to(device)})
    return Batch(torch.zeros(1), targets.to(device), out, old, NUM_OLD, NUM_NEW, step=1)


def dense_loss(batch, temperature: float = 0.07) -> torch.Tensor:
    """UCD's loss as one (N_a, N_c) computation under autograd (methods.md §6.4-6.5, with the
    project's fixes): what an unchunked implementation such as the official code keeps in memory.
    Same value as ContrastiveDistillation (checked by `measure`)."""
    from cslearn.losses.contrastive import build_contrast_set

    pixels = build_contrast_set(batch)
    similarity = pixels.anchors @ pixels.contrast.T / temperature  # (N_a, N_c) s_ij
    same = pixels.anchor_labels[:, None] == pixels.contrast_labels[None, :]  # (N_a, N_c)
    log_negatives = torch.logsumexp(similarity.masked_fill(same, torch.finfo(similarity.dtype).min),
                                    dim=1, keepdim=True)  # (N_a, 1) n_i
    positives = same.clone()  # (N_a, N_c); `same` is kept by autograd for the masked logsumexp
    rows = torch.arange(len(same), device=same.device)
    positives[rows, rows] = False  # not the anchor's own copy
    weights = pixels.anchor_probs @ pixels.contrast_probs.T  # (N_a, N_c) W_ij
    weights[pixels.anchor_ground_truth[:, None] & pixels.contrast_ground_truth[None, :]] = 1.0
    counts = positives.sum(dim=1)  # (N_a,) |P_i|
    per_anchor = (weights * positives * F.softplus(log_negatives - similarity)).sum(dim=1) / counts.clamp(min=1)
    return per_anchor[counts > 0].mean()


def measure(batch_size: int, chunk_size: int, device_name: str) -> dict:
    """One configuration, in this process: build the inputs, then forward + backward of the loss
    (chunk_size 0: `dense_loss`)."""
    from cslearn.losses.contrastive import ContrastiveDistillation, build_contrast_set

    device = torch.device(device_name)
    batch = ade_like_batch(batch_size, device)
    with torch.no_grad():
        pixels = build_contrast_set(batch)
    num_anchors, num_contrast = len(pixels.anchors), len(pixels.contrast)
    del pixels
    term = ContrastiveDistillation(chunk_size=chunk_size) if chunk_size else dense_loss
    losses = []

    def forward_backward() -> None:
        losses.append(term(batch))
        losses[-1].backward()

    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        forward_backward()
        torch.cuda.synchronize()
        peak_extra = torch.cuda.max_memory_allocated() - before
    else:
        peak_extra = peak_growth_bytes(forward_backward)
    seconds = time.perf_counter() - start
    loss = losses[-1]
    if not chunk_size and batch_size <= 4:  # the dense formula is the package's loss
        assert torch.allclose(loss.detach(), ContrastiveDistillation()(batch).detach(), rtol=1e-4)
    rows = min(chunk_size or num_anchors, num_anchors)
    return {"batch_size": batch_size, "chunk_size": chunk_size, "num_anchors": num_anchors,
            "num_contrast": num_contrast, "loss": float(loss.detach()), "seconds": seconds,
            "peak_extra_gib": peak_extra / GIB,
            "one_chunk_buffer_gib": rows * num_contrast * 4 / GIB,  # one fp32 (rows, N_c) matrix
            "dense_buffer_gib": num_anchors * num_contrast * 4 / GIB}  # one fp32 (N_a, N_c) matrix


def run_in_subprocess(batch_size: int, chunk_size: int, device: str) -> dict:
    command = [sys.executable, __file__, "--worker", str(batch_size), str(chunk_size), "--device", device]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 24])
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--dense-batch-sizes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*args.worker, args.device)))
        return
    rows = []
    for batch_size in args.dense_batch_sizes:  # the dense formulation, for comparison
        rows.append({**run_in_subprocess(batch_size, 0, args.device), "mode": "dense"})
        print(rows[-1], flush=True)
    for batch_size in args.batch_sizes:
        for chunk_size in args.chunk_sizes:
            rows.append({**run_in_subprocess(batch_size, chunk_size, args.device), "mode": "chunked"})
            print(rows[-1], flush=True)
    dense = [row["peak_extra_gib"] / row["dense_buffer_gib"] for row in rows if row["mode"] == "dense"]
    summary = {"rows": rows, "dense_buffers_per_matrix": max(dense) if dense else None}
    if dense:  # extrapolate the dense formulation to the largest chunked batch
        largest = max((row for row in rows if row["mode"] == "chunked"), key=lambda row: row["batch_size"])
        summary["dense_extrapolated_gib_at_largest_batch"] = max(dense) * largest["dense_buffer_gib"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
