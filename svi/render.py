"""The SVI sampler, clip by clip: `Renderer.stream(plan)` yields one `ClipResult` per clip.

Per clip (SVI_SPEC 1.6, 2.1, 2.2, 6.4): 1 CLIP forward on the first condition frame, 1 VAE encode
of the F-frame condition video (condition frames, then zeros or the start image), `steps` Euler
steps with cond and uncond in ONE batched DiT forward each, 1 VAE decode. The carry (last m
decoded frames, uint8) stays on the device for the next clip. Prompts are encoded once per unique
text and cached. The same number of DiT sample-forwards as plain Wan I2V: SVI adds no cost.

The loop is written out here (diffusers' "simple over easy"): the scheduler only does maths and
the models only run forward. UI hooks are plain callables (`on_step`, `should_stop`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .conditioning.audio_adapter import audio_guidance
from .errors import RenderCancelled
from .encoders import clip_features, encode_prompts, to_model_pixels, to_uint8, vae_decode, vae_encode
from .images import load_image
from .models import WanComponents
from .planning import ClipPlan, ClipSpec
from .presets import ModelSpec
from .scheduler import FlowMatchScheduler
from .timeline import StoryboardError

PROMPT_CACHE_SIZE = 512


@dataclass
class ClipResult:
    index: int
    frames: np.ndarray  # (n, H, W, 3) uint8: the frames this clip appends to the output
    carry: np.ndarray  # (m, H, W, 3) uint8: last m generated frames, the next clip's condition
    input_hash: str
    carry_hash: str
    seed: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    forwards: int = 0  # DiT forward calls made for this clip (each batches cond + uncond)


def frames_hash(frames: np.ndarray | torch.Tensor) -> str:
    """Content hash of uint8 frames (shape included), the carry identity used in input hashes."""
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
    return h.hexdigest()


def condition_mask(latent_frames: int, h: int, w: int, device, dtype) -> torch.Tensor:
    """(1, 4, T, h, w): only pixel frame 0 flagged, whatever m is (official default, SVI_SPEC 1.6)."""
    mask = torch.zeros(1, 4, latent_frames, h, w, device=device, dtype=dtype)
    mask[:, :, 0] = 1
    return mask


def condition_video(cond: torch.Tensor, ref: torch.Tensor, frames: int, padding: str) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1]: the condition frames, then zeros (mid grey) or the reference image.

    cond: (c, H, W, 3) uint8; ref: (H, W, 3) uint8."""
    c = cond.shape[0]
    video = torch.zeros(3, frames, *cond.shape[1:3], device=cond.device)
    video[:, :c] = to_model_pixels(cond)
    if padding == "ref":
        video[:, c:] = to_model_pixels(ref[None])  # broadcast over the padding frames
    elif padding != "zeros":
        raise ValueError(f"unknown padding mode {padding!r}")
    return video


class Renderer:
    """Owns resident models for one ModelSpec and streams clip plans through them."""

    def __init__(self, components: WanComponents, spec: ModelSpec, *, audio=None, pose=None, lora_steps=None):
        """audio / pose: svi.conditioning.runtime AudioConditioner / PoseConditioner for talk / dance.
        lora_steps: svi.lora.LoraSteps when a LoRA acts on part of the steps only (None: all fused)."""
        self.c = components
        self.spec = spec
        self.audio = audio
        self.pose = pose
        self.lora_steps = lora_steps
        self.scheduler = FlowMatchScheduler(shift=spec.shift)
        self._prompts: OrderedDict[str, torch.Tensor] = OrderedDict()  # text -> (1, L, D)
        self.prompt_encodes = 0  # texts run through the text encoder (for tests and benches)

    # ------------------------------------------------------------------ inputs
    def load_start_image(self, path: str) -> torch.Tensor:
        """(H, W, 3) uint8 on device at the spec's output size."""
        img = load_image(path)
        size = self.spec.output_size(*img.size)
        return torch.from_numpy(np.array(img.resize(size, resample=3))).to(self.c.device)  # 3 = bicubic

    def prompt_embeddings(self, texts: list[str]) -> None:
        """Encode the texts not yet cached, in one batch."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._prompts))
        if todo:
            emb = encode_prompts(self.c, todo, self.spec.text_len)
            self.prompt_encodes += len(todo)
            for t, e in zip(todo, emb):
                self._prompts[t] = e[None]
        for t in texts:
            self._prompts.move_to_end(t)
        while len(self._prompts) > PROMPT_CACHE_SIZE:
            self._prompts.popitem(last=False)

    # ------------------------------------------------------------------ the stream
    def stream(self, plan: ClipPlan, *, start_at: int = 0, carry: np.ndarray | torch.Tensor | None = None,
               on_step: Callable[[int, int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[ClipResult]:
        """Render clips start_at.. of `plan`, yielding each as soon as it is decoded.

        Args:
            start_at: first clip to render; clips before it are taken as done.
            carry: (m, H, W, 3) uint8 last frames of clip start_at-1 (required when start_at > 0).
            on_step: called as on_step(clip_index, step, steps) after each denoising step.
            should_stop: polled before each step; when true, RenderCancelled is raised.
        """
        # 1. Check inputs
        if plan.model_id != self.spec.model_id:
            raise ValueError(f"plan was made for {plan.model_id}, this renderer runs {self.spec.model_id}")
        if not 0 <= start_at < len(plan.clips):
            raise ValueError(f"start_at must be in [0, {len(plan.clips)}), got {start_at}")
        for track in ("audio", "pose"):
            if track in self.spec.needs and not any(getattr(c, track) for c in plan.clips):
                raise StoryboardError(f"{track}: the {self.spec.variant} variant needs at least one {track} segment")
        ref = self.load_start_image(plan.start_image)
        if start_at > 0:
            if carry is None:
                raise ValueError(f"resuming at clip {start_at} needs the carry frames of clip {start_at - 1}")
            carry_t = torch.as_tensor(np.asarray(carry) if not isinstance(carry, torch.Tensor) else carry)
            want = (self.spec.motion_frames, *ref.shape)
            if tuple(carry_t.shape) != want or carry_t.dtype != torch.uint8:
                raise ValueError(f"carry must be uint8 {want}, got {carry_t.dtype} {tuple(carry_t.shape)}")
            carry_t = carry_t.to(self.c.device)
            carry_hash = frames_hash(carry_t)
        else:
            carry_t, carry_hash = None, ""

        # 2. Encode every unique prompt of the remaining clips once
        todo = plan.clips[start_at:]
        self.prompt_embeddings([t for clip in todo for t in (clip.prompt, clip.negative)])

        # 3. Clip loop
        for clip in todo:
            cond = ref[None] if clip.index == 0 else carry_t
            result, carry_t = self._render_clip(clip, cond, ref, on_step, should_stop)
            result.input_hash = clip.input_hash(carry_hash)
            carry_hash = result.carry_hash
            yield result

    @torch.no_grad()
    def _render_clip(self, clip: ClipSpec, cond: torch.Tensor, ref: torch.Tensor, on_step, should_stop):
        c, dev = self.c, self.c.device
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        H, W = ref.shape[:2]
        T = (clip.frames - 1) // c.vae_scale_temporal + 1
        h, w = H // c.vae_scale_spatial, W // c.vae_scale_spatial

        # 1. Condition: CLIP on the first condition frame, VAE on [cond frames | padding] (SVI_SPEC 1.6)
        image_emb = clip_features(c, cond[0])  # (1, tokens, D_img)
        cond_lat = vae_encode(c, condition_video(cond, ref, clip.frames, clip.padding))  # (1, 16, T, h, w)
        y = torch.cat([condition_mask(T, h, w, dev, cond_lat.dtype), cond_lat], dim=1).to(c.dtype)  # (1, 20, T, h, w)
        self._sync()
        timings["encode"] = time.perf_counter() - t0

        # 2. Noise from a CPU generator seeded per clip: identical on every device (as many channels as
        #    the VAE's latents: 16 for Wan 2.1, a storyworld VAE may use fewer)
        gen = torch.Generator("cpu").manual_seed(clip.seed)
        x = torch.randn((1, cond_lat.shape[1], T, h, w), generator=gen, dtype=torch.float32).to(dev, c.dtype)

        # 3. Per-clip audio tokens / pose features, computed once and reused by every step
        audio = null_audio = pose = None
        if self.audio is not None:
            audio, null_audio = self.audio.tokens(clip)  # (1, T, tokens, C) each
        if self.pose is not None:
            pose = self.pose.features(clip, W, H)  # (1, dim, T, h/2, w/2): added in every branch

        # 4. Denoise: all guidance branches batched into one forward per step
        ctx_pos, ctx_neg = self._prompts[clip.prompt], self._prompts[clip.negative]
        three_way = audio is not None and clip.audio_cfg is not None
        if three_way:  # MultiTalk: [text + audio, neg + null audio, neg + audio] (SVI_SPEC 2.6)
            ctx, audio = torch.cat([ctx_pos, ctx_neg, ctx_neg]), torch.cat([audio, null_audio, audio])
        elif clip.cfg != 1.0:
            ctx = torch.cat([ctx_pos, ctx_neg])  # (2, L, D)
        else:
            ctx = ctx_pos
        B = ctx.shape[0]
        image_emb = image_emb.expand(B, -1, -1)
        y = y.expand(B, -1, -1, -1, -1)
        if audio is not None and audio.shape[0] != B:
            audio = audio.expand(B, -1, -1, -1)
        sigmas = self.scheduler.sigmas(clip.steps).tolist()
        prediction = c.prediction  # what the DiT outputs: its velocity, or x0 (svi.scheduler.as_velocity)
        forwards = 0
        t1 = time.perf_counter()
        with ExitStack() as hooks:
            if self.audio is not None:
                hooks.enter_context(self.audio.handle.use(audio))
            if self.pose is not None:
                hooks.enter_context(self.pose.handle.use(pose))
            for i in range(clip.steps):
                if should_stop is not None and should_stop():
                    raise RenderCancelled(f"cancelled at clip {clip.index}, step {i}")
                if self.lora_steps is not None:
                    self.lora_steps.at(sigmas[i])
                x_in = x.expand(B, -1, -1, -1, -1)
                t = torch.full((B,), sigmas[i] * self.scheduler.num_train_timesteps, device=dev)
                out = c.transformer(torch.cat([x_in, y], dim=1), t, ctx, image_emb, return_dict=False)[0]
                v = self.scheduler.as_velocity(out, x_in, sigmas[i], prediction)  # guidance is linear in either
                forwards += 1
                if three_way:
                    v = audio_guidance(v.float(), clip.cfg, clip.audio_cfg)
                elif B == 2:
                    v_cond, v_uncond = v.float().chunk(2)
                    v = v_uncond + clip.cfg * (v_cond - v_uncond)
                x = self.scheduler.step(v, x, sigmas[i], sigmas[i + 1])
                if on_step is not None:
                    on_step(clip.index, i + 1, clip.steps)
        self._sync()
        timings["denoise"] = time.perf_counter() - t1

        # 5. Decode; keep the carry on the device, hand the appended frames to the host once
        t2 = time.perf_counter()
        frames = to_uint8(vae_decode(c, x))  # (F, H, W, 3)
        carry = frames[-clip.motion_frames:].clone()
        out = frames[clip.skip_frames:].cpu().numpy()
        carry_np = carry.cpu().numpy()
        timings["decode"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        result = ClipResult(index=clip.index, frames=out, carry=carry_np, input_hash="",
                            carry_hash=frames_hash(carry_np), seed=clip.seed, timings=timings, forwards=forwards)
        return result, carry

    def _sync(self) -> None:
        if self.c.device.type == "cuda":
            torch.cuda.synchronize(self.c.device)
