"""Analyzers that read storyworld frames back, without ground truth.

- `read_place`: place and time of day, by the nearest backdrop prototype (row-band colours).
- `read_object`: object colour (nearest palette colour), shape (best template overlap over
  rotations), position and size.
- `read_scene`: both, and `prompt_match` scores a frame against a caption.
- Figure keypoints and the mouth: storyworld.pose (re-exported here).
- Drift figures per clip: storyworld.drift (re-exported here).

Frames are (H, W, 3) RGB, uint8 or float in 0..255, of any size the generator supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .backdrop import backdrop_frame
from .draw import EXTENT, SYMMETRY, UNIT_AREA, shape_inside
from .drift import ClipStats, DriftFigures, clip_stats, drift_figures, drift_score
from .maps import PALETTE, PALETTE_NAMES, as_float, ink_alpha, palette_labels, white_mask
from .pose import FigureReading, latent_rate_sync_bound, lip_sync, mouth_opening, mouth_series, pose_error, read_figure
from .world import PLACES, SHAPES, TIMES, SceneSpec, parse_caption

__all__ = [  # the scene analyzers defined here, and the figure and drift ones re-exported
    "ClipStats", "DriftFigures", "FigureReading", "ObjectReading", "PlaceReading", "PromptMatch", "SceneReading",
    "clip_stats", "drift_figures", "drift_score", "latent_rate_sync_bound", "lip_sync", "mouth_opening", "mouth_series", "pose_error",
    "prompt_match", "read_figure", "read_object", "read_place", "read_scene",
]

N_BANDS = 12  # horizontal bands whose mean colours describe a backdrop
PROTOTYPE_OFFSETS = 12  # world offsets per (place, time): pans and layouts show different stretches
MIN_OBJECT_AREA = 0.004  # fraction of the frame; the smallest drawn object is ~0.6% of a 128x96 frame
COARSE_ANGLE = np.radians(6.0)  # template sweep step; refined to 2/3 degree


@dataclass(frozen=True)
class PlaceReading:
    place: str
    time: str
    distance: float  # feature distance to the chosen prototype (RGB units)
    margin: float  # distance to the best other (place, time) minus `distance`


@dataclass(frozen=True)
class ObjectReading:
    colour: str
    shape: str
    x: float  # centre, x / W
    y: float  # centre, y / H
    size: float  # unit radius in px (the generator's object size)
    area: int  # pixels of the object's colour
    fit: float  # intersection-over-union of the best shape template


@dataclass(frozen=True)
class SceneReading:
    place: PlaceReading
    object: ObjectReading | None


def _band_features(frame: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """(N_BANDS * 3,) mean colour of each horizontal band over the `keep` pixels (all if too few)."""
    f = as_float(frame)
    h = f.shape[0]
    edges = np.linspace(0, h, N_BANDS + 1).round().astype(int)
    out = np.empty((N_BANDS, 3), np.float32)
    for b in range(N_BANDS):
        band = f[edges[b]:edges[b + 1]].reshape(-1, 3)
        if keep is not None:
            k = keep[edges[b]:edges[b + 1]].reshape(-1)
            if k.sum() >= 0.2 * k.size:
                band = band[k]
        out[b] = band.mean(0)
    return out.reshape(-1)


@lru_cache(maxsize=16)
def _prototypes(height: int, width: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Classes and their features (C, K, D): each (place, time) backdrop at K world offsets."""
    classes = [(p, t) for p in PLACES for t in TIMES]
    offsets = np.arange(PROTOTYPE_OFFSETS) * 0.173 * height  # irregular steps across the structures
    feats = np.stack([np.stack([_band_features(backdrop_frame(p, t, height, width, float(x0)), None)
                                for x0 in offsets]) for p, t in classes])
    return classes, feats


def foreground_mask(frame: np.ndarray) -> np.ndarray:
    """Pixels that are not backdrop: object colours, ink, the head (grown by a pixel for their edges).

    Also the VAE stage's loss weight: these few percent of the pixels carry everything the analyzers read."""
    fg = (palette_labels(frame) >= 0) | (ink_alpha(frame) > 0.2) | white_mask(frame)
    return ndimage.binary_dilation(fg, iterations=1)


def read_place(frame: np.ndarray) -> PlaceReading:
    """Place and time of day of a frame."""
    f = as_float(frame)
    classes, protos = _prototypes(f.shape[0], f.shape[1])
    feat = _band_features(f, ~foreground_mask(f))
    d = np.sqrt(((protos - feat) ** 2).mean(-1)).min(-1)  # (C,) RMS distance to the nearest offset
    order = np.argsort(d)
    place, time = classes[order[0]]
    return PlaceReading(place, time, float(d[order[0]]), float(d[order[1]] - d[order[0]]))


def _best_angle(shape: str, u: np.ndarray, v: np.ndarray, m: np.ndarray, outside: int) -> tuple[float, float]:
    """(score, angle) of the rotation whose template best overlaps mask patch `m`: a coarse sweep
    over the shape's symmetry period, then two finer ones around the best."""
    period = SYMMETRY[shape]

    def scores(angles):
        tmpl = shape_inside(shape, u, v, angles[:, None, None])  # (A, h', w')
        inter = (tmpl & m).sum((1, 2))
        # Mask pixels outside the patch are misses too.
        return inter / np.maximum((tmpl | m).sum((1, 2)) + outside, 1)

    if period > 6:  # circle, ring
        return float(scores(np.zeros(1))[0]), 0.0
    angles = np.arange(0.0, period - 1e-6, COARSE_ANGLE)
    sc = scores(angles)
    best = float(angles[sc.argmax()])
    for step in (COARSE_ANGLE / 3, COARSE_ANGLE / 9):
        cand = best + step * np.arange(-1, 2)
        sc = scores(cand)
        best = float(cand[sc.argmax()])
    return float(sc.max()), best % period


def _shape_fit(mask: np.ndarray, cx: float, cy: float, area: float) -> tuple[str, float, float, float]:
    """(shape, IoU, size, angle) of the template that best overlaps `mask` around (cx, cy)."""
    h, w = mask.shape
    total = int(mask.sum())
    best = ("circle", -1.0, 0.0, 0.0)
    for shape in SHAPES:
        size = float(np.sqrt(area / UNIT_AREA[shape]))
        r = 1.2 * EXTENT[shape] * size + 2
        x0, x1 = max(0, int(cx - r)), min(w, int(np.ceil(cx + r)))
        y0, y1 = max(0, int(cy - r)), min(h, int(np.ceil(cy + r)))
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u, v = (xs + 0.5 - cx) / size, (ys + 0.5 - cy) / size
        m = mask[y0:y1, x0:x1]
        score, angle = _best_angle(shape, u, v, m, total - int(m.sum()))
        if score > best[1]:
            best = (shape, score, size, angle)
    return best


def _row_backdrop(p: np.ndarray, far: np.ndarray, span: int = 6) -> np.ndarray:
    """(h', w', 3) backdrop behind an object: per row, the median of the `span` backdrop pixels just
    left of the object and of those just right of it, each object pixel taking its nearer side.

    Medians of a few pixels shrug off a thin bone drawn beside the object, and the nearer side
    follows a tree or building edge that runs behind it."""
    h, w = far.shape
    bg = np.zeros(p.shape, np.float32)
    have = np.zeros(h, bool)
    cols = np.arange(w)
    for r in range(h):
        inside = np.flatnonzero(far[r])
        if len(inside) == 0:
            bg[r] = np.median(p[r], 0)
            have[r] = True
            continue
        lo, hi = inside[0], inside[-1]
        left = p[r, max(0, lo - span):lo][~far[r, max(0, lo - span):lo]]
        right = p[r, hi + 1:hi + 1 + span][~far[r, hi + 1:hi + 1 + span]]
        if len(left) == 0 and len(right) == 0:
            continue
        lm = np.median(left, 0) if len(left) else np.median(right, 0)
        rm = np.median(right, 0) if len(right) else lm
        bg[r] = np.where((cols - lo < hi - cols)[:, None], lm, rm)
        have[r] = True
    if not have.any():
        return np.broadcast_to(np.median(p.reshape(-1, 3), 0), p.shape).astype(np.float32)
    idx = np.flatnonzero(have)  # rows with no backdrop beside the object borrow the nearest row's
    return bg[idx[np.abs(np.arange(h)[:, None] - idx[None]).argmin(1)]]


def _matte(f: np.ndarray, coarse: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Soft object coverage around a coarse mask: each pixel as a mix of the object colour and the
    backdrop behind it, alpha = projection onto the line between the two.

    The palette test alone is chroma-bound, and video codecs keep chroma at half resolution; the
    matte uses all three channels, so it keeps the luma's full-resolution edges."""
    h, w = coarse.shape
    ys, xs = np.nonzero(coarse)
    pad = 10
    rows = slice(max(0, ys.min() - pad), min(h, ys.max() + pad + 1))
    cols = slice(max(0, xs.min() - pad), min(w, xs.max() + pad + 1))
    p = f[rows, cols]  # (h', w', 3)
    near = ndimage.binary_dilation(coarse, iterations=2)[rows, cols]
    # The backdrop is sampled a pixel further out: codecs bleed an object's chroma into its border.
    bg = _row_backdrop(p, ndimage.binary_dilation(coarse, iterations=3)[rows, cols])
    d = colour - bg
    dd = np.maximum((d * d).sum(-1), 1.0)  # (h', w')
    alpha = np.clip(((p - bg) * d).sum(-1) / dd, 0.0, 1.0)
    # Only mixes of the two explain a pixel: something else seen through a ring's hole (the sun, a
    # lit window) may project onto the line but lies far from it.
    resid = np.sqrt(((p - bg - alpha[..., None] * d) ** 2).sum(-1))
    alpha = np.where(near & (resid < np.maximum(40.0, 0.35 * np.sqrt(dd))), alpha, 0.0)
    return alpha.astype(np.float32), (rows, cols)


def read_object(frame: np.ndarray) -> ObjectReading | None:
    """The frame's object: the largest blob of one palette colour; None if no blob is big enough."""
    f = as_float(frame)
    h, w = f.shape[:2]
    labels = palette_labels(f)
    best = None
    for c in np.unique(labels[labels >= 0]):
        m = ndimage.binary_closing(labels == c, iterations=1)  # heals a bone drawn across the object
        comp, n = ndimage.label(m)
        if n == 0:
            continue
        areas = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
        k = int(areas.argmax())
        if best is None or areas[k] > best[1]:
            best = (int(c), float(areas[k]), comp == k + 1)
    if best is None or best[1] < MIN_OBJECT_AREA * h * w:
        return None
    c, _, coarse = best
    alpha, (rows, cols) = _matte(f, coarse, PALETTE[c])
    sharp = ndimage.binary_closing(alpha > 0.5, iterations=1)
    comp, n = ndimage.label(sharp)
    if n == 0:
        return None
    k = int(np.argmax(ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1)))) + 1
    mask = np.zeros((h, w), bool)
    mask[rows, cols] = comp == k
    soft = np.zeros((h, w), np.float32)
    soft[rows, cols] = np.where(ndimage.binary_dilation(comp == k, iterations=1), alpha, 0.0)
    area = float(soft.sum())  # soft area: edges count by their coverage, whatever the blur
    cy, cx = ndimage.center_of_mass(soft)
    cx, cy = cx + 0.5, cy + 0.5
    shape, fit, size, _ = _shape_fit(mask, cx, cy, float(mask.sum()))
    size = float(np.sqrt(area / UNIT_AREA[shape]))
    return ObjectReading(colour=PALETTE_NAMES[c], shape=shape, x=cx / w, y=cy / h, size=size, area=int(round(area)),
                         fit=fit)


def read_scene(frame: np.ndarray) -> SceneReading:
    return SceneReading(place=read_place(frame), object=read_object(frame))


@dataclass(frozen=True)
class PromptMatch:
    place: bool
    time: bool
    colour: bool
    shape: bool

    @property
    def all(self) -> bool:
        return self.place and self.time and self.colour and self.shape


def prompt_match(frame: np.ndarray, prompt: str | SceneSpec) -> PromptMatch:
    """Does the frame show what the caption asks (place, time of day, object colour and shape)?"""
    spec = parse_caption(prompt) if isinstance(prompt, str) else prompt
    s = read_scene(frame)
    obj = s.object
    return PromptMatch(place=s.place.place == spec.place, time=s.place.time == spec.time,
                       colour=obj is not None and obj.colour == spec.colour,
                       shape=obj is not None and obj.shape == spec.shape)
