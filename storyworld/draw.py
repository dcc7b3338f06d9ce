"""Vectorised numpy drawing: signed distance fields for the shapes, capsules for the figure's bones,
and alpha compositing on float32 (H, W, 3) canvases in 0..255.

Every primitive is evaluated only on its bounding patch and anti-aliased with a one-pixel ramp
(coverage = clip(0.5 - signed distance in px, 0, 1)): soft edges are what a video model sees in real
footage, and they keep the analyzers' thresholds honest.
"""

from __future__ import annotations

import numpy as np

_STAR_ANGLES = -np.pi / 2 + np.arange(10) * np.pi / 5
_TRIANGLE_ANGLES = np.radians([-90.0, 30.0, 150.0])  # apex up (y points down)
# Unit shapes (size 1 ~ radius); polygons as (M, 2) vertex arrays, y down.
POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "triangle": 1.1 * np.stack([np.cos(_TRIANGLE_ANGLES), np.sin(_TRIANGLE_ANGLES)], -1),
    "star": np.where(np.arange(10)[:, None] % 2 == 0, 1.15, 0.5) * np.stack([np.cos(_STAR_ANGLES),
                                                                           np.sin(_STAR_ANGLES)], -1),
    "cross": np.array([[-0.34, -1.0], [0.34, -1.0], [0.34, -0.34], [1.0, -0.34], [1.0, 0.34], [0.34, 0.34],
                       [0.34, 1.0], [-0.34, 1.0], [-0.34, 0.34], [-1.0, 0.34], [-1.0, -0.34], [-0.34, -0.34]]),
}
CIRCLE_R = 0.95
RING_OUTER, RING_INNER = 1.0, 0.55
# Angle after which a shape looks the same again (radians); 2*pi/4 for the square and the cross.
SYMMETRY = {"circle": 2 * np.pi, "ring": 2 * np.pi, "square": np.pi / 2, "cross": np.pi / 2,
            "triangle": 2 * np.pi / 3, "star": 2 * np.pi / 5}
# Bounding radius of each unit shape (for patches).
EXTENT = {"circle": CIRCLE_R, "ring": RING_OUTER, **{k: float(np.linalg.norm(v, axis=1).max())
                                                    for k, v in POLYGONS.items()}}


def _polygon_area(v: np.ndarray) -> float:
    x, y = v[:, 0], v[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


UNIT_AREA = {"circle": np.pi * CIRCLE_R ** 2, "ring": np.pi * (RING_OUTER ** 2 - RING_INNER ** 2),
             **{k: _polygon_area(v) for k, v in POLYGONS.items()}}


def polygon_sdf(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points (x, y) (same shape) to a closed polygon (M, 2)."""
    d = segment_distance(x, y, verts, np.roll(verts, -1, axis=0))
    # Even-odd rule: count the edges a ray towards +x crosses.
    ax, ay = verts[:, 0], verts[:, 1]
    ex, ey = np.roll(ax, -1) - ax, np.roll(ay, -1) - ay
    yy = y[..., None]
    crosses = (ay <= yy) != (ay + ey <= yy)  # (..., M)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = ax + (yy - ay) / ey * ex
    inside = (crosses & (x[..., None] < x_at)).sum(-1) % 2 == 1
    return np.where(inside, -d, d)


def polygon_inside(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd inside test of points (x, y) against a closed polygon (M, 2): cheaper than the SDF."""
    ax, ay = verts[:, 0], verts[:, 1]
    ex, ey = np.roll(ax, -1) - ax, np.roll(ay, -1) - ay
    inside = np.zeros(np.broadcast(x, y).shape, bool)
    for i in range(len(verts)):  # a loop over M edges keeps the arrays at the points' size
        crosses = (ay[i] <= y) != (ay[i] + ey[i] <= y)
        if ey[i] != 0:
            inside ^= crosses & (x < ax[i] + (y - ay[i]) / ey[i] * ex[i])
    return inside


def shape_inside(shape: str, x: np.ndarray, y: np.ndarray, angle: float | np.ndarray = 0.0) -> np.ndarray:
    """Boolean mask of the unit shape (same conventions as shape_sdf)."""
    if shape in POLYGONS:
        c, s = np.cos(angle), np.sin(angle)
        return polygon_inside(c * x + s * y, -s * x + c * y, POLYGONS[shape])
    return shape_sdf(shape, x, y, angle) < 0


def shape_sdf(shape: str, x: np.ndarray, y: np.ndarray, angle: float | np.ndarray = 0.0) -> np.ndarray:
    """Signed distance in unit-shape coordinates for points relative to the shape centre.

    `angle` (radians, clockwise on screen since y points down) may broadcast against x and y to
    evaluate several rotations at once."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y  # rotate the points by -angle
    if shape == "circle":
        return np.sqrt(u * u + v * v) - CIRCLE_R
    if shape == "ring":
        r = np.sqrt(u * u + v * v)
        mid, half = (RING_OUTER + RING_INNER) / 2, (RING_OUTER - RING_INNER) / 2
        return np.abs(r - mid) - half
    if shape in POLYGONS:
        return polygon_sdf(u, v, POLYGONS[shape])
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SYMMETRY)}")


def patch(h: int, w: int, cx: float, cy: float, radius: float) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    """Rows/cols slices of the canvas around (cx, cy) and the pixel-centre coordinates there relative
    to (cx, cy); None if the patch is off the canvas."""
    x0, x1 = max(0, int(np.floor(cx - radius - 1))), min(w, int(np.ceil(cx + radius + 2)))
    y0, y1 = max(0, int(np.floor(cy - radius - 1))), min(h, int(np.ceil(cy + radius + 2)))
    if x1 <= x0 or y1 <= y0:
        return None
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)  # float32 halves the cost of every field
    return slice(y0, y1), slice(x0, x1), xs + np.float32(0.5 - cx), ys + np.float32(0.5 - cy)


def coverage(sdf_px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance in pixels."""
    return np.clip(0.5 - sdf_px, 0.0, 1.0)


def blend(canvas: np.ndarray, rows: slice, cols: slice, alpha: np.ndarray, colour) -> None:
    """canvas[rows, cols] = mix towards `colour` by `alpha` (H', W'), in place."""
    region = canvas[rows, cols]
    a = alpha[..., None].astype(np.float32)
    region += a * (np.asarray(colour, np.float32) - region)


def draw_shape(canvas: np.ndarray, shape: str, cx: float, cy: float, size: float, angle: float, colour) -> None:
    """A filled shape of `size` px (unit radius) centred at pixel (cx, cy)."""
    h, w = canvas.shape[:2]
    p = patch(h, w, cx, cy, EXTENT[shape] * size)
    if p is None:
        return
    rows, cols, x, y = p
    blend(canvas, rows, cols, coverage(shape_sdf(shape, x / size, y / size, angle) * size), colour)


def segment_distance(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points (...) to the nearest of S segments a[i]-b[i] (S, 2) -> (...)."""
    x, y = x[..., None], y[..., None]  # (..., 1)
    ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]  # (S,)
    inv = 1.0 / np.maximum(ex * ex + ey * ey, 1e-12)
    wx, wy = x - a[:, 0], y - a[:, 1]  # (..., S)
    t = np.clip((wx * ex + wy * ey) * inv, 0.0, 1.0)
    dx, dy = wx - ex * t, wy - ey * t
    return np.sqrt((dx * dx + dy * dy).min(-1))


def draw_segments(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float, colour) -> None:
    """Round-capped lines a[i]-b[i] (S, 2) in pixel coordinates, `width` px thick, in one pass."""
    h, w = canvas.shape[:2]
    pts = np.concatenate([a, b])
    lo, hi = pts.min(0), pts.max(0)
    c, r = (lo + hi) / 2, float((hi - lo).max() / 2 + width)
    p = patch(h, w, c[0], c[1], r)
    if p is None:
        return
    rows, cols, x, y = p
    c = c.astype(np.float32)
    d = segment_distance(x + c[0], y + c[1], a.astype(np.float32), b.astype(np.float32))
    blend(canvas, rows, cols, coverage(d - width / 2), colour)


def draw_disc(canvas: np.ndarray, cx: float, cy: float, radius: float, fill, outline=None,
              outline_w: float = 1.0) -> None:
    """A filled disc, optionally with an outline ring of `outline_w` px drawn inside its edge."""
    h, w = canvas.shape[:2]
    p = patch(h, w, cx, cy, radius)
    if p is None:
        return
    rows, cols, x, y = p
    r = np.sqrt(x * x + y * y)
    blend(canvas, rows, cols, coverage(r - radius), fill)
    if outline is not None:
        blend(canvas, rows, cols, coverage(np.abs(r - (radius - outline_w / 2)) - outline_w / 2), outline)


def draw_ellipse(canvas: np.ndarray, cx: float, cy: float, rx: float, ry: float, colour) -> None:
    """A filled axis-aligned ellipse (approximate distance: good to a pixel for these small sizes)."""
    h, w = canvas.shape[:2]
    p = patch(h, w, cx, cy, max(rx, ry))
    if p is None:
        return
    rows, cols, x, y = p
    k = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    blend(canvas, rows, cols, coverage((k - 1.0) * min(rx, ry)), colour)
