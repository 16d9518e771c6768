"""Peak extra memory of one piece of work on a Linux CPU, measured inside the process doing it.

    from benchmarks.memory import peak_growth_bytes
    extra = peak_growth_bytes(run)   # bytes above the resident size just before run()

Why not `resource.getrusage(...).ru_maxrss` in a fresh subprocess: the child of a large parent
inherits the parent's resident size as its high-water mark (fork, or vfork, then exec keep it),
so every child of a benchmark that holds a model or a batch looks that large (an earlier version
of these benchmarks reported +3.87 GiB for every loss term that way). Instead the kernel's
high-water mark (VmHWM) is reset just before the work (`/proc/self/clear_refs`, "5", Linux >= 4.0)
and read after it. Subprocesses run with glibc's MALLOC_MMAP_THRESHOLD_=131072, so every large
tensor is mmap-ed and returned on free and the resident size follows the live tensors.
"""
from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from typing import Callable

GIB = 2.0 ** 30


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1))


def resident_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def peak_growth_bytes(work: Callable[[], object]) -> int:
    """Run `work()` and return how far the resident size rose above its value just before."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset VmHWM to the current resident size
    except OSError as error:
        raise SystemExit(f"peak memory needs Linux >= 4.0 (/proc/self/clear_refs): {error}; "
                         "rerun with --skip-memory") from None
    base = resident_bytes()
    work()
    return _status_kib("VmHWM") * 1024 - base


def run_python(code: str) -> str:
    """Run `code` in a fresh Python (repository root on the path) and return its last output line."""
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=environment, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return result.stdout.strip().splitlines()[-1]
