"""Settings for the whole pytest session, tests and notebooks (nbval) alike.

Set here, at import time, before any test module imports `cslearn.course` and before nbval
starts a notebook kernel (kernels inherit this process's environment):
- CSLEARN_FAST=1: the notebooks run on the toy dataset on a CPU, whatever the machine has;
- CSLEARN_RUNS: a fresh temporary folder, so notebooks really train (no finished run or step-0
  checkpoint from an earlier session is reused) and nothing is written into the repository.
"""
from __future__ import annotations

import os
import shutil
import tempfile

os.environ["CSLEARN_FAST"] = "1"
_RUNS = tempfile.mkdtemp(prefix="cslearn-test-runs-")
os.environ["CSLEARN_RUNS"] = _RUNS


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_RUNS, ignore_errors=True)
