"""`run_protocol`: every step of a class-incremental experiment, in one process, resumable.

For each step t: build the model with the classifiers of steps 0..t (loading step t-1's weights
strictly), freeze a copy of the step t-1 model as the old model (once per step), initialise the
new classifier, train, evaluate on the test images of the seen classes, and write
`step-<t>.pt` atomically. Inside a step, `progress.pt` is written after every epoch; a killed run
resumes from the last finished epoch and gives the same result as an uninterrupted one, because
every epoch reseeds its randomness from (seed, step, epoch). Taught in `03_catastrophic_forgetting`.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cslearn import reports
from cslearn.checkpoints import claim_run_directory, copy_atomically, load_checkpoint, save_checkpoint
from cslearn.config import RunConfig
from cslearn.data.sources import StepData, open_step_data
from cslearn.engine import evaluate, make_optimizer, poly_scheduler, train_one_epoch
from cslearn.losses.init import init_new_from_background
from cslearn.losses.base import StepContext
from cslearn.methods import Method, get_method, objective_for_step
from cslearn.metrics import summarize
from cslearn.models import Segmenter, build_model
from cslearn.protocol import Task, get_task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_protocol(config: RunConfig, run_dir: Path | str, *, progress: bool = True,
                 on_step_end: Optional[Callable[[dict], None]] = None,
                 step0_cache: Optional[Path | str] = None,
                 stop_after_epochs: Optional[int] = None) -> list[dict]:
    """Run (or resume) the experiment described by `config` in `run_dir`; return the history.

    The history has one entry per step: per-class IoU, the old/new/all summary and per-epoch
    loss values. Step 0 is plain cross-entropy for every method, so with `step0_cache` (a
    folder) its checkpoint is stored under a hash of the settings it depends on and reused
    by every later run that shares them (methods compared on one task train step 0 once).
    `stop_after_epochs` stops after that many epochs in this call (a test hook that simulates
    a crash at an epoch boundary).
    """
    run_dir = Path(run_dir)
    claim_run_directory(run_dir, config)
    task = get_task(config.data.dataset, config.data.task, config.data.order)
    method = get_method(config.method).for_task(task)
    train_task = get_task(task.dataset, "offline", config.data.order) if method.joint else task
    device = resolve_device(config.train.device)
    data = open_step_data(config.data)
    history = reports.load_history(run_dir)
    epochs_run = 0
    for step in range(train_task.num_steps):
        if (run_dir / f"step-{step}.pt").exists():
            continue
        cached = _step0_cache_file(step0_cache, config, method) if step == 0 and not method.joint else None
        if cached is not None and cached.exists():
            copy_atomically(cached, run_dir / "step-0.pt")
            history.append(load_checkpoint(run_dir / "step-0.pt")["metrics"])
            reports.write_history(run_dir, history, task, config.data.background_in_mean)
            continue
        previous = load_checkpoint(run_dir / f"step-{step - 1}.pt") if step > 0 else None
        model, old_model = _models_for_step(config, train_task, step, previous, device)
        objective = objective_for_step(method, step)
        num_old, num_new = train_task.num_old(step), len(train_task.new_classes(step))
        loader = data.train_loader(train_task, step, config.train.batch_size, seed=config.train.seed)
        if previous is not None:  # e.g. SDR's prototypes of the classes learned so far
            objective.load_state_dict(previous["objective"], carry_over=True)
        torch.manual_seed(_seed(config.train.seed, step, -2))  # a pass before training (PLOP) draws augmentations
        objective.begin_step(StepContext(step=step, num_old=num_old, num_new=num_new, model=model,
                                         old_model=old_model, train_loader=loader, device=device,
                                         amp=config.train.amp))
        epochs = config.train.epochs if step == 0 else config.train.epochs_incremental
        lr = config.train.lr if step == 0 else config.train.lr_incremental
        optimizer = make_optimizer(model, lr, config.train.momentum, config.train.nesterov, config.train.weight_decay)
        iterations = epochs * (len(loader) // config.train.grad_accum)
        scheduler = poly_scheduler(optimizer, iterations, config.train.poly_power)
        use_scaler = config.train.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        first_epoch, epoch_losses, started = 0, [], time.time()
        progress_file = run_dir / "progress.pt"
        if progress_file.exists():
            saved = load_checkpoint(progress_file)
            if saved["step"] == step:
                model.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
                objective.load_state_dict(saved["objective"])
                if scaler is not None and saved.get("scaler"):
                    scaler.load_state_dict(saved["scaler"])
                first_epoch, epoch_losses = saved["epoch"] + 1, saved["losses"]
        for epoch in tqdm(range(first_epoch, epochs), desc=f"step {step}", disable=not progress,
                          initial=first_epoch, total=epochs):
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                return history
            loader.sampler.generator.manual_seed(_seed(config.train.seed, step, epoch))
            torch.manual_seed(_seed(config.train.seed, step, epoch) + 1)  # augmentations
            losses = train_one_epoch(model, old_model, loader, objective, optimizer, scheduler, step=step,
                                     num_old=num_old, num_new=num_new, device=device, amp=config.train.amp,
                                     scaler=scaler, grad_accum=config.train.grad_accum,
                                     channels_last=config.train.channels_last, progress=progress,
                                     description=f"epoch {epoch + 1}/{epochs}")
            epoch_losses.append(losses)
            epochs_run += 1
            save_checkpoint({"step": step, "epoch": epoch, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict() if scaler is not None else {},
                             "objective": objective.state_dict(), "losses": epoch_losses,
                             "rng": torch.get_rng_state(), "config": config.to_dict()}, progress_file)
        entry = _evaluate_step(model, data, task, train_task, step, config, device, progress)
        entry.update(losses=epoch_losses, seconds=time.time() - started, method=method.name)
        save_checkpoint({"step": step, "model": model.state_dict(), "classes_per_step": model.classes_per_step,
                         "objective": objective.state_dict(), "metrics": entry, "config": config.to_dict()},
                        run_dir / f"step-{step}.pt")
        if cached is not None:
            copy_atomically(run_dir / "step-0.pt", cached)
        history.append(entry)
        reports.write_history(run_dir, history, task, config.data.background_in_mean)
        progress_file.unlink(missing_ok=True)
        if on_step_end is not None:
            on_step_end(entry)
    return history


def _models_for_step(config: RunConfig, task: Task, step: int, previous: Optional[dict],
                     device: torch.device) -> tuple[Segmenter, Optional[Segmenter]]:
    """The model to train at `step` (the previous step's checkpoint `previous` + a new
    classifier) and the frozen old model."""
    torch.manual_seed(_seed(config.train.seed, step, -1))  # new classifier (and step-0) init
    model = build_model(config.model.name, task.classes_per_step[:step + 1],
                        output_stride=config.model.output_stride,
                        weights=config.model.weights if step == 0 else None,
                        **({"width": config.model.width} if config.model.name == "tiny" else {}))
    old_model = None
    if step > 0:
        old_model = build_model(config.model.name, task.classes_per_step[:step],
                                output_stride=config.model.output_stride,
                                **({"width": config.model.width} if config.model.name == "tiny" else {}))
        old_model.load_state_dict(previous["model"])  # strict
        model.load_state_dict(_with_new_classifier(previous["model"], model))
        if get_method(config.method).classifier_init == "background":
            init_new_from_background(model.classifiers[-1], model.classifiers[0])
        old_model = old_model.freeze().to(device)
    model = model.to(device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, old_model


def _with_new_classifier(old_state: dict, model: Segmenter) -> dict:
    """The previous step's weights plus the freshly initialised new classifier (strict load)."""
    state = dict(model.state_dict())
    for key, value in old_state.items():
        if key not in state:
            raise KeyError(f"checkpoint key {key} does not exist in the step model")
        state[key] = value
    return state


def _evaluate_step(model: Segmenter, data: StepData, task: Task, train_task: Task, step: int,
                   config: RunConfig, device: torch.device, progress: bool) -> dict:
    """Test on the val images of the seen classes; group classes as the task's final tables do."""
    report_step = task.num_steps - 1 if train_task is not task else step
    loader = data.test_loader(task, report_step, config.train.batch_size)
    matrix = evaluate(model, loader, model.num_classes, device, amp=config.train.amp, progress=progress)
    iou = matrix.iou()
    return {"step": step, "iou": iou, "summary": summarize(iou, task.classes_per_step, report_step),
            "seen_classes": list(task.seen_classes(report_step))}


def _step0_cache_file(cache_dir: Optional[Path | str], config: RunConfig, method: Method) -> Optional[Path]:
    """`<cache_dir>/step0-<hash>.pt`, the hash covering every setting that step 0 depends on:
    the config without the method, plus the method's terms that observe step 0 (SDR)."""
    if cache_dir is None:
        return None
    settings = config.to_dict()
    settings["method"] = method.step0_signature()
    for section, key in (("train", "epochs_incremental"), ("train", "lr_incremental"), ("train", "device"),
                         ("data", "num_workers"), ("data", "root"), ("data", "index_dir")):
        settings[section].pop(key)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return Path(cache_dir) / f"step0-{digest}.pt"


def _seed(seed: int, step: int, epoch: int) -> int:
    return (seed * 1_000_003 + (step + 1) * 10_007 + (epoch + 1)) % (2 ** 31)
