"""MiB's background-based initialisation of a new step's classifier (methods.md §3)."""
from __future__ import annotations

import math

import torch
from torch import nn


def init_new_from_background(new_classifier: nn.Conv2d, background_classifier: nn.Conv2d) -> None:
    """Initialise the N new classes from the background classifier, in place (Cermelli et al.,
    CVPR 2020, "Modeling the Background for Incremental Learning in Semantic Segmentation",
    §3 "Method", classifier initialisation; `init_new_classifier` in MiB's code;
    methods.md §3).

    new_classifier:        the 1x1 conv of step t, weight (N, C, 1, 1), bias (N,).
    background_classifier: the 1x1 conv of step 0, weight (n_0, C, 1, 1), bias (n_0,); its row 0
                           is the background classifier (w_0, b_0), and it is changed too.

    With N = number of new classes:
        w_k ← w_0,   b_k ← b_0 − log(N+1)   for every new class k,
        b_0 ← b_0 − log(N+1).
    Why: before the step, the background logit z_0 carries the probability of everything that
    is not an old foreground class, and that is where the new classes are hiding (the background
    shift). After the init background and the N new classes have the same logit z_0 − log(N+1),
    and (N+1)·exp(z_0 − log(N+1)) = exp(z_0): the softmax normaliser is unchanged, so every old
    foreground probability is exactly what the old model gave, and the old background
    probability is split evenly over background and the N new classes. Training starts from the
    old model's predictions instead of random new logits that would steal probability mass, and
    UNKD starts at its minimum.

    Taught in notebook 05_mib_modelling_the_background.
    """
    if new_classifier.bias is None or background_classifier.bias is None:
        raise ValueError("background initialisation needs classifiers with biases")
    num_new = new_classifier.weight.shape[0]
    if new_classifier.weight.shape[1:] != background_classifier.weight.shape[1:]:
        raise ValueError(f"new classifier weight {tuple(new_classifier.weight.shape)} does not "
                         f"match background classifier {tuple(background_classifier.weight.shape)}")
    shift = math.log(num_new + 1)
    with torch.no_grad():
        background_weight = background_classifier.weight[0]  # (C, 1, 1)
        new_bias = background_classifier.bias[0] - shift  # () = b_0 − log(N+1)
        new_classifier.weight.copy_(background_weight.expand_as(new_classifier.weight))  # (N, C, 1, 1)
        new_classifier.bias.copy_(new_bias.expand_as(new_classifier.bias))  # (N,)
        background_classifier.bias[0] = new_bias
