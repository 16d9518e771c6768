"""Colour palettes for label maps: Pascal VOC's colour map, the toy dataset's colours, ADE20K.

A palette is a (256, 3) uint8 array indexed by label value, so `palette[mask]` colours a whole
mask in one vectorised lookup. Entry 255 (ignore / void) is VOC's cream outline colour in every
palette; entry 0 (background, or ADE's "other") is black. Pure numpy, used by `cslearn.viz`.
"""
from __future__ import annotations

import colorsys

import numpy as np

IGNORE_COLOUR = (224, 224, 192)  # VOC's void outline colour, label 255

# The toy dataset's object colours, in class order (the same values as `cslearn.data.toy.COLOURS`;
# tests/test_viz.py checks that they agree). Class c in 1..10 is a disc of colour c, class c + 10
# a striped blob of the same colour: the palette draws stripes in a darker shade of that colour.
TOY_COLOURS = (
    (0.9, 0.1, 0.1), (1.0, 0.55, 0.0), (0.95, 0.9, 0.1), (0.55, 0.95, 0.2), (0.05, 0.55, 0.15),
    (0.0, 0.6, 0.6), (0.3, 0.85, 1.0), (0.1, 0.2, 0.9), (0.55, 0.15, 0.75), (1.0, 0.45, 0.75),
)
STRIPES_SHADE = 0.5


def voc_palette() -> np.ndarray:
    """The colour map of the Pascal VOC label PNGs: the bits of the label spread over R, G, B
    from the most significant bit down (1 aeroplane = (128, 0, 0), 15 person = (192, 128, 128),
    255 void = (224, 224, 192))."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        value, red, green, blue = label, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[label] = (red, green, blue)
    return palette


def toy_palette() -> np.ndarray:
    """Background black, discs (1-10) in their own colour, stripes (11-20) in a darker shade."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    colours = np.array(TOY_COLOURS)  # (10, 3) in [0, 1]
    palette[1:11] = np.round(colours * 255)
    palette[11:21] = np.round(colours * STRIPES_SHADE * 255)
    palette[255] = IGNORE_COLOUR
    return palette


def ade_palette(num_classes: int = 151) -> np.ndarray:
    """150 well-separated colours for ADE20K (0 = "other" in black): hues stepped by the golden
    ratio, cycling through three saturation and three brightness levels. Not the palette of the
    official ADE20K toolkit; any fixed palette with distinct colours serves to read a mask."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(1, num_classes):
        hue = (label * 0.618033988749895) % 1.0
        saturation = (1.0, 0.55, 0.8)[label % 3]
        value = (0.95, 0.7, 0.85)[(label // 3) % 3]
        palette[label] = np.round(np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255)
    palette[255] = IGNORE_COLOUR
    return palette


PALETTES = {"voc": voc_palette, "toy": toy_palette, "ade": ade_palette}


def get_palette(name: str) -> np.ndarray:
    """The (256, 3) uint8 palette of dataset `name` ("voc", "toy" or "ade"); a fresh copy."""
    if name not in PALETTES:
        raise ValueError(f"unknown palette '{name}'; palettes: {', '.join(PALETTES)}")
    return PALETTES[name]()
