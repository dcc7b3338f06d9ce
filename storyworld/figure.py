"""The stick figure: black ink bones, a white head with eyes, and a mouth that opens with loudness.

Geometry shared by the generator (which draws it) and the analyzers (which read it back). All sizes
scale with the frame height H.
"""

from __future__ import annotations

import numpy as np

from .draw import draw_disc, draw_ellipse, draw_segments
from .skeleton import BODY_PROPORTIONS, L, LIMBS, TORSO_BONES

INK = (0, 0, 0)  # the only thin dark thing in the world: the pose analyzer looks for it
HEAD_FILL = (255, 255, 255)
HEAD_R = BODY_PROPORTIONS.head_r  # head radius, fraction of H
LINE_W = 0.022  # bone thickness, fraction of H (2.1 px at 96 px)
MIN_LINE_W = 1.5  # px: thinner lines vanish under video compression
OUTLINE_W = 0.012  # head outline, fraction of H
# Eye centre (x, y) in head radii (mirrored for the other eye) and radius: dots, so that the face
# stays mostly white (the head analyzer finds the white disc).
EYE = ((0.38, -0.3), 0.07)
MIN_EYE_R = 0.5  # px
# Mouth centre below the head centre, half-width and height = closed + open * opening, in head radii:
# wide open it stays clear of the eyes and leaves white above the outline.
MOUTH_Y = 0.3
MOUTH_RX = 0.36
MOUTH_H_CLOSED, MOUTH_H_OPEN = 0.1, 0.45


def line_width(height: int) -> float:
    return max(MIN_LINE_W, LINE_W * height)


def mouth_height(opening: float | np.ndarray) -> float | np.ndarray:
    """Mouth height in head radii for an opening in [0, 1]."""
    return MOUTH_H_CLOSED + MOUTH_H_OPEN * np.clip(opening, 0.0, 1.0)


def bone_segments(kp_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) segment endpoint arrays (S, 2) of the drawn bones, neck included, from (33, 2) pixels."""
    pairs = list(TORSO_BONES) + [b for a, m, e in LIMBS.values() for b in ((a, m), (m, e))]
    a = np.array([kp_px[i] for i, _ in pairs])
    b = np.array([kp_px[j] for _, j in pairs])
    neck_a = (kp_px[L["left_shoulder"]] + kp_px[L["right_shoulder"]]) / 2
    return np.vstack([a, neck_a[None]]), np.vstack([b, kp_px[L["nose"]][None]])


def draw_figure(canvas: np.ndarray, kp_px: np.ndarray, opening: float) -> None:
    """Draw the figure from (33, 2) pixel keypoints with the mouth `opening` in [0, 1], in place."""
    h = canvas.shape[0]
    a, b = bone_segments(kp_px)
    draw_segments(canvas, a, b, line_width(h), INK)
    r = HEAD_R * h
    cx, cy = kp_px[L["nose"]]
    draw_disc(canvas, cx, cy, r, HEAD_FILL, INK, max(1.0, OUTLINE_W * h))
    (ex, ey), er = EYE
    for side in (-1.0, 1.0):
        draw_disc(canvas, cx + side * ex * r, cy + ey * r, max(MIN_EYE_R, er * r), INK)
    draw_ellipse(canvas, cx, cy + MOUTH_Y * r, MOUTH_RX * r, float(mouth_height(opening)) * r / 2, INK)
