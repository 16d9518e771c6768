"""Typed run settings and the named presets `fast`, `paper` and `colab`.

A run is described entirely by one `RunConfig` (saved as `config.json` in the run directory).
Presets give every field its value; command-line `--set section.key=value` overrides are
applied afterwards and always win (unlike the MiB lineage, where presets silently overwrote
command-line flags). Unknown keys raise.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class DataConfig:
    dataset: str = "toy"  # "toy", "voc" or "ade"
    root: Optional[str] = None  # dataset folder (voc / ade); the toy dataset is generated
    task: str = "15-1"
    setting: str = "overlapped"  # or "disjoint"
    order: Optional[list[int]] = None  # custom class order (foreground ids in order of arrival)
    index_dir: Optional[str] = None  # MiB's published per-step index files, used when given
    crop_size: int = 64
    eval_mode: str = "center_crop"  # or "whole"
    train_void: str = "ignore"  # see cslearn.protocol.Conventions
    test_future: str = "ignore"
    ade_class0: str = "ignore"
    background_in_mean: bool = False
    toy_train_images: int = 2000
    toy_val_images: int = 400
    num_workers: int = 0


@dataclass
class ModelConfig:
    name: str = "tiny"  # "tiny", "deeplabv3_resnet50", "deeplabv3_resnet101"
    output_stride: int = 16
    weights: Optional[str] = None  # "imagenet" downloads torchvision's ImageNet weights
    width: int = 32  # tiny model only


@dataclass
class TrainConfig:
    epochs: int = 12  # per step, step 0
    epochs_incremental: int = 12  # per step, steps >= 1
    batch_size: int = 16
    grad_accum: int = 1  # optimiser step every grad_accum batches (effective batch = product)
    lr: float = 0.01  # step 0
    lr_incremental: float = 0.001  # steps >= 1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    amp: bool = False  # float16 on CUDA, bfloat16 on CPU
    channels_last: bool = False
    freeze_bn: bool = False  # BatchNorm in eval mode while training (the reference's --fix_bn)
    device: str = "auto"  # "auto" = cuda if available, else cpu
    seed: int = 42


@dataclass
class RunConfig:
    method: str = "mib"
    preset: str = "fast"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        config = cls()
        for key, value in values.items():
            if key in ("data", "model", "train"):
                for inner_key, inner_value in value.items():
                    config.set(f"{key}.{inner_key}", inner_value)
            else:
                config.set(key, value)
        return config

    def set(self, dotted_key: str, value: Any) -> None:
        """Set `section.key` (or a top-level key); unknown keys raise with the valid ones."""
        *sections, key = dotted_key.split(".")
        target: Any = self
        for section in sections:
            if section not in ("data", "model", "train") or not hasattr(target, section):
                raise KeyError(f"unknown config section '{section}' in '{dotted_key}'; sections: data, model, train")
            target = getattr(target, section)
        names = [f.name for f in dataclasses.fields(target)]
        if key not in names or (not sections and key in ("data", "model", "train")):
            raise KeyError(f"unknown config key '{dotted_key}'; valid keys here: {', '.join(names)}")
        setattr(target, key, value)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Fields that may differ when a run is resumed: where and how fast it runs, not what it computes.
RESUME_MAY_DIFFER = ("train.device", "data.num_workers", "data.root", "data.index_dir")


Recipe = dict[str, tuple[Any, str]]  # dotted key -> (value, where the value comes from)
_P = "protocol.md §6.2"  # the reference's optimisation table (MiB paper / README, PLOP scripts)


def _paper(dataset: str) -> Recipe:
    """The reference recipe (MiB paper / PLOP scripts): DeepLab-V3, ResNet-101, OS16, ImageNet
    weights, batch 24, crop 512, 30 (VOC) or 60 (ADE) epochs per step, lr 0.01 / 0.001, poly 0.9,
    Nesterov SGD, weight decay 1e-4, last-epoch model, 512 centre-crop evaluation."""
    epochs = (60, f"ADE20K: 60 epochs per step, incremental steps too ({_P})") if dataset == "ade" else \
        (30, f"VOC: 30 epochs per step, incremental steps too ({_P})")
    return {
        "data.crop_size": (512, f"512x512 training crops, area-RRC (0.5, 2.0) + flip ({_P})"),
        "data.eval_mode": ("center_crop", f"test: shorter side 512, centre crop 512 ({_P})"),
        "data.num_workers": (4, "speed only, not part of the recipe"),
        "model.name": ("deeplabv3_resnet101", "DeepLab-V3 with ResNet-101 (protocol.md §6.1)"),
        "model.output_stride": (16, "output stride 16 (protocol.md §6.1)"),
        "model.weights": ("imagenet", "ImageNet backbone, torchvision's weights (SDR's path; MiB/PLOP use "
                                      "in-place-ABN weights: a deviation to state, protocol.md §6.2)"),
        "train.epochs": epochs, "train.epochs_incremental": epochs,
        "train.batch_size": (24, f"batch 24 = 12 per GPU x 2 GPUs ({_P})"),
        "train.grad_accum": (1, "no accumulation"),
        "train.lr": (0.01, f"lr 0.01 at step 0 ({_P})"),
        "train.lr_incremental": (0.001, f"lr 0.001 at steps >= 1 ({_P})"),
        "train.momentum": (0.9, f"SGD momentum 0.9 ({_P})"),
        "train.nesterov": (True, f"Nesterov SGD ({_P})"),
        "train.weight_decay": (1e-4, f"weight decay 1e-4 on all parameters ({_P})"),
        "train.poly_power": (0.9, f"poly schedule, power 0.9, per iteration, restarted each step ({_P})"),
        "train.amp": (False, f"MiB's default apex O0: float32 ({_P})"),
        "train.channels_last": (False, "speed only, not part of the recipe"),
        "train.freeze_bn": (False, f"the whole network trains at every step, BatchNorm too ({_P})"),
        "train.seed": (42, f"seed 42 ({_P})"),
    }


def _colab(dataset: str) -> Recipe:
    """Only the colab preset's own values; `make_config` derives the rest from the paper recipe."""
    note = "colab: fits a 16 GB T4 in a 12-hour session"
    return {"data.num_workers": (2, f"{note} (Colab has 2 CPU cores)"),
            "train.amp": (True, f"{note}: mixed precision"),
            "train.channels_last": (True, f"{note}: channels-last is faster with mixed precision")}


def _fast(dataset: str) -> Recipe:
    """Minutes on a CPU: the toy dataset at 64x64 with the tiny model."""
    fast = "fast preset: minutes on a CPU"
    return {"data.crop_size": (64, fast), "model.name": ("tiny", fast), "train.epochs": (12, fast),
            "train.epochs_incremental": (12, fast), "train.batch_size": (16, fast),
            "train.lr": (0.01, fast), "train.lr_incremental": (0.001, fast)}


PRESETS = {"fast": _fast, "paper": _paper, "colab": _colab}

_SDR = "LTTM/SDR README; lr from the maintainer in LTTM/SDR#1 (protocol.md §6.2, methods.md §5.8 item 11)"
# Where a method's reference code trains differently from the MiB recipe (paper and colab presets):
# (methods, datasets, tasks or None for any, values). A method spec uses its base's recipe.
METHOD_RECIPES: list[tuple[set[str], set[str], Optional[set[str]], Recipe]] = [
    ({"sdr", "mib+sdr"}, {"voc"}, None, {"train.lr": (1e-3, f"SDR on VOC: lr 1e-3 at step 0 ({_SDR})"),
                                         "train.lr_incremental": (1e-4, f"SDR on VOC: lr 1e-4 at steps >= 1 ({_SDR})"),
                                         "train.batch_size": (8, f"SDR on VOC: batch 8 on one GPU ({_SDR})")}),
    ({"sdr", "mib+sdr"}, {"ade"}, None, {"train.lr": (0.01, f"SDR on ADE20K: lr 1e-2 ({_SDR})"),
                                         "train.lr_incremental": (0.001, f"SDR on ADE20K: lr 1e-3 ({_SDR})"),
                                         "train.batch_size": (4, f"SDR on ADE20K: batch 4 on one GPU ({_SDR})")}),
    ({"plop", "plop+ucd"}, {"voc", "ade"}, None, {"train.amp": (True, f"PLOP scripts: apex O1, mixed precision ({_P})")}),
    ({"plop", "plop+ucd"}, {"voc"}, {"10-1"}, {"train.epochs_incremental": (
        10, f"PLOP scripts/voc/plop_10-1.sh: 10 epochs at steps 1-10 ({_P})")}),
    ({"mib+ucd", "mib+sdr+ucd"}, {"voc", "ade"}, None, {"train.amp": (
        True, f"UCD scripts at 51b783a: apex O1, mixed precision ({_P})")}),
]


def recipe(preset: str, dataset: str, method: str = "mib", task: str = "15-1") -> Recipe:
    """Every value a preset sets for this dataset, method and task, with its source."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; presets: {', '.join(PRESETS)}")
    values: Recipe = {"data.dataset": (dataset, "the dataset asked for")}
    values.update(PRESETS["paper" if preset == "colab" else preset](dataset))
    if preset in ("paper", "colab"):
        base = method.split(":")[0]
        for methods, datasets, tasks, changes in METHOD_RECIPES:
            if base in methods and dataset in datasets and (tasks is None or task in tasks):
                values.update(changes)
    if preset == "colab":
        values.update(_colab(dataset))
        batch, source = values["train.batch_size"]
        if batch > 12:  # 12 crops of 512 fit a T4 in mixed precision; accumulate to the recipe's batch
            accumulation = -(-batch // 12)
            values["train.batch_size"] = (batch // accumulation, f"colab: {source}, split to fit a T4")
            values["train.grad_accum"] = (accumulation, f"colab: keeps the effective batch of {batch} "
                                                        "(BatchNorm sees the smaller batch: the trade-off)")
    return values


def make_config(preset: str = "fast", dataset: str = "toy", overrides: Optional[dict[str, Any]] = None,
                **top_level: Any) -> RunConfig:
    """A RunConfig from a preset (with the method's recipe, see `recipe`), then `overrides`
    ({"train.epochs": 3, ...}) and top-level keys (method=..., or data fields such as task=...,
    setting=... for convenience)."""
    overrides = dict(overrides or {})
    method = top_level.get("method", overrides.get("method", RunConfig.method))
    task = overrides.get("data.task", top_level.get("task", DataConfig.task))
    config = RunConfig(preset=preset)
    for key, (value, _) in recipe(preset, dataset, method, task).items():
        config.set(key, value)
    for key, value in top_level.items():
        config.set(key if key in ("method",) else f"data.{key}", value)
    for key, value in overrides.items():
        config.set(key, value)
    return config


def describe(config: RunConfig) -> list[str]:
    """One line per setting: its value and where it comes from (the recipe's source, an
    override, or cslearn's default), printed at the start of a run and by --dry-run."""
    sources = recipe(config.preset, config.data.dataset, config.method, config.data.task)
    defaults = RunConfig().to_dict()
    lines = [f"method = {config.method!r}  (the method asked for)"]
    for section, values in config.to_dict().items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted in ("data.task", "data.setting"):
                source = "asked for"
            elif dotted in sources and sources[dotted][0] == value:
                source = sources[dotted][1]
            elif dotted in sources:
                source = f"set for this run (the {config.preset} recipe says {sources[dotted][0]!r}: {sources[dotted][1]})"
            elif value == defaults[section][key]:
                source = "cslearn default"
            else:
                source = "set for this run"
            lines.append(f"{dotted} = {value!r}  ({source})")
    return lines


def differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for refusing a bad resume)."""
    keys = sorted(set(saved) | set(current))
    found = []
    for key in keys:
        dotted = f"{prefix}{key}"
        left, right = saved.get(key), current.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += differences(left, right, prefix=f"{dotted}.")
        elif left != right and dotted not in RESUME_MAY_DIFFER:
            found.append(f"{dotted}: saved {left!r}, now {right!r}")
    return found
