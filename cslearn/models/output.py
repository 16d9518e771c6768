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
