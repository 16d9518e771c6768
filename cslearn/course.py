"""What every course notebook uses: FAST or full mode, run folders, and runs that share step 0.

    from cslearn import course
    config = course.course_config("ft")          # toy + tiny model in FAST mode, VOC on a GPU otherwise
    history = course.run("ft")                   # run_protocol in a course run folder, step 0 shared
    model = history.model(step=0)                # the model after any step, from its checkpoint

FAST mode (`CSLEARN_FAST=1`, the default without a CUDA GPU or without a dataset folder in
`CSLEARN_DATA`, and always under pytest) runs on the toy dataset on a CPU, with fewer images and
epochs than the `fast` preset so that each notebook runs in about three minutes on two cores.
Full mode runs the same cells on Pascal VOC (root `CSLEARN_DATA`) with the `colab` preset.

Runs are written under `runs_root()`: `CSLEARN_RUNS` if set, else `/content/cslearn-runs` in
Colab (or a Google Drive folder after `use_drive()`), else `runs/course` in the repository. A
run's folder name holds a hash of its settings, so running a notebook again reuses finished
runs and changed settings start a new run. Step 0 is plain cross-entropy for every method and
is cached in `<runs_root>/step0-cache`, so all notebooks share one step-0 checkpoint per setting.
Introduced in `00_welcome_and_setup`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

from cslearn.checkpoints import load_checkpoint
from cslearn.config import RESUME_MAY_DIFFER, DataConfig, ModelConfig, RunConfig, TrainConfig, make_config
from cslearn.continual import run_protocol
from cslearn.methods import get_method
from cslearn.models import Segmenter, build_model
from cslearn.models.output import predicted_labels
from cslearn.protocol import get_task

ENV_FAST, ENV_DATA, ENV_RUNS = "CSLEARN_FAST", "CSLEARN_DATA", "CSLEARN_RUNS"
COLAB_RUNS = Path("/content/cslearn-runs")
# FAST mode: the `fast` preset (toy dataset, tiny model, 64x64) on half its images with fewer
# epochs (a fifth of its step-0 iterations, a quarter of its incremental ones) at five times
# its learning rates (the 10:1 ratio between step 0 and later steps is kept), tested on 200
# images. Fitted to three minutes per notebook on two CPU cores (BENCHMARKS.md) while keeping
# the effects visible: joint training learns every class (all-mIoU about 0.9), fine-tuning
# forgets (keeps a few % of its old-class mIoU), MiB keeps more than 90 %.
FAST_OVERRIDES: dict[str, Any] = {
    "data.toy_train_images": 1000, "data.toy_val_images": 200,
    "train.epochs": 5, "train.epochs_incremental": 6, "train.lr": 0.05, "train.lr_incremental": 0.005,
}
_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def in_colab() -> bool:
    """True inside Google Colab (its `google.colab` module is loaded at start-up)."""
    return "google.colab" in sys.modules


def device() -> torch.device:
    """The GPU when there is one, else the CPU (the training loop's "auto" device)."""
    from cslearn.continual import resolve_device

    return resolve_device("auto")


def fast_mode(environ: Optional[Mapping[str, str]] = None, cuda: Optional[bool] = None) -> bool:
    """`CSLEARN_FAST` ("1"/"0", also true/false/yes/no) if set; otherwise FAST unless there is
    both a CUDA GPU and a dataset folder in `CSLEARN_DATA` (or `CSLEARN_DATA_VOC` / `_ADE`)."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_FAST, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise ValueError(f"{ENV_FAST} must be 1 or 0, got {environ[ENV_FAST]!r}")
    has_gpu = torch.cuda.is_available() if cuda is None else cuda
    has_data = any(environ.get(name) for name in (ENV_DATA, f"{ENV_DATA}_VOC", f"{ENV_DATA}_ADE"))
    return not (has_gpu and has_data)


FAST: bool = fast_mode()


def _dotted(key: str) -> str:
    """"train.epochs" stays; a bare field name ("epochs", "setting") gets its section."""
    if "." in key:
        return key
    sections = [name for name, section in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(section)}]
    if len(sections) != 1:
        raise KeyError(f"unknown setting '{key}'; use a field of DataConfig, ModelConfig or TrainConfig "
                       f"(see cslearn/config.py), or a dotted key such as 'train.epochs'")
    return f"{sections[0]}.{key}"


# FAST mode on a generated VOC / ADE20K folder (the full-run notebooks): the `fast` preset on a few
# hundred small images in the real on-disk format, so every cell of a full run is exercised; the
# numbers mean nothing (tiny model, tiny data), only that the pipeline runs end to end.
GENERATED_DATA: dict[str, dict[str, Any]] = {
    "voc": {"num_train": 240, "num_val": 60, "size": (72, 96), "max_objects": 3},
    "ade": {"num_train": 300, "num_val": 60, "size": (72, 96), "max_objects": 6},
}
GENERATED_OVERRIDES: dict[str, Any] = {"train.epochs": 2, "train.epochs_incremental": 1, "train.lr": 0.05,
                                       "train.lr_incremental": 0.005, "train.batch_size": 16}


def generated_dataset(dataset: str) -> Path:
    """A small generated `dataset` ("voc" or "ade") folder in the real on-disk format, written once
    into `<runs_root>/generated-<dataset>` (seconds) and reused; returns the folder to use as root."""
    from cslearn.data.synthetic import make_ade_folder, make_voc_folder

    if dataset not in GENERATED_DATA:
        raise ValueError(f"only 'voc' and 'ade' have generated stand-ins, not '{dataset}'")
    root = runs_root() / f"generated-{dataset}"
    done = root / "COMPLETE"
    if not done.exists():  # written last: an interrupted generation is redone
        make_folder = make_voc_folder if dataset == "voc" else make_ade_folder
        make_folder(root, seed=0, **GENERATED_DATA[dataset])
        done.write_text("generated by cslearn.course.generated_dataset\n")
    return root


def _data_root(dataset: str) -> Optional[str]:
    """`CSLEARN_DATA_VOC` / `CSLEARN_DATA_ADE` if set, else `CSLEARN_DATA`."""
    return os.environ.get(f"{ENV_DATA}_{dataset.upper()}") or os.environ.get(ENV_DATA)


def course_config(method: str, task: str = "15-1", *, dataset: Optional[str] = None, fast: Optional[bool] = None,
                  preset: str = "colab", **overrides: Any) -> RunConfig:
    """The RunConfig of a course experiment.

    FAST: preset `fast` on the toy dataset with `FAST_OVERRIDES`, or, with dataset="voc"/"ade",
    on a generated folder in that dataset's format (`generated_dataset`, `GENERATED_OVERRIDES`).
    Full: `preset` ("colab", or "paper") on `dataset` (default "voc") with root
    `CSLEARN_DATA_<DATASET>` or `CSLEARN_DATA`. `overrides` win over all; keys are field names
    (`setting="disjoint"`, `epochs=3`) or dotted keys (`**{"train.epochs": 3}`).
    """
    fast = FAST if fast is None else fast
    values = {_dotted(key): value for key, value in overrides.items()}
    if fast and dataset in (None, "toy"):
        return make_config("fast", "toy", {"data.task": task, **FAST_OVERRIDES, **values}, method=method)
    if fast:
        root = str(generated_dataset(dataset))
        return make_config("fast", dataset, {"data.task": task, "data.root": root, **GENERATED_OVERRIDES, **values},
                           method=method)
    dataset = dataset or "voc"
    root = _data_root(dataset)
    if not root and "data.root" not in values:
        raise ValueError(f"full mode needs the dataset folder: set {ENV_DATA}=<folder> (or {ENV_DATA}_"
                         f"{dataset.upper()}; see data/README.md), or {ENV_FAST}=1 for the toy dataset")
    return make_config(preset, dataset, {"data.task": task, "data.root": root, **values}, method=method)


def runs_root() -> Path:
    """Where course runs go: `CSLEARN_RUNS`, else Colab's /content/cslearn-runs, else
    `runs/course` in the repository (or in the current folder for an installed package)."""
    if os.environ.get(ENV_RUNS):
        return Path(os.environ[ENV_RUNS]).expanduser()
    if in_colab():
        return COLAB_RUNS
    repository = Path(__file__).resolve().parent.parent
    base = repository if (repository / "pyproject.toml").exists() else Path.cwd()
    return base / "runs" / "course"


def run_dir(name: str) -> Path:
    """The folder of the course run `name` (created if needed)."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"a run name is a relative folder name inside {runs_root()}, got {name!r}")
    path = runs_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_name(config: RunConfig) -> str:
    """"<dataset>-<task>-<setting>-<method>-<hash of the settings>"; settings that may change
    on resume (device, workers, data root) are left out of the hash."""
    settings = config.to_dict()
    for dotted in RESUME_MAY_DIFFER:
        section, key = dotted.split(".")
        settings[section].pop(key, None)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    data = config.data
    method = re.sub(r"[^A-Za-z0-9+._=-]", "_", config.method)  # a spec's ":" and "," are not folder-safe everywhere
    return f"{data.dataset}-{data.task}-{data.setting}-{method}-{digest}"


class CourseRun(list):
    """The history of a run (a list with one dict per step, as `run_protocol` returns), plus
    where it lives: `run_dir`, `config`, and `model(step)` to reload a step's model."""

    def __init__(self, history: Sequence[dict], run_dir: Path, config: RunConfig) -> None:
        super().__init__(history)
        self.run_dir, self.config = run_dir, config

    def model(self, step: int = -1, on: Optional[torch.device | str] = None) -> Segmenter:
        """The model after `step` (negative counts from the end), in eval mode."""
        return load_model(self.run_dir, range(len(self))[step], on)


def run(method: str, task: str = "15-1", *, name: Optional[str] = None, progress: Optional[bool] = None,
        fast: Optional[bool] = None, dataset: Optional[str] = None, preset: str = "colab",
        **overrides: Any) -> CourseRun:
    """Run (or resume, or just reload) `method` on `task` with `course_config` settings
    (`dataset`: None/"toy", or "voc"/"ade", generated in FAST mode; `preset` in full mode).

    The run folder is `run_dir(name or run_name(config))`; step 0 comes from the shared cache
    `<runs_root>/step0-cache` when another run already trained it with the same settings.
    progress: True = `run_protocol`'s bars (steps, epochs, batches); False = none; None (the
    default) = those in full mode, one bar over the steps in FAST mode. A FAST run lasts a
    minute or two, and a few updates keep a notebook's output small: under nbval, thousands of
    progress-widget messages in one cell overflow the kernel's message queue.
    """
    fast = FAST if fast is None else fast
    config = course_config(method, task, fast=fast, dataset=dataset, preset=preset, **overrides)
    directory = run_dir(name or run_name(config))
    on_step_end, bar = None, None
    if progress is None and fast:
        num_steps = 1 if get_method(method).joint else get_task(config.data.dataset, task, config.data.order).num_steps
        bar = tqdm(total=num_steps, desc=f"{method} {task}", unit="step")

        def on_step_end(entry: dict) -> None:
            bar.set_postfix_str(f"step {entry['step']}: all-mIoU {100 * entry['summary']['all']:.1f}%")
            bar.update(1)
    try:
        history = run_protocol(config, directory, progress=bool(progress) if progress is not None else not fast,
                               on_step_end=on_step_end, step0_cache=runs_root() / "step0-cache")
        if bar is not None:
            bar.update(len(history) - bar.n)  # steps reloaded from a checkpoint or the step-0 cache
    finally:
        if bar is not None:
            bar.close()
    return CourseRun(history, directory, config)


def model_for(config: RunConfig, classes_per_step: Sequence[int], pretrained: bool = True) -> Segmenter:
    """The model of `config` (tiny in FAST mode, DeepLab-V3 otherwise) with one classifier per
    entry of `classes_per_step`; `pretrained` loads the configured backbone weights, if any."""
    options = {"width": config.model.width} if config.model.name == "tiny" else {}
    return build_model(config.model.name, classes_per_step, output_stride=config.model.output_stride,
                       weights=config.model.weights if pretrained else None, **options)


def load_model(run_directory: Path | str, step: int, on: Optional[torch.device | str] = None) -> Segmenter:
    """Rebuild the model saved in `<run_directory>/step-<step>.pt` (strict load), in eval mode."""
    checkpoint = load_checkpoint(Path(run_directory) / f"step-{step}.pt")
    model = model_for(RunConfig.from_dict(checkpoint["config"]), checkpoint["classes_per_step"], pretrained=False)
    model.load_state_dict(checkpoint["model"])
    return model.to(on or device()).eval()


@torch.no_grad()
def predict(model: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """Argmax labels (B, H, W) on the CPU for a batch of normalised images (B, 3, H, W)."""
    model.eval()
    parameter = next(model.parameters())
    logits = model(images.to(parameter.device)).logits  # (B, C_seen, H, W)
    return predicted_labels(logits).cpu()


def use_drive(folder: str = "cslearn-runs") -> Path:
    """In Colab: mount Google Drive and keep course runs in `MyDrive/<folder>`, so they survive
    the end of the Colab session. Sets `CSLEARN_RUNS` for this session and returns the folder."""
    if not in_colab():
        raise RuntimeError("use_drive() is for Google Colab; elsewhere set CSLEARN_RUNS to any folder")
    from google.colab import drive  # type: ignore[import-not-found]

    mount_point = COLAB_RUNS.parent / "drive"
    drive.mount(str(mount_point))
    root = mount_point / "MyDrive" / folder
    root.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_RUNS] = str(root)
    return root


def ablate(method: str, task: str = "15-1", *, drop: Sequence[str] = (), sweep: Optional[Mapping[str, Sequence]] = None,
           specs: Optional[Sequence[str]] = None, seeds: int = 1, name: str = "ablation", fast: Optional[bool] = None,
           dataset: Optional[str] = None, preset: str = "colab", on_run_end=None, figures: bool = True,
           progress: bool = False, **overrides: Any):
    """`cslearn.ablation.run_grid` with the course's settings (those of `course_config`): each
    variant x seed is a course run (a variant some notebook already ran is reloaded), step 0 comes
    from the course's shared cache, and the table and figures go to `run_dir(name)`. Returns the
    tidy DataFrame. `overrides` are `course_config` settings (epochs=3, seed=7, ...) for every run;
    seed k of the grid trains with the configured seed + k."""
    from cslearn.ablation import run_grid

    config = course_config(method, task, fast=fast, dataset=dataset, preset=preset, **overrides)
    values = config.to_dict()
    overrides = {f"{section}.{key}": value for section in ("data", "model", "train")
                 for key, value in values[section].items()}
    return run_grid(method, task, dataset=config.data.dataset, drop=drop, sweep=sweep, specs=specs, seeds=seeds,
                    preset=config.preset, overrides=overrides, out=run_dir(name),
                    run_dir_for=lambda variant: run_dir(run_name(variant)), step0_cache=runs_root() / "step0-cache",
                    on_run_end=on_run_end, figures=figures, progress=progress)

