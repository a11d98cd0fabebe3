"""COCO segmentations (polygons or RLE) -> PNG instance masks, checked before pycocotools sees them.

pycocotools trusts its input: a first polygon of 4 numbers makes `frPyObjects` read every polygon
of the object as a box, RLE counts that add up to more than height * width write past the mask
buffer, and odd-length polygons or non-numbers raise deep inside it. Each segmentation is checked
here first; a malformed one raises `BadSegmentation` (the builder skips that image with the reason)
and polygons of fewer than 3 points (4 numbers: a line, no interior) are dropped and counted.

Example:
    png, dropped = mask_png([[2, 3, 12, 3, 12, 9, 2, 9]], height=16, width=16)
"""

from __future__ import annotations

import io
import math
from typing import Any


class BadSegmentation(Exception):
    """The segmentation cannot be read; the message says why (one line)."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _polygons(segmentation: list, height: int, width: int) -> tuple[list[list[float]], int]:
    polygons, dropped = [], 0
    for p in segmentation:
        if not isinstance(p, list):
            raise BadSegmentation(
                f"expected a list of polygons (lists of x, y numbers), found a {type(p).__name__}"
            )
        if not all(_is_number(v) for v in p):
            raise BadSegmentation(f"polygon holds a non-number: {str(p)[:60]}")
        if len(p) % 2:
            raise BadSegmentation(f"polygon has {len(p)} numbers (x, y pairs expected)")
        if len(p) < 6:  # 1-2 points cover no pixel; pycocotools would read 4 numbers as a box
            dropped += 1
            continue
        polygons.append([float(v) for v in p])
    return polygons, dropped


def rle_string_counts(counts: str) -> list[int]:
    """Run lengths of COCO's compressed RLE string (the format of pycocotools' `rleFrString`)."""
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise BadSegmentation("RLE counts string ends inside a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise BadSegmentation("RLE counts string has a character outside its alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _rle(segmentation: dict, height: int, width: int) -> dict:
    """A checked RLE in pycocotools' compressed form (counts as bytes), ready for `decode`."""
    from pycocotools import mask as mask_util

    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not isinstance(size, list) or [v for v in size] != [height, width]:
        raise BadSegmentation(f"RLE size {size} but the image is {height}x{width} (h, w)")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise BadSegmentation("RLE counts must be integers")
        runs = counts
    elif isinstance(counts, str):
        runs = rle_string_counts(counts)
    else:
        raise BadSegmentation(f"RLE counts must be a list or a string, got {type(counts).__name__}")
    if any(v < 0 for v in runs) or sum(runs) != height * width:
        raise BadSegmentation(
            f"RLE runs add up to {sum(runs)} pixels (or hold a negative run), "
            f"expected {height}x{width} = {height * width}"
        )
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts.encode("ascii")}
    return mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)


def mask_png(segmentation: Any, height: int, width: int) -> tuple[bytes, int]:
    """PNG of the uint8 {0, 1} mask [height, width] and the number of dropped polygons.

    An empty segmentation (None, [], all polygons dropped) gives an all-zero mask.
    Raises:
      BadSegmentation: not a polygon list or an RLE dict, odd-length or non-numeric polygons,
        RLE whose size is not the image's or whose runs do not cover it exactly.
    """
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_util

    dropped = 0
    binary = np.zeros((height, width), np.uint8)
    if isinstance(segmentation, dict):
        binary = mask_util.decode(_rle(segmentation, height, width))
    elif isinstance(segmentation, list):
        polygons, dropped = _polygons(segmentation, height, width)
        if polygons:
            binary = mask_util.decode(
                mask_util.merge(mask_util.frPyObjects(polygons, height, width))
            )
    elif segmentation is not None:
        raise BadSegmentation(
            f"expected a polygon list or an RLE dict, found a {type(segmentation).__name__}"
        )
    out = io.BytesIO()
    Image.fromarray(binary.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue(), dropped
