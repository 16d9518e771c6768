"""A tiny CPU segmenter for the procedural toy dataset (`cslearn/data/toy.py`).

It has the same interface as DeepLab-V3 (`deeplab.py`): a backbone returning "body" and
per-stage pre-activation maps, a small version of the same ASPP head, and one
classifier per step. So every loss term, method and notebook runs unchanged on a laptop CPU in
seconds; only the numbers differ from the paper setting.

Layout for a 64x64 input and width w (output stride 4, one Conv-BN-ReLU block per stage):
    stage1: 3 -> w,   3x3 stride 2                32x32
    stage2: w -> 2w,  3x3 stride 2                16x16
    stage3: 2w -> 4w, 3x3 dilation 2              16x16   = "body"
    head:   1x1 and 3x3-dilation-2 branches (32 channels each) + global pooling, 64 channels
The receptive field is 23 px at "body" and 39 px at "pre_logits", plus the image-wide pooling
branch: enough to see colour, texture and the surroundings of a pixel in a 64x64 image.
Speed (width 32, batch 16 of 64x64, forward + backward + SGD step): about 33 ms on 2 CPU
threads, 66 ms on one. Deeper variants measured 43-49 ms (64-channel head branches, a second
3x3 conv in stage 2); the cost is dominated by the 2w -> 4w conv and the head's 3x3 branch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cslearn.models.deeplab import ASPP
from cslearn.models.segmenter import Segmenter


class ConvBN(nn.Module):
    """3x3 convolution + BatchNorm; the ReLU is left to the caller so that the pre-activation
    map stays available (PLOP's Local POD distils it, methods.md §4.1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class TinyBackbone(nn.Module):
    """Three Conv-BN-ReLU stages; returns "stage{k}_preact" (each stage's BN output, before its
    ReLU) and "body" = relu(stage3_preact), with 4*width channels at output stride 4."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                ConvBN(3, width, stride=2),
                ConvBN(width, 2 * width, stride=2),
                ConvBN(2 * width, 4 * width, dilation=2),
            ]
        )
        self.out_channels = 4 * width

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features: dict[str, torch.Tensor] = {}
        x = images  # (B, 3, H, W)
        for index, stage in enumerate(self.stages, start=1):
            preact = stage(x)  # (B, C_stage, h, w), kept before the ReLU
            features[f"stage{index}_preact"] = preact
            x = F.relu(preact)
        features["body"] = x  # (B, 4*width, H/4, W/4)
        return features


def tiny_segmenter(classes_per_step: Sequence[int], width: int = 32, head_channels: int = 64) -> Segmenter:
    """A `Segmenter` with `TinyBackbone(width)` and a small DeepLab-V3 head.

    The head is `deeplab.ASPP` with two branches (1x1 and one 3x3 of dilation 2, 32 channels
    each) plus MiB's added image-pooling branch, reduced to `head_channels` ("pre_logits"). Like
    the big head, its pooling BatchNorm needs a batch of at least 2 in train mode.
    """
    backbone = TinyBackbone(width)
    head = ASPP(backbone.out_channels, out_channels=head_channels, hidden_channels=32, dilations=(2,))
    return Segmenter(backbone, head, head_channels=head_channels, classes_per_step=classes_per_step)
