"""Render keypoints to pose maps: the DWPose/OpenPose skeleton picture the pose encoder sees.

SVI-Dance was trained on DWPose renders (SVI_SPEC 3.2): an 18-point OpenPose body drawn on black,
limbs as filled ellipses in the OpenPose colour wheel at 60 % brightness, joints as full-colour dots,
plus feet and hands. MediaPipe's 33 landmarks map onto those 18 points (the neck is the shoulder
midpoint); feet and a coarse hand (MediaPipe has wrist, thumb, index and pinky only) follow the
DWPose colours. Coordinates are normalised to the source frame, which is fitted into the map like
the official pose loader does (aspect kept, centred on black) or stretched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .pose import PoseFrames, PoseTrack, slice_pose

# OpenPose-18 point -> MediaPipe landmark (-1: the neck, the midpoint of the shoulders)
OPENPOSE_FROM_MEDIAPIPE = (0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
# OpenPose limbs (1-based, as in controlnet_aux / DWPose util.draw_bodypose); the last two are not drawn
LIMB_SEQ = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
            (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18))
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
# feet: ankle -> heel -> toe per side (MediaPipe 27/28 ankles, 29/30 heels, 31/32 foot index)
FOOT_EDGES = ((27, 29), (29, 31), (27, 31), (28, 30), (30, 32), (28, 32))
FOOT_COLORS = ((0, 255, 170), (0, 255, 170), (0, 255, 170), (0, 170, 255), (0, 170, 255), (0, 170, 255))
# hands: wrist to thumb, index and pinky, and across the knuckles (left 15/21/19/17, right 16/22/20/18)
HAND_EDGES = ((15, 21), (15, 19), (15, 17), (19, 17), (16, 22), (16, 20), (16, 18), (20, 18))
THRESHOLD = 0.3  # DWPose draws points with score > 0.3


def _hsv_edge_colors(n: int) -> list[tuple[int, int, int]]:
    import colorsys

    return [tuple(int(c * 255) for c in colorsys.hsv_to_rgb(i / n, 1.0, 1.0)) for i in range(n)]


HAND_COLORS = tuple(_hsv_edge_colors(4)) * 2  # DWPose colours hand edges around the hue circle


def openpose18(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe (33, 2), (33,) -> OpenPose-18 (18, 2), (18,); the neck takes the weaker shoulder's score."""
    idx = np.array(OPENPOSE_FROM_MEDIAPIPE)
    kp = keypoints[np.maximum(idx, 0)].copy()
    sc = scores[np.maximum(idx, 0)].copy()
    kp[1] = (keypoints[11] + keypoints[12]) / 2
    sc[1] = min(scores[11], scores[12])
    return kp, sc


def fit_transform(src_w: int, src_h: int, width: int, height: int, fit: str = "contain"):
    """(scale_x, scale_y, offset_x, offset_y) taking normalised source coordinates to map pixels."""
    if fit == "stretch":
        return float(width), float(height), 0.0, 0.0
    if fit != "contain":
        raise ValueError(f"fit must be 'contain' or 'stretch', got {fit!r}")
    s = min(width / src_w, height / src_h)
    return src_w * s, src_h * s, (width - src_w * s) / 2, (height - src_h * s) / 2


def render_pose(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int, *, src_size=None,
                fit: str = "contain", threshold: float = THRESHOLD, stick: int | None = None) -> np.ndarray:
    """One pose map, uint8 (height, width, 3) RGB, black where nothing is drawn.

    Args:
        keypoints: (33, 2) normalised MediaPipe landmarks; scores: (33,).
        src_size: (w, h) of the frame the coordinates refer to (default: the map's own size).
        stick: limb half-width and joint radius in pixels (default: DWPose's 4 px at 480 px, scaled).
    """
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    sw, sh = src_size or (width, height)
    ax, ay, ox, oy = fit_transform(sw, sh, width, height, fit)
    px = np.stack([keypoints[:, 0] * ax + ox, keypoints[:, 1] * ay + oy], axis=1)  # (33, 2) pixels
    stick = stick or max(1, round(4 * min(width, height) / 480))
    body, body_sc = openpose18(px, scores)

    def limb(p, q, color):
        mx, my = (p + q) / 2
        length = float(np.hypot(*(p - q)))
        angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
        poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, color)

    for (i, j), color in zip(LIMB_SEQ, COLORS):
        if body_sc[i - 1] > threshold and body_sc[j - 1] > threshold:
            limb(body[i - 1], body[j - 1], color)
    for (i, j), color in zip(FOOT_EDGES, FOOT_COLORS):
        if scores[i] > threshold and scores[j] > threshold:
            limb(px[i], px[j], color)
    canvas[:] = (canvas * 0.6).astype(np.uint8)  # DWPose dims the limbs so the joints stand out
    for (i, j), color in zip(HAND_EDGES, HAND_COLORS):
        if scores[i] > threshold and scores[j] > threshold:
            cv2.line(canvas, tuple(int(v) for v in px[i]), tuple(int(v) for v in px[j]), color,
                     max(1, stick // 2), cv2.LINE_AA)
    for k in range(18):
        if body_sc[k] > threshold:
            cv2.circle(canvas, (int(body[k, 0]), int(body[k, 1])), stick, COLORS[k], thickness=-1)
    return canvas


def render_pose_maps(frames: PoseFrames, width: int, height: int, *, fit: str = "contain",
                     threshold: float = THRESHOLD, stick: int | None = None) -> np.ndarray:
    """uint8 (F, height, width, 3) pose maps of a clip; frames without a person are black."""
    out = np.zeros((len(frames), height, width, 3), np.uint8)
    for f in range(len(frames)):
        if frames.present[f]:
            out[f] = render_pose(frames.keypoints[f], frames.scores[f], width, height,
                                 src_size=(frames.width, frames.height), fit=fit, threshold=threshold, stick=stick)
    return out


def clip_pose_maps(tracks: PoseTrack | Mapping[str, PoseTrack], pieces: Sequence, frames: int, fps: float,
                   width: int, height: int, *, fit: str = "contain", beyond: str = "loop") -> np.ndarray:
    """uint8 (frames, height, width, 3) pose maps of one clip from its MediaPieces (ClipSpec.pose);
    tracks from `svi.conditioning.pose.conditioning_track`."""
    return render_pose_maps(slice_pose(tracks, pieces, frames, fps, beyond=beyond), width, height, fit=fit)
