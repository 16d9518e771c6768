"""Multi-process training with the gloo backend on CPU: N processes compute what one process does."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cslearn.checkpoints import load_checkpoint
from cslearn.config import RunConfig, make_config
from cslearn.continual import run_protocol

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, run_dir: str, config: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        run_protocol(RunConfig.from_dict(config), run_dir, progress=False)
    finally:
        dist.destroy_process_group()


def _config(**overrides) -> RunConfig:
    values = {"data.task": "15-5", "data.toy_train_images": 64, "data.toy_val_images": 24, "model.width": 4,
              "train.epochs": 2, "train.epochs_incremental": 1, "train.batch_size": 8, "train.device": "cpu",
              "train.freeze_bn": True}
    values.update(overrides)
    return make_config("fast", "toy", values, method="mib")


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    config = _config()
    single = run_protocol(config, tmp_path / "single", progress=False)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), config.to_dict()), nprocs=2, join=True)
    for step in (0, 1):
        expected = load_checkpoint(tmp_path / "single" / f"step-{step}.pt")
        produced = load_checkpoint(tmp_path / "ddp" / f"step-{step}.pt")
        for key, value in expected["model"].items():
            torch.testing.assert_close(produced["model"][key], value, atol=1e-5, rtol=1e-4, msg=key)
        # the test set is split between the processes and the confusion matrices summed
        np.testing.assert_allclose(produced["metrics"]["iou"], single[step]["iou"], atol=1e-6)
    assert not list((tmp_path / "ddp").glob("*.tmp"))  # only rank 0 wrote, atomically


def test_batch_norm_training_runs_distributed(tmp_path):
    config = _config(**{"train.freeze_bn": False, "train.epochs": 1})
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), config.to_dict()), nprocs=2, join=True)
    assert (tmp_path / "ddp" / "step-1.pt").exists() and (tmp_path / "ddp" / "history.json").exists()


def test_batch_must_split_evenly_over_processes():
    from cslearn.data.sources import GlobalBatchSampler

    with pytest.raises(ValueError, match="multiple of the number of processes"):
        GlobalBatchSampler(100, 6, rank=0, world_size=4)
    batches = [list(GlobalBatchSampler(10, 4, rank, 2, seed=3)) for rank in (0, 1)]
    whole = list(GlobalBatchSampler(10, 4, 0, 1, seed=3))
    assert [a + b for a, b in zip(*batches)] == whole  # the shares of the processes form the global batches
