"""Backdrops: a place at a time of day, drawn as a panorama that the camera pans across.

Sizes are in height units (multiples of the frame height H) so every frame size shows the same
world. Structures (trees, buildings, dunes, waves, mountains) are placed by a hash of their index
in world x, so a panorama drawn from any offset agrees with any other: a pan is a slice of the
"land" layer (premultiplied colour + alpha) composited over a screen-fixed sky (the sun, moon and
stars are at infinity and do not move with the pan).

Design constraints the analyzers rely on (tests check them): no thin dark structures (the figure's
ink is the only one), no background pixel near an object colour or near the figure's white head.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .draw import coverage

SKY: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # (top, horizon)
    "day": ((110, 170, 230), (175, 210, 240)),
    "dusk": ((95, 80, 150), (245, 165, 110)),
    "night": ((22, 30, 65), (40, 50, 95)),
}
SKY_GRADIENT_END = 0.62  # the sky gradient runs from the top to this height
# Lit surfaces: colour * gain + tint per time of day.
LIGHT: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "day": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    "dusk": ((0.95, 0.75, 0.7), (20.0, 5.0, 10.0)),
    "night": ((0.38, 0.40, 0.55), (8.0, 10.0, 30.0)),
}
SUN = {"day": ((255, 235, 170), 0.06), "dusk": ((255, 190, 120), 0.09), "night": ((215, 215, 190), 0.05)}
STAR = (200, 200, 215)
WINDOW = {"day": (170, 195, 215), "dusk": (235, 200, 140), "night": (255, 225, 140)}  # windows glow at night

SAND = (232, 214, 168)
SEA = (45, 120, 175)
WAVE = (90, 160, 200)
GRASS = (70, 120, 55)
PINES = ((30, 80, 45), (40, 95, 50))
ROAD = (95, 95, 100)
LANE = (200, 200, 190)
BUILDINGS = ((120, 120, 130), (150, 145, 140), (100, 105, 120))
DUNE = (214, 160, 95)
DUNE_SHADE = (196, 140, 80)
MOUNTAIN = (140, 150, 178)
SNOW = (200, 212, 230)
SNOW_SHADE = (185, 200, 225)


def lit(colour, time: str) -> np.ndarray:
    gain, tint = LIGHT[time]
    return np.asarray(colour, np.float32) * np.asarray(gain, np.float32) + np.asarray(tint, np.float32)


def _hash01(j: int, salt: float) -> float:
    """A fixed pseudo-random number in [0, 1) per integer index (the classic shader hash)."""
    v = np.sin(np.float64(j) * 12.9898 + salt * 78.233) * 43758.5453
    return float(v - np.floor(v))


class _Layer:
    """Premultiplied colour (H, W, 3) and alpha (H, W): painting is the 'over' operator."""

    def __init__(self, h: int, w: int):
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.alpha = np.zeros((h, w), np.float32)

    def paint(self, a: np.ndarray, colour) -> None:
        a = np.asarray(a, np.float32)
        self.rgb += a[..., None] * (np.asarray(colour, np.float32) - self.rgb)
        self.alpha += a * (1.0 - self.alpha)


def _sky(h: int, w: int, time: str) -> np.ndarray:
    """Screen-fixed sky (H, W, 3): gradient, sun or moon, stars."""
    top, hor = (np.asarray(c, np.float32) for c in SKY[time])
    t = np.clip((np.arange(h, dtype=np.float32) + 0.5) / h / SKY_GRADIENT_END, 0, 1)[:, None, None]
    img = np.broadcast_to(top + t * (hor - top), (h, w, 3)).copy()
    colour, radius = SUN[time]
    # Centred: the figure's head stays near the side edges and must never touch the (pale) sun or moon.
    cx, cy = 0.5 * w, (0.48 if time == "dusk" else 0.1) * h
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    a = coverage(np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) - radius * h)
    img += a[..., None] * (np.asarray(colour, np.float32) - img)
    if time == "night":
        j = np.arange(40)
        v = np.sin(j * 12.9898 + 78.233) * 43758.5453
        sx = ((v - np.floor(v)) * w).astype(int)
        v = np.sin(j * 12.9898 + 2 * 78.233) * 43758.5453
        sy = ((v - np.floor(v)) * 0.35 * h).astype(int)
        far = np.hypot(sx - cx, sy - cy) > radius * h + 3  # no stars on the moon
        img[sy[far], sx[far]] = STAR
    return img


def _below(yh: np.ndarray, top, h: int) -> np.ndarray:
    """Coverage of everything below `top` (height units; scalar or per column), anti-aliased."""
    return coverage((top - yh) * h)


def _beach(land: _Layer, yh, xh, time, h):
    land.paint(_below(yh, 0.45, h), lit(SEA, time))
    for k in range(2):  # wave crests: thin light lines, far enough apart that the sea between is no thin line
        yk = 0.49 + 0.055 * k + 0.006 * np.sin(2 * np.pi * xh / 0.31 + 1.7 * k)
        land.paint(coverage(np.abs(yh - yk) * h - 0.6) * (yh < 0.6), lit(WAVE, time))
    land.paint(_below(yh, 0.60, h), lit(SAND, time))


def _forest(land: _Layer, yh, xh, time, h):
    land.paint(_below(yh, 0.58, h), lit(GRASS, time))
    spacing = 0.2
    for j in range(int(np.floor(xh.min() / spacing)) - 1, int(np.ceil(xh.max() / spacing)) + 2):
        cx = j * spacing + 0.08 * _hash01(j, 3.0)
        height = 0.22 + 0.12 * _hash01(j, 4.0)
        half = 0.07 + 0.02 * _hash01(j, 5.0)
        top, base = 0.60 - height, 0.60
        frac = np.clip((yh - top) / height, 0, None)
        # Flat-topped: a pointed dark tip would read as a stroke of ink to the pose analyzer.
        d = np.maximum(np.abs(xh - cx) - (0.035 + (half - 0.035) * frac), np.maximum(top - yh, yh - base))
        land.paint(coverage(d * h), lit(PINES[j % 2], time))


def _city(land: _Layer, yh, xh, time, h):
    # A continuous skyline (no narrow gaps of sky between buildings, which would read as ink at night).
    spacing = 0.22
    for j in range(int(np.floor(xh.min() / spacing)) - 1, int(np.ceil(xh.max() / spacing)) + 2):
        left, width = j * spacing, spacing
        top = 0.18 + 0.22 * _hash01(j, 8.0)
        d = np.maximum(np.maximum(left - xh, xh - left - width), np.maximum(top - yh, yh - 0.62))
        land.paint(coverage(d * h), lit(BUILDINGS[j % 3], time))
        # Windows: sparse bright panes; the facade between them is wider than the analyzers' ink scale.
        u, v = (xh - left - 0.035) / 0.12, (yh - top - 0.03) / 0.12
        pane = (u >= 0) & (v >= 0) & (u % 1 < 0.42) & (v % 1 < 0.42) & (xh < left + width - 0.03) & (yh < 0.58)
        land.paint(pane, WINDOW[time] if time == "night" else lit(WINDOW[time], "day"))
    land.paint(_below(yh, 0.62, h), lit(ROAD, time))
    land.paint(((xh % 0.25) < 0.13) & (np.abs(yh - 0.8) < 0.012), lit(LANE, time))


def _desert(land: _Layer, yh, xh, time, h):
    ridge = 0.52 + 0.035 * np.sin(2 * np.pi * xh / 0.9 + 1.0) + 0.015 * np.sin(2 * np.pi * xh / 0.37)
    land.paint(_below(yh, ridge, h), lit(DUNE, time))
    ridge2 = ridge + 0.12 + 0.025 * np.sin(2 * np.pi * xh / 0.6 + 2.0)
    land.paint(_below(yh, ridge2, h), lit(DUNE_SHADE, time))


def _snow(land: _Layer, yh, xh, time, h):
    spacing = 0.35
    for j in range(int(np.floor(xh.min() / spacing)) - 1, int(np.ceil(xh.max() / spacing)) + 2):
        cx = j * spacing + 0.1 * _hash01(j, 9.0)
        peak = 0.56 - (0.15 + 0.13 * _hash01(j, 10.0))
        # Slope-0.8 sides (scaled distance) and a flat top, for the same reason as the trees'.
        d = np.maximum(peak - yh + 0.8 * np.maximum(np.abs(xh - cx) - 0.04, 0), yh - 0.6)
        land.paint(coverage(d * h), lit(MOUNTAIN, time))
    land.paint(_below(yh, 0.56, h), lit(SNOW, time))
    shade = 0.7 + 0.02 * np.sin(2 * np.pi * xh / 0.5)
    land.paint(coverage(np.abs(yh - shade) * h - 1.5), lit(SNOW_SHADE, time))


_PLACES = {"beach": _beach, "forest": _forest, "city": _city, "desert": _desert, "snow field": _snow}


@dataclass(frozen=True)
class Backdrop:
    """A place at a time of day for frames of (height, width): the screen-fixed sky and a land
    panorama `pan_px` columns wider than the frame."""

    sky: np.ndarray  # (H, W, 3) float32 0..255
    land: np.ndarray  # (H, W + pan_px, 3) float32, premultiplied by land_alpha
    land_alpha: np.ndarray  # (H, W + pan_px) float32 in [0, 1]

    @property
    def pan_px(self) -> int:
        return self.land.shape[1] - self.sky.shape[1]

    def frame(self, offset: int = 0) -> np.ndarray:
        """(H, W, 3) float32 frame with the camera `offset` px to the right of the panorama start."""
        w = self.sky.shape[1]
        if not 0 <= offset <= self.pan_px:
            raise ValueError(f"pan offset {offset} outside the panorama (0..{self.pan_px})")
        a = self.land_alpha[:, offset:offset + w, None]
        return self.sky * (1.0 - a) + self.land[:, offset:offset + w]


def render_backdrop(place: str, time: str, height: int, width: int, x0: float = 0.0, pan_px: int = 0) -> Backdrop:
    """The backdrop of `place` at `time` for (height, width) frames, its land starting at world x
    `x0` px and running `pan_px` px beyond the frame for a pan."""
    if place not in _PLACES:
        raise ValueError(f"unknown place {place!r}; known: {', '.join(_PLACES)}")
    if time not in SKY:
        raise ValueError(f"unknown time of day {time!r}; known: {', '.join(SKY)}")
    if height < 16 or width < 16:
        raise ValueError(f"frames must be at least 16x16 px, got {width}x{height}")
    if pan_px < 0:
        raise ValueError(f"pan_px must be >= 0, got {pan_px}")
    land = _Layer(height, width + pan_px)
    yh = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]  # (H, 1) height units
    xh = ((np.arange(width + pan_px, dtype=np.float32) + 0.5 + x0) / height)[None, :]  # (1, Wp) world units
    _PLACES[place](land, yh, xh, time, height)
    return Backdrop(_sky(height, width, time), land.rgb, land.alpha)


@lru_cache(maxsize=256)
def backdrop_frame(place: str, time: str, height: int, width: int, x0: float = 0.0) -> np.ndarray:
    """One read-only (H, W, 3) float32 backdrop frame, cached (the analyzers' prototypes)."""
    img = render_backdrop(place, time, height, width, x0).frame(0)
    img.setflags(write=False)
    return img
