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
from tqdm.auto import tqdm

from cslearn import reports
from cslearn.checkpoints import claim_run_directory, copy_atomically, load_checkpoint, save_checkpoint
from cslearn.config import RunConfig
from cslearn.data.sources import StepData, open_step_data
from cslearn.distributed import Distributed, all_reduce_sum, barrier, init_from_environment
from cslearn.engine import evaluate, make_optimizer, poly_scheduler, train_one_epoch
from cslearn.losses.init import init_new_from_background
from cslearn.losses.base import StepContext
from cslearn.methods import Method, get_method, objective_for_step
from cslearn.metrics import summarize
from cslearn.models import Segmenter, build_model
from cslearn.protocol import Task, get_task


def resolve_device(name: str, world: Distributed = Distributed()) -> torch.device:
    """"auto" = the GPU (this process's GPU under torchrun) if there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world.enabled:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
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
    Under torchrun every process trains a DistributedDataParallel replica and rank 0 writes.
    `stop_after_epochs` stops after that many epochs in this call (a test hook that simulates
    a crash at an epoch boundary).
    """
    run_dir = Path(run_dir)
    world = init_from_environment()
    claim_run_directory(run_dir, config, write=False)  # every process refuses mixed settings...
    barrier(world)
    if world.is_main:
        claim_run_directory(run_dir, config)  # ...and rank 0 writes config.json
    barrier(world)
    task = get_task(config.data.dataset, config.data.task, config.data.order)
    method = get_method(config.method).for_task(task)
    train_task = get_task(task.dataset, "offline", config.data.order) if method.joint else task
    device = resolve_device(config.train.device, world)
    data = open_step_data(config.data)
    history = reports.load_history(run_dir)
    budget = [stop_after_epochs]  # epochs this call may still run (None: no limit)
    for step in range(train_task.num_steps):
        if (run_dir / f"step-{step}.pt").exists():
            continue
        cached = _step0_cache_file(step0_cache, config, method) if step == 0 and not method.joint else None
        if cached is not None and cached.exists():
            if world.is_main:
                copy_atomically(cached, run_dir / "step-0.pt")
            barrier(world)
            history.append(load_checkpoint(cached)["metrics"])
        else:
            entry = _train_step(config, method, task, train_task, step, data, run_dir, device, world, progress, budget)
            if entry is None:  # stopped by stop_after_epochs
                return history
            if cached is not None and world.is_main:
                copy_atomically(run_dir / "step-0.pt", cached)
            history.append(entry)
        if world.is_main:
            reports.write_history(run_dir, history, task, config.data.background_in_mean)
            (run_dir / "progress.pt").unlink(missing_ok=True)
        barrier(world)
        if on_step_end is not None and world.is_main:
            on_step_end(history[-1])
    return history


def _train_step(config: RunConfig, method: Method, task: Task, train_task: Task, step: int, data: StepData,
                run_dir: Path, device: torch.device, world: Distributed, progress: bool,
                budget: list[Optional[int]]) -> Optional[dict]:
    """Train and evaluate one step, resuming from `progress.pt`; write `step-<t>.pt` (rank 0)."""
    previous = load_checkpoint(run_dir / f"step-{step - 1}.pt") if step > 0 else None
    module, old_model = _models_for_step(config, train_task, step, previous, device)
    model = _distribute(module, device, world)
    objective = objective_for_step(method, step)
    num_old, num_new = train_task.num_old(step), len(train_task.new_classes(step))
    loader = data.train_loader(train_task, step, config.train.batch_size, config.train.seed, world.rank,
                               world.world_size)
    if previous is not None:  # e.g. SDR's prototypes of the classes learned so far
        objective.load_state_dict(previous["objective"], carry_over=True)
    loader.dataset.augmentation_seed = _seed(config.train.seed, step, -2)  # a pass before training (PLOP)
    objective.begin_step(StepContext(step=step, num_old=num_old, num_new=num_new, model=module,
                                     old_model=old_model, train_loader=loader, device=device, amp=config.train.amp))
    epochs = config.train.epochs if step == 0 else config.train.epochs_incremental
    lr = config.train.lr if step == 0 else config.train.lr_incremental
    optimizer = make_optimizer(model, lr, config.train.momentum, config.train.nesterov, config.train.weight_decay)
    scheduler = poly_scheduler(optimizer, epochs * (len(loader) // config.train.grad_accum), config.train.poly_power)
    scaler = torch.amp.GradScaler("cuda") if config.train.amp and device.type == "cuda" else None
    first_epoch, epoch_losses, started = 0, [], time.time()
    progress_file = run_dir / "progress.pt"
    if progress_file.exists():
        saved = load_checkpoint(progress_file)
        if saved["step"] == step:
            module.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            objective.load_state_dict(saved["objective"])
            if scaler is not None and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            first_epoch, epoch_losses = saved["epoch"] + 1, saved["losses"]
    show = progress and world.is_main
    for epoch in tqdm(range(first_epoch, epochs), desc=f"step {step}", disable=not show, initial=first_epoch,
                      total=epochs):
        if budget[0] is not None:
            if budget[0] <= 0:
                return None
            budget[0] -= 1
        loader.batch_sampler.set_epoch(_seed(config.train.seed, step, epoch))
        loader.dataset.augmentation_seed = _seed(config.train.seed, step, epoch)
        losses = train_one_epoch(model, old_model, loader, objective, optimizer, scheduler, step=step,
                                 num_old=num_old, num_new=num_new, device=device, amp=config.train.amp,
                                 scaler=scaler, grad_accum=config.train.grad_accum,
                                 channels_last=config.train.channels_last, freeze_bn=config.train.freeze_bn,
                                 progress=show, description=f"epoch {epoch + 1}/{epochs}")
        epoch_losses.append(_mean_over_processes(losses, device, world))
        if world.is_main:
            save_checkpoint({"step": step, "epoch": epoch, "model": module.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict() if scaler is not None else {},
                             "objective": objective.state_dict(), "losses": epoch_losses,
                             "rng": torch.get_rng_state(), "config": config.to_dict()}, progress_file)
    entry = _evaluate_step(module, data, task, train_task, step, config, device, world, show)
    entry.update(losses=epoch_losses, seconds=time.time() - started, method=method.name)
    if world.is_main:
        save_checkpoint({"step": step, "model": module.state_dict(), "classes_per_step": module.classes_per_step,
                         "objective": objective.state_dict(), "metrics": entry, "config": config.to_dict()},
                        run_dir / f"step-{step}.pt")
    barrier(world)
    return entry


def _distribute(module: Segmenter, device: torch.device, world: Distributed) -> torch.nn.Module:
    """The module itself in one process; a DDP replica (SyncBatchNorm on GPUs) under torchrun.
    On CPUs (gloo) PyTorch has no SyncBatchNorm: BatchNorm then sees each process's share of the
    batch (use train.freeze_bn to make N processes compute exactly what one process does)."""
    if not world.enabled:
        return module
    if device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index])
    return torch.nn.parallel.DistributedDataParallel(module)


def _mean_over_processes(losses: dict[str, float], device: torch.device, world: Distributed) -> dict[str, float]:
    if not world.enabled:
        return losses
    values = torch.tensor(list(losses.values()), dtype=torch.float64, device=device)  # (num_terms,)
    all_reduce_sum(values, world)
    return {name: value / world.world_size for name, value in zip(losses, values.tolist())}


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
                   config: RunConfig, device: torch.device, world: Distributed, progress: bool) -> dict:
    """Test on the val images of the seen classes (each process a share, confusion matrices
    summed); group classes as the task's final tables do."""
    report_step = task.num_steps - 1 if train_task is not task else step
    loader = data.test_loader(task, report_step, config.train.batch_size, world.rank, world.world_size)
    matrix = evaluate(model, loader, model.num_classes, device, amp=config.train.amp, progress=progress)
    all_reduce_sum(matrix.matrix, world)
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
    # Step 0 depends on the task only through its classes and the classes still to come (which
    # select and relabel its images): 15-1 and 15-5 share one step 0, as in MiB's index files.
    task = get_task(config.data.dataset, config.data.task, config.data.order)
    later = sorted(c for step in range(1, task.num_steps) for c in task.new_classes(step))
    settings["data"]["task"] = {"step0": list(task.new_classes(0)), "later": later}
    for section, key in (("train", "epochs_incremental"), ("train", "lr_incremental"), ("train", "device"),
                         ("data", "num_workers"), ("data", "root"), ("data", "index_dir")):
        settings[section].pop(key)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return Path(cache_dir) / f"step0-{digest}.pt"


def _seed(seed: int, step: int, epoch: int) -> int:
    return (seed * 1_000_003 + (step + 1) * 10_007 + (epoch + 1)) % (2 ** 31)
