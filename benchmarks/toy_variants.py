"""Run another benchmark script with the toy's classes 16-20 drawn differently (not a test).

    python benchmarks/toy_variants.py VARIANT SCRIPT [ARGS...]
    python benchmarks/toy_variants.py between benchmarks/toy_protocol.py --runs DIR --methods mib,mib+sdr,mib+ucd --no-write
    python benchmarks/toy_variants.py between benchmarks/toy_forgetting.py DIR/mib-seed0 DIR/mib+sdr-seed0

On the standard toy, classes 16-20 (new in 15-1) are striped versions of the solid classes 6-10.
A variant changes only how classes 16-20 are drawn, to test whether the toy results hold when
the new classes resemble the old ones in another way (the question of BENCHMARKS.md, "Where
MiB's old-class mIoU goes on the toy"):
- between: solid blobs of the hue halfway between two neighbouring old colours (16 between
  teal and cyan, ..., 20 between pink and red);
- dark: darker solid versions of classes 1-5 (brightness 0.45-0.6 instead of 0.8-1.1).
Each variant draws the same random numbers as the standard drawing (the stripes' angle and
period too, unused), so every image keeps its shapes, classes and clutter: only the pixels of
classes 16-20 change. The script runs in this process (`runpy`), so every toy image it renders
uses the variant. Use a separate --runs folder per variant: the step-0 cache key does not know
about the variant. Pass the same VARIANT to toy_forgetting.py, which renders the test images again.
"""
from __future__ import annotations

import runpy
import sys

import numpy as np

import cslearn.data.toy as toy

STANDARD = toy._appearance
COLOURS = np.array(list(toy.COLOURS.values()), dtype=np.float32)  # (10, 3) RGB in [0, 1]


def solid(colour: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.clip(np.broadcast_to(colour, rows.shape + (3,)), 0, 1).astype(np.float32)  # (S, S, 3)


def between(rng: np.random.Generator, class_id: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if class_id <= 15:
        return STANDARD(rng, class_id, rows, cols)
    k = class_id - 11  # 5..9: halfway between colour k and colour k + 1 (0-based, wrapping round)
    brightness = rng.uniform(0.8, 1.1)
    rng.uniform(0, np.pi), rng.uniform(4.0, 6.0)  # the stripes' angle and period, drawn and unused
    return solid(0.5 * (COLOURS[k] + COLOURS[(k + 1) % 10]) * brightness, rows)


def dark(rng: np.random.Generator, class_id: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if class_id <= 15:
        return STANDARD(rng, class_id, rows, cols)
    brightness = rng.uniform(0.45, 0.6)  # colours of classes 1-5, darker
    rng.uniform(0, np.pi), rng.uniform(4.0, 6.0)  # the stripes' angle and period, drawn and unused
    return solid(COLOURS[class_id - 16] * brightness, rows)


VARIANTS = {"between": between, "dark": dark}


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in VARIANTS:
        raise SystemExit(f"usage: python benchmarks/toy_variants.py {{{','.join(VARIANTS)}}} SCRIPT [ARGS...]")
    toy._appearance = VARIANTS[sys.argv[1]]  # render_image looks it up at every call
    script = sys.argv[2]
    sys.argv = [script, *sys.argv[3:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
