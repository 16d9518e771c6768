"""DeepLab-V3 on a dilated torchvision ResNet: the network of MiB, PLOP and UCD.

Reference network (protocol.md §6.1): ResNet-101 at output stride 16 with an ASPP head whose
image-pooling branch is *added* to the main branch (MiB's `modules/deeplab.py`).

Protocol deviation, to be stated next to results: the reference uses in-place activated BN
(`InPlaceABNSync`, leaky ReLU 0.01) and ImageNet weights released by inplace_abn. cslearn uses
torchvision's ResNet with standard `BatchNorm2d` + ReLU and torchvision's ImageNet weights (the
path SDR takes by default), because inplace_abn is a CUDA extension that cannot be a hard
dependency of a notebook course. The head keeps the reference's module layout and names
(`map_convs`, `map_bn`, `red_conv`, `global_pooling_conv`, `global_pooling_bn`, `pool_red_conv`,
`red_bn`, with `BatchNormReLU` in place of iABN), so its state-dict keys are MiB's up to the prefix.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cslearn.models.segmenter import Segmenter

# Torchvision's `replace_stride_with_dilation` for (layer2, layer3, layer4).
STRIDE_TO_DILATION = {16: [False, False, True], 8: [False, True, True]}
# ASPP atrous rates. The reference code uses 12/24/32 at OS8, an apparent typo for the paper's
# 12/24/36 (twice the OS16 rates, so the same receptive field in pixels); cslearn uses 36. Pass
# `aspp_dilations=(12, 24, 32)` to reproduce the quirk.
ASPP_DILATIONS = {16: (6, 12, 18), 8: (12, 24, 36)}


class BatchNormReLU(nn.BatchNorm2d):
    """BatchNorm2d followed by ReLU in one module: the BN + ReLU stand-in for inplace_abn's
    activated BN (same parameter and buffer names as `nn.BatchNorm2d`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier, returning named stage maps.

    Returns {"stage1_preact".."stage4_preact": pre-activation output of the last block of each
    stage (layer1..layer4), "body": layer4 output}. PLOP's Local POD distils the maps *before*
    the final ReLU of each stage (methods.md §4.1), but torchvision's `Bottleneck` applies that
    ReLU inside `forward`. So the last block of each stage is run here op by op, exactly as
    `Bottleneck.forward` does (same modules, same order), keeping the sum before the ReLU. The
    stage outputs are unchanged and the extra cost is the memory of the four kept maps; set
    `with_preactivations=False` to drop them (methods without PLOP do not read them).

    Parameter names equal torchvision's (`conv1`, `bn1`, `layer1`...), minus `fc`.
    """

    def __init__(self, resnet: torchvision.models.ResNet, with_preactivations: bool = True) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.with_preactivations = with_preactivations

    @staticmethod
    def _last_block(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torchvision `Bottleneck.forward`, returning (output, pre-activation)."""
        out = block.relu(block.bn1(block.conv1(x)))
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
        identity = x if block.downsample is None else block.downsample(x)
        preact = out + identity  # (B, C_stage, h, w), not in place: it is returned
        return F.relu(preact), preact

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, 64, H/4, W/4)
        features: dict[str, torch.Tensor] = {}
        for index, stage in enumerate([self.layer1, self.layer2, self.layer3, self.layer4], start=1):
            if not self.with_preactivations:
                x = stage(x)
                continue
            for block in stage[:-1]:
                x = block(x)
            x, features[f"stage{index}_preact"] = self._last_block(stage[-1], x)
        features["body"] = x  # (B, 2048, H/OS, W/OS)
        return features


class ASPP(nn.Module):
    """DeepLab-V3 head as in MiB's `modules/deeplab.py` (protocol.md §6.1), with BN + ReLU.

    Main branch: a 1x1 conv and three 3x3 atrous convs (no bias) in parallel, concatenated,
    BN + ReLU over the concatenation (`map_bn`), 1x1 conv to `out_channels` (`red_conv`).
    Image-pooling branch: global average -> 1x1 conv -> BN + ReLU -> 1x1 conv to `out_channels`,
    broadcast-added to the main branch. The sum goes through a last BN + ReLU (`red_bn`).
    No dropout. Convolutions use Xavier-normal init with the ReLU gain (the reference uses the
    leaky-ReLU 0.01 gain, which differs by 0.005 %).

    The pooling branch normalises a (B, C, 1, 1) tensor, so in train mode its BatchNorm needs a
    batch of at least 2 (PyTorch raises on a batch of 1); eval mode accepts any batch. The
    reference normalises there too (iABN). The reference swaps global pooling for a 32x32 sliding average in
    eval mode (`--pooling 32`), which equals global pooling on its 512x512 test crops; cslearn
    always pools globally.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        hidden_channels: int = 256,
        dilations: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.map_convs = nn.ModuleList(
            [nn.Conv2d(in_channels, hidden_channels, 1, bias=False)]
            + [
                nn.Conv2d(in_channels, hidden_channels, 3, padding=rate, dilation=rate, bias=False)
                for rate in dilations
            ]
        )
        branches = len(self.map_convs)
        self.map_bn = BatchNormReLU(hidden_channels * branches)
        self.red_conv = nn.Conv2d(hidden_channels * branches, out_channels, 1, bias=False)
        self.global_pooling_conv = nn.Conv2d(in_channels, hidden_channels, 1, bias=False)
        self.global_pooling_bn = BatchNormReLU(hidden_channels)
        self.pool_red_conv = nn.Conv2d(hidden_channels, out_channels, 1, bias=False)
        self.red_bn = BatchNormReLU(out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight, gain)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, body: torch.Tensor) -> torch.Tensor:
        out = torch.cat([conv(body) for conv in self.map_convs], dim=1)  # (B, 4*hidden, h, w)
        out = self.red_conv(self.map_bn(out))  # (B, out, h, w)
        pool = F.adaptive_avg_pool2d(body, 1)  # (B, C_in, 1, 1)
        pool = self.pool_red_conv(self.global_pooling_bn(self.global_pooling_conv(pool)))  # (B, out, 1, 1)
        return self.red_bn(out + pool)  # broadcast over h, w -> (B, out, h, w)


def resnet_weights(depth: int, weights: Optional[str]) -> Optional[torchvision.models.WeightsEnum]:
    """The torchvision weights enum for `weights` ("imagenet" or None).

    "imagenet" means IMAGENET1K_V1, the classic torchvision weights (76.1 / 77.4 % top-1 for
    ResNet-50 / 101) trained with the simple recipe of the ResNet paper, like the backbones the
    published results start from; they were torchvision's only weights when SDR (whose default
    path uses torchvision's ResNet-101) was written. V2 (80.9 / 81.9 %) comes from a much longer
    modern recipe (mixup, cutmix, EMA, ...): a stronger start that would blur comparisons with
    published numbers. Nothing is downloaded here; torchvision fetches the file at build time.
    """
    if weights is None:
        return None
    if weights != "imagenet":
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    return {50: torchvision.models.ResNet50_Weights, 101: torchvision.models.ResNet101_Weights}[depth].IMAGENET1K_V1


def deeplabv3_resnet(
    depth: int = 101,
    output_stride: int = 16,
    weights: Optional[str] = None,
    classes_per_step: Sequence[int] = (21,),
    aspp_dilations: Optional[Sequence[int]] = None,
    with_preactivations: bool = True,
) -> Segmenter:
    """DeepLab-V3 over a dilated ResNet-`depth` (50 or 101) at output stride 16 or 8.

    weights="imagenet" loads torchvision's IMAGENET1K_V1 backbone weights (downloaded by
    torchvision on first use); None keeps random initialisation. The head (ASPP, 256 channels)
    and the classifiers are always freshly initialised.
    """
    if depth not in (50, 101):
        raise ValueError(f"depth must be 50 or 101, got {depth}")
    if output_stride not in STRIDE_TO_DILATION:
        raise ValueError(f"output_stride must be 16 or 8, got {output_stride}")
    builder = getattr(torchvision.models, f"resnet{depth}")  # looked up at call time (tests patch it)
    resnet = builder(
        weights=resnet_weights(depth, weights),
        replace_stride_with_dilation=STRIDE_TO_DILATION[output_stride],
    )
    backbone = ResNetBackbone(resnet, with_preactivations=with_preactivations)
    dilations = tuple(aspp_dilations) if aspp_dilations is not None else ASPP_DILATIONS[output_stride]
    head = ASPP(in_channels=2048, out_channels=256, dilations=dilations)
    return Segmenter(backbone, head, head_channels=256, classes_per_step=classes_per_step)
