"""Per-pixel maps the analyzers share: object-colour labels, figure ink and the white head.

They read frames only (uint8 or float (H, W, 3) RGB in 0..255), never ground truth, and lean on the
world's design rules (storyworld/backdrop.py): objects are the only pixels near a palette colour,
the figure's bones are the only thin dark strokes, its head is the only white disc.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .figure import HEAD_R
from .world import COLOURS

PALETTE_NAMES: tuple[str, ...] = tuple(COLOURS)
PALETTE = np.array([COLOURS[c] for c in PALETTE_NAMES], np.float32)  # (8, 3)
# A pixel belongs to an object colour when it is nearer than this to it (RGB distance). The
# palette is >= 110 apart and every background pixel >= 70 from it, so 60 leaves room for noise.
OBJECT_RADIUS = 60.0
WHITE_RADIUS = 66.0  # head pixels: this near to pure white (background >= 74 away)


def as_float(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame)
    if f.ndim != 3 or f.shape[2] != 3:
        raise ValueError(f"a frame must be (H, W, 3) RGB, got shape {f.shape}")
    if f.shape[0] < 16 or f.shape[1] < 16:
        raise ValueError(f"a frame must be at least 16x16 px, got {f.shape[1]}x{f.shape[0]}")
    return f.astype(np.float32, copy=False)


def palette_labels(frame: np.ndarray, radius: float = OBJECT_RADIUS) -> np.ndarray:
    """(H, W) int8: index of the nearest palette colour, or -1 where none is within `radius`."""
    f = as_float(frame)
    d2 = ((f[:, :, None, :] - PALETTE) ** 2).sum(-1)  # (H, W, 8)
    lab = d2.argmin(-1).astype(np.int8)
    lab[np.take_along_axis(d2, lab[..., None].astype(np.intp), -1)[..., 0] > radius * radius] = -1
    return lab


def ink_scale(height: int) -> int:
    """Side of the square the closing uses: wider than a (blurred) bone, narrower than any dark
    region of a backdrop (5 px at 96 px)."""
    return max(3, int(round(0.05 * height)) | 1)


def ink_alpha(frame: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much of each pixel is a thin dark stroke.

    The brightness (max of R, G, B) is compared with its grey closing, which fills dark features
    narrower than `ink_scale` and leaves everything else, so alpha = 1 - v / closing(v) is the
    fraction of black ink over the local background, whatever that background is. Pixels next to
    an object are cleared: the concave corners of a star also look like thin dark gaps."""
    f = as_float(frame)
    v = f.max(-1)
    k = ink_scale(f.shape[0])
    bg = ndimage.grey_closing(v, size=(k, k))
    alpha = np.clip(1.0 - v / np.maximum(bg, 1.0), 0.0, 1.0)
    near_object = ndimage.binary_dilation(palette_labels(f) >= 0, iterations=2)
    alpha[near_object] = 0.0
    return alpha


def white_mask(frame: np.ndarray) -> np.ndarray:
    f = as_float(frame)
    return ((f - 255.0) ** 2).sum(-1) < WHITE_RADIUS ** 2


def _fill_spans(mask: np.ndarray) -> np.ndarray:
    """Fill each row, then each column, between its first and last set pixel (an orthogonally
    convex hull): restores a head whose mouth has bitten through the white to the outline."""
    out = mask.copy()
    for m in (out, out.T):
        rows = np.flatnonzero(m.any(1))
        for r in rows:
            cols = np.flatnonzero(m[r])
            m[r, cols[0]:cols[-1] + 1] = True
    return out


def find_head(frame: np.ndarray) -> tuple[float, float, float] | None:
    """(cx, cy, r) in px of the figure's head: the white blob (filled to its hull) whose area is
    nearest that of the drawn head; None when there is none of a plausible size. r is the radius of
    the white disc, inside the head's outline."""
    f = as_float(frame)
    h = f.shape[0]
    # A 3x3 majority vote: noise punches holes in the white and sprinkles specks outside it. Then a
    # closing joins the white around the eyes and mouth into one blob.
    white = ndimage.uniform_filter(white_mask(f).astype(np.float32), 3) > 0.5
    lab, n = ndimage.label(ndimage.binary_closing(white, structure=np.ones((3, 3), bool), iterations=1))
    if n == 0:
        return None
    expected = np.pi * (HEAD_R * h) ** 2
    best, best_cost = None, np.inf
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        area_box = (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)
        if area_box < 0.2 * expected or area_box > 4 * expected:  # cheap reject before filling
            continue
        blob = _fill_spans(lab[sl] == i)
        ratio = blob.sum() / expected
        if 0.2 < ratio < 2.5 and abs(np.log(ratio)) < best_cost:
            cy, cx = ndimage.center_of_mass(blob)
            best = (cx + sl[1].start + 0.5, cy + sl[0].start + 0.5, float(np.sqrt(blob.sum() / np.pi)))
            best_cost = abs(np.log(ratio))
    return None if best is None else (float(best[0]), float(best[1]), best[2])
