"""Read the stick figure back from a frame: its 13 body keypoints and its mouth opening.

The fit explains the ink map (storyworld.maps.ink_alpha) with the figure's own drawing model:
1. the head is the white disc (maps.find_head): the nose keypoint;
2. the torso (neck angle, shoulder tilt, spine angle, hip tilt) by a coarse-to-fine grid search
   maximising the mean ink under the neck, shoulder line, torso sides and hip line;
3. the torso's ink is removed, then each limb (two bones from its shoulder or hip) by an exhaustive
   search over both bone angles, greedily: the best-explained limb is committed first and its ink
   removed, so two limbs never claim the same stroke.
Bone lengths come from a reference skeleton for the frame when one is given (what the figure was
asked to do) or else from the synthetic body. Angles and positions come from the pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .audio import SAMPLE_RATE, loudness_envelope
from .draw import segment_distance
from .figure import HEAD_R, MOUTH_H_CLOSED, MOUTH_H_OPEN, MOUTH_RX, MOUTH_Y, OUTLINE_W, line_width
from .maps import as_float, find_head, ink_alpha
from .skeleton import BODY, BODY_PROPORTIONS, L, LIMBS, NUM_LANDMARKS, to_pixels

SAMPLES_PER_BONE = 9
MIN_FIGURE_INK = 0.35  # mean ink under the fitted torso below this: no figure
MAX_BEND = 2.6  # radians a knee or elbow may bend (the actions use up to ~1.2)


@dataclass(frozen=True)
class Lengths:
    """Bone lengths in px."""

    neck: float
    shoulder_half: float
    spine: float
    hip_half: float
    limbs: dict[str, tuple[float, float]]  # limb name -> (first bone, second bone)

    @staticmethod
    def from_body(height: int) -> "Lengths":
        b = BODY_PROPORTIONS
        return Lengths(b.neck * height, b.shoulder_half * height, b.spine * height, b.hip_half * height,
                       {name: ((b.upper_arm if "arm" in name else b.thigh) * height,
                               (b.forearm if "arm" in name else b.shin) * height) for name in LIMBS})

    @staticmethod
    def from_keypoints(kp_px: np.ndarray) -> "Lengths":
        """Lengths of a (33, 2) pixel skeleton."""
        def dist(i, j):
            return float(np.linalg.norm(kp_px[i] - kp_px[j]))
        sh = (kp_px[L["left_shoulder"]] + kp_px[L["right_shoulder"]]) / 2
        hip = (kp_px[L["left_hip"]] + kp_px[L["right_hip"]]) / 2
        return Lengths(float(np.linalg.norm(kp_px[L["nose"]] - sh)), dist(11, 12) / 2, float(np.linalg.norm(sh - hip)),
                       dist(23, 24) / 2, {name: (dist(a, m), dist(m, e)) for name, (a, m, e) in LIMBS.items()})


@dataclass(frozen=True)
class FigureReading:
    keypoints: np.ndarray  # (33, 3): x / W, y / H, confidence; only the 13 BODY points are fitted
    head: tuple[float, float, float]  # (cx, cy, r) in px
    torso_ink: float  # mean ink under the fitted torso, in [0, 1]
    limb_ink: dict[str, float]  # limb name -> mean ink under its two bones
    mouth: float  # mouth opening in [0, 1]

    @property
    def body(self) -> np.ndarray:
        """(13, 2) normalised BODY keypoints."""
        return self.keypoints[list(BODY), :2]


class _Sampler:
    """Mean ink along many segments at once (bilinear, zero outside the frame)."""

    def __init__(self, ink: np.ndarray):
        self.ink = np.pad(ink, 1)  # a zero border: samples off the frame read 0
        self.h, self.w = ink.shape

    def mean(self, a: np.ndarray, b: np.ndarray, t0: float = 0.0) -> np.ndarray:
        """a, b: (..., 2) pixel endpoints -> (...) mean ink over SAMPLES_PER_BONE points from t0 to 1."""
        t = t0 + (1 - t0) * (np.arange(SAMPLES_PER_BONE) + 0.5) / SAMPLES_PER_BONE  # (S,)
        x = a[..., None, 0] + (b[..., None, 0] - a[..., None, 0]) * t  # (..., S) pixel x
        y = a[..., None, 1] + (b[..., None, 1] - a[..., None, 1]) * t
        # Pixel centres sit at integer + 0.5; +1 for the border, clipped onto the zero border.
        x = np.clip(x + 0.5, 0.0, self.w + 1.0)
        y = np.clip(y + 0.5, 0.0, self.h + 1.0)
        x0 = np.minimum(x.astype(np.intp), self.w)
        y0 = np.minimum(y.astype(np.intp), self.h)
        fx, fy = x - x0, y - y0
        g = self.ink
        v = (g[y0, x0] * (1 - fx) * (1 - fy) + g[y0, x0 + 1] * fx * (1 - fy)
             + g[y0 + 1, x0] * (1 - fx) * fy + g[y0 + 1, x0 + 1] * fx * fy)
        return v.mean(-1)


def _head_radius(r_white: float, height: int) -> float:
    """Head radius in px: the drawn one unless the white disc (inside the outline) says the head is
    clearly another size (a model may draw it so). The white disc alone runs small: its rim is grey."""
    drawn = HEAD_R * height
    measured = r_white + max(1.0, OUTLINE_W * height)
    return drawn if 0.7 < measured / drawn < 1.4 else measured


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _dir(angle: np.ndarray) -> np.ndarray:
    """Unit vector (..., 2) of an angle from straight down, positive towards +x."""
    return np.stack([np.sin(angle), np.cos(angle)], -1)


def _perp(angle: np.ndarray) -> np.ndarray:
    """Unit vector (..., 2) across the body for a tilt angle (0: horizontal, towards +x)."""
    return np.stack([np.cos(angle), np.sin(angle)], -1)


def _torso(head: np.ndarray, lengths: Lengths, neck, tilt, spine, hip_tilt):
    """Keypoints of the torso for arrays of parameters (broadcast)."""
    sh = head + lengths.neck * _dir(neck)
    ls, rs = sh + lengths.shoulder_half * _perp(tilt), sh - lengths.shoulder_half * _perp(tilt)
    hip = sh + lengths.spine * _dir(spine)
    lh, rh = hip + lengths.hip_half * _perp(hip_tilt), hip - lengths.hip_half * _perp(hip_tilt)
    return sh, ls, rs, lh, rh


def _fit_torso(s: _Sampler, head: np.ndarray, head_r: float, lengths: Lengths) -> tuple[np.ndarray, float]:
    """((neck, tilt, spine, hip_tilt) angles, mean ink) of the torso hanging from the head."""
    t0 = min(0.9, (head_r + 1.0) / max(lengths.neck, 1e-6))  # the neck shows below the head only

    def neck_and_shoulders(sh, ls, rs):
        return s.mean(np.broadcast_to(head, sh.shape), sh, t0) + s.mean(rs, ls)

    def score(neck, tilt, spine, hip_tilt):
        sh, ls, rs, lh, rh = _torso(head, lengths, neck, tilt, spine, hip_tilt)
        return (neck_and_shoulders(sh, ls, rs) + s.mean(ls, lh) + s.mean(rs, rh) + s.mean(rh, lh)) / 5

    # 1. Coarse grids: the neck and shoulder line first (15 x 11), then the spine and hips (13 x 11)
    #    under each of the three best.
    g_neck, g_tilt = np.meshgrid(np.linspace(-0.7, 0.7, 15), np.linspace(-0.5, 0.5, 11), indexing="ij")
    sh, ls, rs, _, _ = _torso(head, lengths, g_neck, g_tilt, 0.0, 0.0)
    top = np.argsort(neck_and_shoulders(sh, ls, rs).ravel())[-3:]  # (15, 11) scores, best three
    g_spine, g_hip = np.meshgrid(np.linspace(-0.6, 0.6, 13), np.linspace(-0.5, 0.5, 11), indexing="ij")
    best, p = -1.0, np.zeros(4)
    for i in top:
        n, tl = g_neck.ravel()[i], g_tilt.ravel()[i]
        sc = score(n, tl, g_spine, g_hip).ravel()
        j = int(sc.argmax())
        if sc[j] > best:
            best, p = float(sc[j]), np.array([n, tl, g_spine.ravel()[j], g_hip.ravel()[j]])
    # 2. Refine all four jointly on shrinking 3^4 grids around the best.
    for step in (0.05, 0.025, 0.0125):
        offs = np.stack(np.meshgrid(*[np.array([-step, 0.0, step])] * 4, indexing="ij"), -1).reshape(-1, 4)
        cand = p + offs  # (81, 4), the centre included, so the score never drops
        sc = score(cand[:, 0], cand[:, 1], cand[:, 2], cand[:, 3])
        p, best = cand[int(sc.argmax())], float(sc.max())
    return p, best


def _limb_score(s: _Sampler, root: np.ndarray, lengths: tuple[float, float], a1, a2) -> np.ndarray:
    """Mean ink under a two-bone chain from `root` with bone angles a1, a2 (broadcast)."""
    l1, l2 = lengths
    mid = root + l1 * _dir(a1)
    end = mid + l2 * _dir(a2)
    t0 = 0.15  # the first bone's start sits on the torso's (erased) ink
    return (s.mean(np.broadcast_to(root, mid.shape), mid, t0) + s.mean(mid, end)) / 2


def _fit_limb(s: _Sampler, root: np.ndarray, lengths: tuple[float, float]):
    """Best ((angle1, angle2), score) of a two-bone chain from `root`: exhaustive, then refined."""
    grid = np.linspace(-np.pi, np.pi, 36, endpoint=False)
    a1, a2 = np.meshgrid(grid, grid, indexing="ij")
    # A second bone folded back onto the first would score its ink twice: joints bend at most MAX_BEND.
    sc = np.where(np.abs(_wrap(a2 - a1)) <= MAX_BEND, _limb_score(s, root, lengths, a1, a2), -1.0)
    i = int(sc.argmax())
    p = np.array([a1.ravel()[i], a2.ravel()[i]])
    best = float(sc.ravel()[i])
    for step in (np.radians(5), np.radians(2.5), np.radians(1.25)):
        offs = np.stack(np.meshgrid(*[np.array([-step, 0.0, step])] * 2, indexing="ij"), -1).reshape(-1, 2)
        cand = p + offs
        sc = np.where(np.abs(_wrap(cand[:, 1] - cand[:, 0])) <= MAX_BEND,
                      _limb_score(s, root, lengths, cand[:, 0], cand[:, 1]), -1.0)
        if sc.max() >= best:
            p, best = cand[int(sc.argmax())], float(sc.max())
    return p, best


def _erase(ink: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Ink with the strokes a[i]-b[i] (S, 2) removed within `radius` px (a copy)."""
    h, w = ink.shape
    pts = np.concatenate([a, b])
    x0, y0 = (np.floor(pts.min(0) - radius - 1).astype(int)).clip(0)
    x1, y1 = np.minimum(np.ceil(pts.max(0) + radius + 2).astype(int), [w, h])
    out = ink.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    d = segment_distance(xs, ys, np.asarray(a, np.float64), np.asarray(b, np.float64))
    out[y0:y1, x0:x1][d < radius] = 0.0
    return out


def read_figure(frame: np.ndarray, reference: np.ndarray | None = None) -> FigureReading | None:
    """Fit the figure in a frame; None when there is no head or too little ink under a torso.

    Args:
        frame: (H, W, 3) RGB.
        reference: optional (33, 2|3) normalised skeleton the figure should show; only its bone
            lengths are used.
    """
    f = as_float(frame)
    h, w = f.shape[:2]
    head = find_head(f)
    if head is None:
        return None
    cx, cy, r_white = head
    r = _head_radius(r_white, h)
    lengths = Lengths.from_body(h) if reference is None else Lengths.from_keypoints(to_pixels(reference, w, h))
    ink = ndimage.gaussian_filter(ink_alpha(f), 0.7)
    s = _Sampler(ink)
    hc = np.array([cx, cy])
    (neck, tilt, spine, hip_tilt), torso_ink = _fit_torso(s, hc, r, lengths)
    if torso_ink < MIN_FIGURE_INK:
        return None
    sh, ls, rs, lh, rh = _torso(hc, lengths, neck, tilt, spine, hip_tilt)
    lw = line_width(h)
    a = np.array([sh, rs, ls, rs, rh])
    b = np.array([hc, ls, lh, rh, lh])
    ink = _erase(ink, a, b, lw / 2 + 1.5)
    ink = _erase(ink, hc[None], hc[None], r + 1.0)  # the head and its outline
    roots = {"left_arm": ls, "right_arm": rs, "left_leg": lh, "right_leg": rh}
    kp = np.zeros((NUM_LANDMARKS, 3), np.float64)
    for name, p in (("nose", hc), ("left_shoulder", ls), ("right_shoulder", rs), ("left_hip", lh), ("right_hip", rh)):
        kp[L[name], :2] = p
        kp[L[name], 2] = torso_ink
    limb_ink = {}
    todo = dict(roots)
    fits: dict[str, tuple[np.ndarray, float]] = {}
    while todo:  # greedy: commit the best-explained limb, erase its ink, refit the rest
        sampler = _Sampler(ink)
        for name, root in todo.items():
            if name in fits:  # erasing only lowers scores: a best whose ink is untouched stays best
                (a1, a2), old = fits[name]
                if abs(float(_limb_score(sampler, root, lengths.limbs[name], a1, a2)) - old) < 1e-9:
                    continue
            fits[name] = _fit_limb(sampler, root, lengths.limbs[name])
        name = max(todo, key=lambda k: fits[k][1])
        (a1, a2), score = fits.pop(name)
        root = todo.pop(name)
        l1, l2 = lengths.limbs[name]
        mid = root + l1 * _dir(np.float64(a1))
        end = mid + l2 * _dir(np.float64(a2))
        _, m_i, e_i = LIMBS[name]
        kp[m_i, :2], kp[e_i, :2] = mid, end
        kp[m_i, 2] = kp[e_i, 2] = score
        limb_ink[name] = score
        ink = _erase(ink, np.array([root, mid]), np.array([mid, end]), lw / 2 + 1.0)
    kp[:, 0] /= w
    kp[:, 1] /= h
    return FigureReading(keypoints=kp.astype(np.float32), head=(cx, cy, r), torso_ink=torso_ink,
                         limb_ink=limb_ink, mouth=mouth_opening(f, (cx, cy, r)))


def mouth_opening(frame: np.ndarray, head: tuple[float, float, float] | None = None) -> float:
    """Mouth opening in [0, 1] (the generator's scale), from the dark area inside the lower head;
    NaN when no head is found."""
    f = as_float(frame)
    if head is None:
        found = find_head(f)
        if found is None:
            return float("nan")
        cx, cy, r_white = found
        head = (cx, cy, _head_radius(r_white, f.shape[0]))
    cx, cy, r = head
    h, w = f.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dx, dy = (xs - cx) / r, (ys - cy) / r
    # The mouth's box (its widest and tallest) inside the outline, below the eyes.
    window = (np.abs(dx) < MOUTH_RX + 0.15) & (dy > 0.05) & (dy < MOUTH_Y + (MOUTH_H_CLOSED + MOUTH_H_OPEN) / 2 + 0.1) \
        & (dx * dx + dy * dy < 0.8 ** 2)
    if not window.any():
        return float("nan")
    v = f.max(-1)
    inside = (dx * dx + dy * dy) < 0.75 ** 2
    ref = float(np.percentile(v[inside], 90))  # the head's white as this frame renders it
    dark = np.clip(1.0 - v / max(ref, 1.0), 0.0, 1.0)
    area = float(dark[window].sum()) / (r * r)  # in head radii squared
    height = 2 * area / (np.pi * MOUTH_RX)  # ellipse: area = pi * rx * (height / 2)
    return float(np.clip((height - MOUTH_H_CLOSED) / MOUTH_H_OPEN, 0.0, 1.0))


def mouth_series(frames: np.ndarray) -> np.ndarray:
    """(N,) mouth opening per frame (NaN where no head is found)."""
    return np.array([mouth_opening(fr) for fr in frames], np.float64)


def lip_sync(frames: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int = SAMPLE_RATE) -> float:
    """Pearson correlation between the mouth opening read from `frames` and the loudness envelope of
    `audio` on the same frame grid; NaN if fewer than 3 frames show a head or either is constant."""
    mouth = mouth_series(frames)
    env = loudness_envelope(audio, len(frames), fps, sample_rate).astype(np.float64)
    ok = np.isfinite(mouth)
    if ok.sum() < 3 or mouth[ok].std() < 1e-6 or env[ok].std() < 1e-6:
        return float("nan")
    return float(np.corrcoef(mouth[ok], env[ok])[0, 1])


def latent_rate_sync_bound(audio: np.ndarray, n_frames: int, fps: float, group: int = 4,
                           sample_rate: int = SAMPLE_RATE) -> float:
    """The lip sync (as `lip_sync` scores it) of a mouth that follows the loudness perfectly, but only
    at the rate of a video VAE's latent frames: frame 0 alone, then each run of `group` frames
    sharing its mean opening (a causal VAE 4x in time, as Wan's, whose one latent frame holds them).

    A model that gets every latent frame's mouth right and nothing finer scores this; speech flips
    the mouth faster than 4 frames at a low frame rate, so it sits well below 1."""
    env = loudness_envelope(audio, n_frames, fps, sample_rate).astype(np.float64)
    held = env.copy()
    for a in range(1, n_frames, group):
        held[a:a + group] = env[a:a + group].mean()
    if env.std() < 1e-6 or held.std() < 1e-6:
        return float("nan")
    return float(np.corrcoef(env, held)[0, 1])


def pose_error(frames: np.ndarray, skeleton: np.ndarray, *, use_lengths: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean keypoint error of the figure against a skeleton, as a fraction of the frame's
    shorter side, over the 13 BODY points.

    Args:
        frames: (N, H, W, 3).
        skeleton: (N, 33, 2|3) normalised keypoints the figure should follow; frames whose
            skeleton has zero visibility (3rd channel) are skipped (NaN).
        use_lengths: take bone lengths from `skeleton` (default) rather than the synthetic body.

    Returns:
        (errors (N,) with NaN where skipped or no figure was found, found (N,) bool).
    """
    frames = np.asarray(frames)
    skeleton = np.asarray(skeleton, np.float32)
    if skeleton.ndim != 3 or skeleton.shape[0] != len(frames) or skeleton.shape[1] != NUM_LANDMARKS:
        raise ValueError(f"skeleton must be (N={len(frames)}, {NUM_LANDMARKS}, 2|3), got {skeleton.shape}")
    h, w = frames.shape[1:3]
    scale = np.array([w, h], np.float64)
    errors = np.full(len(frames), np.nan)
    found = np.zeros(len(frames), bool)
    for i, fr in enumerate(frames):
        if skeleton.shape[2] > 2 and skeleton[i, BODY, 2].max() <= 0:
            continue
        reading = read_figure(fr, skeleton[i] if use_lengths else None)
        if reading is None:
            continue
        found[i] = True
        d = (reading.body.astype(np.float64) - skeleton[i, list(BODY), :2]) * scale
        errors[i] = float(np.linalg.norm(d, axis=-1).mean() / min(w, h))
    return errors, found
