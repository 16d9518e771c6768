"""Loss terms, one file per family; `TERMS` below is the table of contents.

A term is a `LossTerm` subclass: built with its options as keyword arguments (unknown ones raise
TypeError), called on a `Batch`, returning a float32 scalar. Its `name` equals its key here.
A method (cslearn.methods) is a weighted list of these names.

| key                    | family         | paper / methods.md            | needs old model |
|------------------------|----------------|-------------------------------|-----------------|
| ce                     | classification | FT, §2                        | no              |
| unbiased_ce            | classification | MiB UNCE, §3                  | no              |
| bce                    | classification | LwF-MC (iCaRL), §2            | no              |
| kd                     | distillation   | LwF, §2                       | yes             |
| unbiased_kd            | distillation   | MiB UNKD, §3                  | yes             |
| bce_distillation       | distillation   | LwF-MC (iCaRL), §2            | yes             |
| feature_distillation   | distillation   | ILT, §2                       | yes             |
| prototype_matching     | latent (SDR)   | SDR prototypes matching, §5.3 | yes             |
| attraction             | latent (SDR)   | SDR attraction, §5.4          | no              |
| repulsion              | latent (SDR)   | SDR repulsion, §5.5           | no              |
| feature_sparsity       | latent (SDR)   | SDR sparsification, §5.6      | no              |
| contrastive_distillation | contrastive  | UCD, §6                       | yes             |
| pseudo_label_ce        | classification | PLOP pseudo-label CE, §4.2    | no              |
| local_pod              | distillation   | PLOP Local POD, §4.1          | yes             |

REWRITERS holds the target rewriters (PLOP's `plop_pseudo_labels`, §4.2).
(§ numbers refer to the methods reference the implementations were written from.)
"""
from __future__ import annotations

from cslearn.losses.base import (IGNORE_INDEX, Batch, LossTerm, MissingOldModelError, SharedState, StepContext,
                                 TargetRewriter)
from cslearn.losses.classification import BinaryCrossEntropy, CrossEntropy, UnbiasedCrossEntropy
from cslearn.losses.distillation import (
    BinaryCrossEntropyDistillation,
    FeatureDistillation,
    KnowledgeDistillation,
    UnbiasedKnowledgeDistillation,
)
from cslearn.losses.init import init_new_from_background
from cslearn.losses.latent import Attraction, FeatureSparsity, PrototypeBank, PrototypeMatching, Repulsion
from cslearn.losses.contrastive import ContrastiveDistillation
from cslearn.losses.pod import LocalPOD
from cslearn.losses.pseudo_labels import EntropyPseudoLabels, PseudoLabelCrossEntropy

TERMS: dict[str, type[LossTerm]] = {
    # classification: what to predict from the labels
    "ce": CrossEntropy,
    "unbiased_ce": UnbiasedCrossEntropy,
    "bce": BinaryCrossEntropy,
    # distillation: stay close to the previous step's model
    "kd": KnowledgeDistillation,
    "unbiased_kd": UnbiasedKnowledgeDistillation,
    "bce_distillation": BinaryCrossEntropyDistillation,
    "feature_distillation": FeatureDistillation,
    # latent space (SDR); PM and attraction read the shared "sdr_prototypes" bank (latent.PrototypeBank)
    "prototype_matching": PrototypeMatching,
    "attraction": Attraction,
    "repulsion": Repulsion,
    "feature_sparsity": FeatureSparsity,
    # contrastive: pixel contrast against the old model's features
    "contrastive_distillation": ContrastiveDistillation,
    # PLOP: CE weighted by the pseudo-label factor, and Local POD
    "pseudo_label_ce": PseudoLabelCrossEntropy,
    "local_pod": LocalPOD,
}

# Target rewriters replace the labels at steps t >= 1 before the loss terms see them.
REWRITERS: dict[str, type[TargetRewriter]] = {
    "plop_pseudo_labels": EntropyPseudoLabels,
}

__all__ = [
    "Attraction",
    "ContrastiveDistillation",
    "EntropyPseudoLabels",
    "FeatureSparsity",
    "LocalPOD",
    "PrototypeBank",
    "PrototypeMatching",
    "PseudoLabelCrossEntropy",
    "Repulsion",
    "REWRITERS",
    "SharedState",
    "StepContext",
    "TargetRewriter",
    "IGNORE_INDEX",
    "TERMS",
    "Batch",
    "BinaryCrossEntropy",
    "BinaryCrossEntropyDistillation",
    "CrossEntropy",
    "FeatureDistillation",
    "KnowledgeDistillation",
    "LossTerm",
    "MissingOldModelError",
    "UnbiasedCrossEntropy",
    "UnbiasedKnowledgeDistillation",
    "init_new_from_background",
]
