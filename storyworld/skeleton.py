"""The figure's skeleton: the MediaPipe 33-landmark layout and synthetic action streams.

Keypoint streams are float32 arrays (N, 33, 3): x / W, y / H (image-normalised, y down) and a
visibility in [0, 1], in MediaPipe Pose landmark order, so a stream extracted from a real video by
mediapipe can drive the figure unchanged. The figure is drawn from 13 of the 33 points (`BODY`:
nose, shoulders, elbows, wrists, hips, knees, ankles); the other 20 are derived (eyes, ears, mouth
corners, hands, feet) so that the file is complete. As in MediaPipe, "left" is the person's left,
which is the image right for a figure facing the camera.

Synthetic actions are built in "height units" (multiples of the frame height H) with joint angles
measured from straight down, positive towards the image right, and forward kinematics, so bone
lengths stay constant and a pose analyzer can rely on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSE_LAYOUT = "mediapipe-pose-33"
LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)
L = {name: i for i, name in enumerate(LANDMARK_NAMES)}

# The 13 points the figure is drawn from and the pose analyzer reads back.
BODY: tuple[int, ...] = (0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
BODY_NAMES: tuple[str, ...] = tuple(LANDMARK_NAMES[i] for i in BODY)
# Drawn bones (pairs of landmark indices); the neck, from the shoulder midpoint to the nose, is extra.
TORSO_BONES = ((11, 12), (11, 23), (12, 24), (23, 24))
LIMBS: dict[str, tuple[int, int, int]] = {  # root, middle, end
    "left_arm": (11, 13, 15), "right_arm": (12, 14, 16), "left_leg": (23, 25, 27), "right_leg": (24, 26, 28),
}
BONES = TORSO_BONES + tuple(b for a, m, e in LIMBS.values() for b in ((a, m), (m, e)))

ACTION_FPS_MIN = 4  # below this the synthetic actions alias into noise


@dataclass(frozen=True)
class Body:
    """Bone lengths in height units (fractions of the frame height). The head is big on purpose:
    the mouth must stay several pixels tall at 96 px for the audio-mouth analyzer."""

    head_r: float = 0.085
    neck: float = 0.11  # head centre (nose) to shoulder midpoint
    shoulder_half: float = 0.065
    spine: float = 0.20  # shoulder midpoint to hip midpoint
    hip_half: float = 0.045
    upper_arm: float = 0.10
    forearm: float = 0.09
    thigh: float = 0.135
    shin: float = 0.125

    @property
    def reach(self) -> float:
        """Farthest a hand gets from the spine, sideways."""
        return self.shoulder_half + self.upper_arm + self.forearm


BODY_PROPORTIONS = Body()


@dataclass(frozen=True)
class PoseAngles:
    """Per-frame pose parameters, each an array (N,). Angles in radians from straight down (0),
    positive towards the image right; root is the hip midpoint in height units."""

    root_x: np.ndarray
    root_y: np.ndarray
    spine: np.ndarray
    neck: np.ndarray
    shoulder_tilt: np.ndarray
    hip_tilt: np.ndarray
    l_upper: np.ndarray
    l_fore: np.ndarray
    r_upper: np.ndarray
    r_fore: np.ndarray
    l_thigh: np.ndarray
    l_shin: np.ndarray
    r_thigh: np.ndarray
    r_shin: np.ndarray


def _down(a: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 2) for angles from straight down, positive towards +x."""
    return np.stack([np.sin(a), np.cos(a)], axis=-1)


def forward_kinematics(p: PoseAngles, body: Body = BODY_PROPORTIONS) -> np.ndarray:
    """(N, 33, 2) keypoints in height units from pose angles."""
    n = p.root_x.shape[0]
    k = np.zeros((n, NUM_LANDMARKS, 2), np.float64)
    hip_c = np.stack([p.root_x, p.root_y], -1)  # (N, 2)
    sh_c = hip_c - body.spine * _down(p.spine)  # "up" is minus "down"
    head = sh_c - body.neck * _down(p.neck)
    sh_dir = np.stack([np.cos(p.shoulder_tilt), np.sin(p.shoulder_tilt)], -1)  # towards the image right
    hip_dir = np.stack([np.cos(p.hip_tilt), np.sin(p.hip_tilt)], -1)
    k[:, L["nose"]] = head
    k[:, L["left_shoulder"]] = sh_c + body.shoulder_half * sh_dir
    k[:, L["right_shoulder"]] = sh_c - body.shoulder_half * sh_dir
    k[:, L["left_hip"]] = hip_c + body.hip_half * hip_dir
    k[:, L["right_hip"]] = hip_c - body.hip_half * hip_dir
    for side in ("left", "right"):
        s = side[0]
        up, fore = getattr(p, f"{s}_upper"), getattr(p, f"{s}_fore")
        thigh, shin = getattr(p, f"{s}_thigh"), getattr(p, f"{s}_shin")
        k[:, L[f"{side}_elbow"]] = k[:, L[f"{side}_shoulder"]] + body.upper_arm * _down(up)
        k[:, L[f"{side}_wrist"]] = k[:, L[f"{side}_elbow"]] + body.forearm * _down(fore)
        k[:, L[f"{side}_knee"]] = k[:, L[f"{side}_hip"]] + body.thigh * _down(thigh)
        k[:, L[f"{side}_ankle"]] = k[:, L[f"{side}_knee"]] + body.shin * _down(shin)
    _derive_minor(k, body.head_r)
    return k


def _derive_minor(k: np.ndarray, head_r: float) -> None:
    """Fill the 20 non-drawn landmarks from the drawn ones (in place), so files are complete."""
    head = k[:, L["nose"]]
    offsets = {"left_eye_inner": (0.2, -0.25), "left_eye": (0.35, -0.25), "left_eye_outer": (0.5, -0.25),
               "right_eye_inner": (-0.2, -0.25), "right_eye": (-0.35, -0.25), "right_eye_outer": (-0.5, -0.25),
               "left_ear": (0.95, -0.05), "right_ear": (-0.95, -0.05),
               "mouth_left": (0.35, 0.45), "mouth_right": (-0.35, 0.45)}
    for name, (dx, dy) in offsets.items():
        k[:, L[name]] = head + head_r * np.array([dx, dy])
    for side in ("left", "right"):
        wrist, elbow = k[:, L[f"{side}_wrist"]], k[:, L[f"{side}_elbow"]]
        d = wrist - elbow
        d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
        perp = np.stack([-d[:, 1], d[:, 0]], -1)
        k[:, L[f"{side}_index"]] = wrist + 0.035 * d
        k[:, L[f"{side}_pinky"]] = wrist + 0.028 * d + 0.012 * perp
        k[:, L[f"{side}_thumb"]] = wrist + 0.02 * d - 0.014 * perp
        ankle = k[:, L[f"{side}_ankle"]]
        out = 1.0 if side == "left" else -1.0
        k[:, L[f"{side}_heel"]] = ankle + np.array([-0.01 * out, 0.015])
        k[:, L[f"{side}_foot_index"]] = ankle + np.array([0.035 * out, 0.02])


def action_angles(action: str, n_frames: int, fps: float, root_x: float, rng: np.random.Generator,
                  body: Body = BODY_PROPORTIONS) -> PoseAngles:
    """Pose angles (in height units) for a named action over `n_frames` frames.

    Args:
        action: one of storyworld.world.ACTIONS.
        root_x: hip midpoint x in height units (the figure's place in the frame).
        rng: draws phases, tempos and which arm waves.
    """
    if fps < ACTION_FPS_MIN:
        raise ValueError(f"fps must be >= {ACTION_FPS_MIN} for figure actions, got {fps}")
    t = np.arange(n_frames) / fps  # (N,) seconds
    phase = rng.uniform(0, 2 * np.pi)
    tempo = rng.uniform(0.8, 1.2)
    w = 2 * np.pi * tempo  # about one beat per second
    ground = 0.885  # ankles of a standing figure, in height units
    stand_root = ground - (body.thigh + body.shin) * np.cos(0.06)
    z = np.zeros_like(t)
    one = np.ones_like(t)
    a = dict(root_x=root_x + 0.004 * np.sin(0.5 * w * t + phase), root_y=stand_root + z,
             spine=0.02 * np.sin(0.5 * w * t + phase), neck=0.03 * np.sin(0.7 * w * t + phase), shoulder_tilt=z,
             hip_tilt=z, l_upper=0.28 + 0.04 * np.sin(w * t + phase), l_fore=0.18 * one,
             r_upper=-0.28 - 0.04 * np.sin(w * t + phase), r_fore=-0.18 * one,
             l_thigh=0.06 * one, l_shin=0.06 * one, r_thigh=-0.06 * one, r_shin=-0.06 * one)
    s = np.sin(w * t + phase)
    if action == "stands":
        pass
    elif action == "waves":
        side = "l" if rng.random() < 0.5 else "r"
        sign = 1.0 if side == "l" else -1.0
        a[f"{side}_upper"] = sign * (2.2 + 0.08 * np.sin(0.5 * w * t))
        a[f"{side}_fore"] = sign * (2.85 + 0.5 * np.sin(1.6 * w * t + phase))
    elif action == "walks":
        # A march seen from the front: knees lift in turn, arms swing against them, the body drifts.
        # (Scissoring legs would cross, and crossed limbs are ambiguous in 2-D.)
        lift_l, lift_r = np.clip(s, 0, None), np.clip(-s, 0, None)
        a["l_thigh"] = 0.08 + 1.0 * lift_l
        a["r_thigh"] = -0.08 - 1.0 * lift_r
        a["l_shin"] = 0.08 + 0.1 * lift_l
        a["r_shin"] = -0.08 - 0.1 * lift_r
        a["l_upper"] = 0.25 + 0.5 * lift_r
        a["r_upper"] = -0.25 - 0.5 * lift_l
        a["l_fore"] = a["l_upper"] + 0.5 * lift_r
        a["r_fore"] = a["r_upper"] - 0.5 * lift_l
        a["root_x"] = root_x + 0.03 * np.sin(0.25 * w * t + phase)
        a["root_y"] = stand_root - 0.02 * (lift_l + lift_r)
    elif action == "dances":
        up_l = 0.3 + 1.7 * (0.5 + 0.5 * s)
        up_r = 0.3 + 1.7 * (0.5 - 0.5 * s)
        a["l_upper"], a["r_upper"] = up_l, -up_r
        a["l_fore"] = up_l + 0.7 * np.sin(w * t + phase + 1.0)
        a["r_fore"] = -up_r - 0.7 * np.sin(w * t + phase + 1.0)
        sway = np.sin(0.5 * w * t + phase)
        a["root_x"] = root_x + 0.035 * sway
        a["spine"] = 0.14 * sway
        a["neck"] = 0.2 * sway
        a["shoulder_tilt"] = 0.12 * sway
        a["hip_tilt"] = -0.08 * sway
        bend = 0.5 + 0.5 * np.sin(2 * w * t + phase)
        a["root_y"] = stand_root + 0.025 * bend
        a["l_thigh"] = 0.1 + 0.25 * bend
        a["r_thigh"] = -0.1 - 0.25 * bend
        a["l_shin"] = a["l_thigh"] - 0.45 * bend
        a["r_shin"] = a["r_thigh"] + 0.45 * bend
    elif action == "jumps":
        u = ((t * tempo / 1.2) + phase / (2 * np.pi)) % 1.0  # position in the jump cycle
        air = np.clip(np.sin(np.pi * (u - 0.3) / 0.5), 0, None) * ((u > 0.3) & (u < 0.8))
        crouch = np.clip(np.sin(np.pi * u / 0.3), 0, None) * (u < 0.3)
        a["root_y"] = stand_root - 0.1 * air + 0.03 * crouch
        a["l_upper"] = 0.3 + 2.0 * air
        a["r_upper"] = -0.3 - 2.0 * air
        a["l_fore"] = a["l_upper"] + 0.3
        a["r_fore"] = a["r_upper"] - 0.3
        a["l_thigh"] = 0.08 + 0.35 * crouch + 0.15 * air
        a["r_thigh"] = -0.08 - 0.35 * crouch - 0.15 * air
        a["l_shin"] = a["l_thigh"] - 0.7 * crouch - 0.3 * air
        a["r_shin"] = a["r_thigh"] + 0.7 * crouch + 0.3 * air
    else:
        raise ValueError(f"unknown action {action!r}; known: stands, waves, walks, dances, jumps")
    return PoseAngles(**{k_: np.asarray(v, np.float64) for k_, v in a.items()})


def action_keypoints(action: str, n_frames: int, fps: float, root_x_px: float, width: int, height: int,
                     rng: np.random.Generator, body: Body = BODY_PROPORTIONS) -> np.ndarray:
    """(N, 33, 3) float32 keypoint stream (x / W, y / H, visibility 1) for a named action whose hip
    midpoint rests at pixel column `root_x_px`."""
    k = forward_kinematics(action_angles(action, n_frames, fps, root_x_px / height, rng, body), body)
    out = np.ones((n_frames, NUM_LANDMARKS, 3), np.float32)
    out[..., 0] = k[..., 0] * height / width  # height units -> x / W
    out[..., 1] = k[..., 1]
    return out


def to_pixels(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 33, >=2) normalised keypoints -> (..., 33, 2) float pixel coordinates."""
    k = np.asarray(keypoints, np.float64)
    if k.shape[-2] != NUM_LANDMARKS or k.shape[-1] < 2:
        raise ValueError(f"keypoints must have shape (..., {NUM_LANDMARKS}, 2 or 3) in the {POSE_LAYOUT} layout; "
                         f"got {k.shape}")
    return k[..., :2] * np.array([width, height], np.float64)
