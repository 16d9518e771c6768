"""The output contract every segmentation model in cslearn honours."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SegOutput:
    """What a forward pass returns, always (DESIGN.md, "Core contracts").

    logits:   (B, C_seen, H, W), upsampled bilinearly (align_corners=False) to the input size.
    features: named intermediate tensors, at least
              "body"       (B, C_body, h, w)  last backbone stage, before the head (SDR, ILT);
              "pre_logits" (B, C_head, h, w)  head output that feeds the 1x1 classifiers (UCD);
              "logits_low" (B, C_seen, h, w)  logits before upsampling (PLOP's POD, UCD's q).
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """The per-pixel argmax over channels: (B, C, H, W) scores -> (B, H, W) int64 labels.

    Computed as `max(dim=1).indices`, which returns the same indices as `argmax(dim=1)` (the
    first maximum on ties, as both are documented to do): on a CPU, PyTorch's argmax over the
    channel dimension of a (B, C, H, W) tensor is about ten times slower (12 ms against 1 ms on
    16 x 21 x 64 x 64, 185 against 18 ms on 4 x 21 x 512 x 512, two threads), and evaluation and
    SDR's pseudo-labels call it on every batch (PLOP's `old_predictions` takes the same
    `max(dim=1)`, whose values it also needs).
    """
    return logits.max(dim=1).indices  # (B, H, W)
