"""`Segmenter`: backbone + head + one 1x1 classifier per incremental step.

Every class-incremental method of the MiB lineage (MiB, PLOP, SDR, UCD) uses the same network
shape: a feature extractor, a DeepLab-style head, and a classifier that grows by one 1x1
convolution per step (protocol.md §6.1, "Classifier"). Keeping the classifiers of earlier steps
as separate modules means adding classes never touches the old weights, so the logits of the old
classes stay bit-identical until training changes them.

The forward pass always returns a `SegOutput` with the logits *and* the named intermediate
features that the distillation terms read (DESIGN.md, "Core contracts"); no loss term ever
registers hooks or runs a model itself.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cslearn.models.output import SegOutput


def _check_class_counts(classes_per_step: Sequence[int]) -> list[int]:
    counts = [int(count) for count in classes_per_step]
    if not counts or any(count <= 0 for count in counts):
        raise ValueError(f"classes_per_step must be a non-empty list of positive counts, got {classes_per_step!r}")
    return counts


class Segmenter(nn.Module):
    """A segmentation network whose output grows by one classifier per step.

    backbone:         module mapping images (B, 3, H, W) to a dict of named feature maps with at
                      least "body" (B, C_body, h, w). Every entry it returns (for example the
                      per-stage pre-activation maps "stage1_preact".."stage4_preact" that PLOP's
                      Local POD distils, methods.md §4.1) is passed on in `SegOutput.features`.
    head:             module mapping "body" to "pre_logits" (B, head_channels, h, w).
    head_channels:    channels of the head output, the input width of every classifier.
    classes_per_step: [n_0, n_1, ..., n_t], output channels of the classifier of each step;
                      n_0 includes background. Logits are concatenated in step order.

    The module holds no state besides its parameters and buffers, so `copy.deepcopy(model)` gives
    an independent model (the training loop makes the frozen old model with
    `copy.deepcopy(model).freeze()`), and `load_state_dict(..., strict=True)` works between two
    models built with the same `classes_per_step`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        head_channels: int,
        classes_per_step: Sequence[int],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_channels = int(head_channels)
        self.classifiers = nn.ModuleList(
            nn.Conv2d(self.head_channels, count, kernel_size=1, bias=True)
            for count in _check_class_counts(classes_per_step)
        )

    @property
    def classes_per_step(self) -> list[int]:
        """Output channels of each step's classifier, [n_0, ..., n_t] (read from the modules)."""
        return [classifier.out_channels for classifier in self.classifiers]

    @property
    def num_classes(self) -> int:
        """Number of seen classes, i.e. logit channels (background included)."""
        return sum(self.classes_per_step)

    def forward(self, images: torch.Tensor) -> SegOutput:
        """images (B, 3, H, W) -> SegOutput with logits (B, num_classes, H, W) and features.

        features = everything the backbone returned ("body" and any stage maps), plus
        "pre_logits" (B, head_channels, h, w) and "logits_low" (B, num_classes, h, w).
        """
        features = dict(self.backbone(images))
        if "body" not in features:
            raise KeyError(f"the backbone must return a 'body' feature map, got {sorted(features)}")
        pre_logits = self.head(features["body"])  # (B, head_channels, h, w)
        step_logits = [classifier(pre_logits) for classifier in self.classifiers]  # each (B, n_s, h, w)
        logits_low = torch.cat(step_logits, dim=1)  # (B, num_classes, h, w)
        # Upsampled one step at a time: PyTorch's bilinear kernel vectorises over channels, so its
        # rounding depends on the channel count. Per step, the old channels stay bit-identical
        # after `add_classes` (equal to upsampling `logits_low` up to float rounding).
        size = images.shape[-2:]
        logits = torch.cat(
            [F.interpolate(block, size=size, mode="bilinear", align_corners=False) for block in step_logits], dim=1
        )  # (B, num_classes, H, W)
        features["pre_logits"] = pre_logits
        features["logits_low"] = logits_low
        return SegOutput(logits=logits, features=features)

    def add_classes(self, num_new: int) -> nn.Conv2d:
        """Append a classifier for `num_new` classes (a new step) and return it.

        The new 1x1 convolution keeps PyTorch's default initialisation; a method that wants
        another one (MiB's background-based init, methods.md §3) rewrites the returned module.
        It is created on the device and with the dtype of the existing classifiers. The old
        classifiers are untouched, so the old logit channels are bit-identical before and after.
        """
        if int(num_new) <= 0:
            raise ValueError(f"num_new must be a positive number of classes, got {num_new}")
        reference = self.classifiers[0].weight
        classifier = nn.Conv2d(self.head_channels, int(num_new), kernel_size=1, bias=True)
        classifier = classifier.to(device=reference.device, dtype=reference.dtype)
        self.classifiers.append(classifier)
        return classifier

    def freeze(self) -> "Segmenter":
        """Turn this model into a frozen teacher: eval mode, no parameter requires grad.

        Used for the previous step's model (protocol.md §6.3, "Old model"). In eval mode every
        BatchNorm normalises with its running statistics and never updates them, and the head's
        image-pooling BatchNorm accepts a batch of one. Calling `.train()` afterwards would undo
        the eval mode: the training loop only calls `.train()` on the current model.
        Returns self, so `old_model = copy.deepcopy(model).freeze()` reads in one line.
        """
        self.eval()
        self.requires_grad_(False)
        return self
