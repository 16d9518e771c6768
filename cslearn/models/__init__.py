"""Segmentation networks: one `Segmenter` class, several backbones, one registry.

`MODELS` maps a name to a builder with the signature
`(classes_per_step, output_stride=16, weights=None, **options) -> Segmenter`; `build_model` looks
the name up. Contract tests are parametrized over `MODELS`, so a new entry is tested as soon as
it is registered (the timm idea, DESIGN.md).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Sequence

from cslearn.models.deeplab import deeplabv3_resnet
from cslearn.models.output import SegOutput
from cslearn.models.segmenter import Segmenter
from cslearn.models.tiny import tiny_segmenter


def _tiny(
    classes_per_step: Sequence[int],
    output_stride: int = 16,
    weights: Optional[str] = None,
    **options: Any,
) -> Segmenter:
    """`tiny_segmenter` behind the common builder signature.

    The tiny network has a fixed output stride of 4; `output_stride` is accepted (and ignored)
    so that one run configuration can drive every model. It has no pretrained weights.
    """
    if weights is not None:
        raise ValueError(f"the 'tiny' model has no pretrained weights, got weights={weights!r}")
    return tiny_segmenter(classes_per_step, **options)


MODELS: dict[str, Callable[..., Segmenter]] = {
    "deeplabv3_resnet101": partial(deeplabv3_resnet, 101),
    "deeplabv3_resnet50": partial(deeplabv3_resnet, 50),
    "tiny": _tiny,
}


def build_model(
    name: str,
    classes_per_step: Sequence[int],
    output_stride: int = 16,
    weights: Optional[str] = None,
    **options: Any,
) -> Segmenter:
    """Build the model `name` with one classifier per entry of `classes_per_step`.

    weights: "imagenet" (DeepLab backbones only) or None. Extra options go to the builder
    (e.g. `width` for "tiny", `aspp_dilations` for DeepLab); unknown ones raise a TypeError.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name](classes_per_step=classes_per_step, output_stride=output_stride, weights=weights, **options)


__all__ = ["MODELS", "SegOutput", "Segmenter", "build_model"]
