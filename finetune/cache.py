"""Encode training samples once and keep them on disk (and the hottest in RAM).

The official trainer re-runs umT5, the VAE (81 frames, fp32) and CLIP on every step (SVI_SPEC 6.3);
on the tiny preset the VAE alone costs several DiT steps. Here each (video, view) is drawn and
encoded once: x0 latents, the text embedding, the CLIP feature of frame 0 and y for every
condition-frame count the step may pick (built exactly as the renderer builds it: SVI_SPEC 1.6),
plus the raw audio windows / pose maps of talk and dance clips. Files are safetensors named by a
hash of everything that decides their content (encoder weights, geometry, item, view, seed), so a
changed model or setting never reads a stale entry, and writes are atomic (rank-safe).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from svi.encoders import clip_features, encode_prompts, to_model_pixels, to_uint8
from svi.models import WanComponents
from svi.render import condition_mask, condition_video

from .data import Dataset, DatasetError, Geometry, RawSample, draw_sample, stable_seed

CACHE_VERSION = 2  # 2: talk samples carry a mouth map
ENCODER_PARTS = ("vae", "text_encoder", "image_encoder", "tokenizer")


def encoder_fingerprint(components: WanComponents) -> str:
    """Hash of the encoders' configs and weight files (size, mtime): what cached encodings depend on."""
    h = hashlib.sha256()
    for part in ENCODER_PARTS:
        folder = Path(components.folder) / part
        for f in sorted(folder.glob("*")) if folder.is_dir() else []:
            st = f.stat()
            h.update(f"{part}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            if f.suffix == ".json" and st.st_size < 1_000_000:
                h.update(f.read_bytes())
    h.update(str(components.dtype).encode())
    return h.hexdigest()[:16]


class SampleEncoder:
    """Runs the frozen encoders on a RawSample: x0, text, CLIP and y per condition-frame count.

    With `roundtrip`, also "yrt{m}": y built from the clip's condition frames as a chain hands them
    to its next clip, decoded from latents and re-encoded (`roundtrip_frames`)."""

    def __init__(self, components: WanComponents, geometry: Geometry, text_len: int, roundtrip: bool = False):
        self.c = components
        self.geometry = geometry
        self.text_len = text_len
        self.roundtrip = roundtrip
        self._text: OrderedDict[str, torch.Tensor] = OrderedDict()  # caption -> (L, D), on CPU
        self.encodes = 0

    def text(self, caption: str) -> torch.Tensor:
        if caption not in self._text:
            self._text[caption] = encode_prompts(self.c, [caption], self.text_len)[0].cpu()  # (L, D)
            while len(self._text) > 1024:
                self._text.popitem(last=False)
        return self._text[caption]

    @torch.no_grad()
    def encode(self, raw: RawSample) -> dict[str, torch.Tensor]:
        c, g = self.c, self.geometry
        dev = c.device
        frames = raw.frames.to(dev)  # (F, H, W, 3) uint8
        ref = raw.ref.to(dev)  # (H, W, 3) uint8
        # One VAE batch: the clip itself, then the condition video of each m (cond frames + padding).
        videos = [to_model_pixels(frames)]  # (3, F, H, W) in [-1, 1]
        videos += [condition_video(frames[:m], ref, g.frames, g.padding) for m in g.motion_options]
        if self.roundtrip:
            back = roundtrip_frames(c.vae, frames)
            videos += [condition_video(back[:m], ref, g.frames, g.padding) for m in g.motion_options]
        mean, std = c.latents_mean_std()
        mu = c.vae.encode(torch.stack(videos).to(dev, torch.float32)).latent_dist.mode()  # (1 + n_m, 16, T, h, w)
        lat = (mu - mean) / std
        T, h, w = lat.shape[2:]
        mask = condition_mask(T, h, w, dev, lat.dtype)[0]  # (4, T, h, w): only pixel frame 0 flagged
        out = {"x0": lat[0].to(c.dtype).cpu(),  # (16, T, h, w)
               "text": self.text(raw.caption).to(c.dtype),  # (L, D)
               "clip": clip_features(c, frames[0])[0].to(c.dtype).cpu()}  # (tokens, D_img)
        for i, m in enumerate(g.motion_options):
            out[f"y{m}"] = torch.cat([mask, lat[1 + i]], dim=0).to(c.dtype).cpu()  # (20, T, h, w)
            if self.roundtrip:
                out[f"yrt{m}"] = torch.cat([mask, lat[1 + len(g.motion_options) + i]], dim=0).to(c.dtype).cpu()
        if raw.audio is not None:
            from svi.conditioning.wav2vec import split_window

            first, latter = split_window(raw.audio)  # (1, 5, 1, D), (T - 1, 8, 1, D)
            out["audio_first"], out["audio_latter"] = first.contiguous(), latter.contiguous()
        if raw.pose is not None:
            out["pose"] = raw.pose.contiguous()  # (F, H, W, 3) uint8
        if raw.mouth is not None:
            out["mouth"] = mouth_map(raw.mouth, T, h, w, temporal=c.vae_scale_temporal)  # (T, h, w) float32
        self.encodes += 1
        return out


@torch.no_grad()
def roundtrip_frames(vae, frames: torch.Tensor) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> the same frames after the trip a chain puts its carried frames through.

    A rendered clip's last frames come out of the VAE's temporal path (decoded from a latent frame
    that holds 4 pixel frames), are rounded to uint8 and encoded again as the next clip's condition.
    That error is no DiT error, so SVI's banks never hold it, and a small VAE's round trip is far
    from exact (storyworld-tiny: a moving object comes back as colour ghosts). The clip is encoded
    and decoded back to front, so its FIRST frames, the condition frames, are the ones that come
    back through the temporal path, with the clip's own (reversed) motion in their latent frame."""
    rev = to_model_pixels(frames.flip(0))[None].float()  # (1, 3, F, H, W)
    decoded = vae.decode(vae.encode(rev).latent_dist.mode()).sample[0]  # (3, F, H, W)
    return to_uint8(decoded).flip(0)


def mouth_map(track: torch.Tensor, T: int, h: int, w: int, sigma: float = 1.0, temporal: int = 4) -> torch.Tensor:
    """(F, 2) mouth centres (normalised x, y; NaN unseen) -> (T, h, w) float32 in [0, 1] on the latent grid.

    Latent frame 0 holds pixel frame 0 and latent frame t >= 1 pixel frames k(t-1)+1..kt (the causal
    VAE's time compression k = `temporal`, 4 for Wan's): each gets a Gaussian bump (`sigma` latent
    pixels) at every mouth position of its pixel frames, the max of them, so the bump covers where the
    mouth was over the whole group."""
    f = track.shape[0]
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    out = torch.zeros(T, h, w)
    for t in range(T):
        group = range(0, 1) if t == 0 else range(temporal * (t - 1) + 1, min(temporal * t + 1, f))
        for i in group:
            x, y = float(track[i, 0]), float(track[i, 1])
            if x != x or y != y:  # NaN: not seen
                continue
            bump = torch.exp(-((xs - x * w) ** 2 + (ys - y * h) ** 2) / (2 * sigma * sigma))
            out[t] = torch.maximum(out[t], bump)
    return out


class SampleStore:
    """Encoded samples by (item, view): RAM LRU, then the disk cache, else draw + encode + store.

    Args:
        dataset: the probed items.
        encoder: a SampleEncoder on this process's device.
        cache_dir: folder for the safetensors files (None: no disk cache).
        seed: run seed; with the item key and view it fixes the augmentation.
        views: views per item; 0 draws a new view every time (keyed by `draw`, never cached).
        crop: random crop (svi, talk) or whole-frame resize (dance).
        ref_from: "clip" or "video", where the padding frame comes from.
        memory_items: samples kept in RAM.
    """

    def __init__(self, dataset: Dataset, encoder: SampleEncoder, cache_dir: str | os.PathLike | None, *, seed: int,
                 views: int, crop: bool, ref_from: str, memory_items: int = 256):
        self.dataset = dataset
        self.encoder = encoder
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed, self.views, self.crop, self.ref_from = seed, views, crop, ref_from
        self.memory_items = memory_items
        self._memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._fingerprint = json.dumps({"v": CACHE_VERSION, "enc": encoder_fingerprint(encoder.c),
                                        "geometry": asdict(encoder.geometry), "text_len": encoder.text_len,
                                        "seed": seed, "crop": crop, "ref_from": ref_from,
                                        **({"roundtrip": True} if encoder.roundtrip else {})}, sort_keys=True)
        self.stats = {"memory_hits": 0, "disk_hits": 0, "encoded": 0}
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def key(self, index: int, view: int) -> str:
        item = self.dataset.items[index]
        src = ""
        if item.video is not None:
            st = Path(item.video).stat()
            src = f"{item.video}:{st.st_size}:{st.st_mtime_ns}"
            for extra in (item.audio, item.pose):
                if extra is not None:
                    est = Path(extra).stat()
                    src += f"|{extra}:{est.st_size}:{est.st_mtime_ns}"
        payload = json.dumps([self._fingerprint, item.key, item.caption, item.seed, item.conditions, src, view])
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def get(self, index: int, view: int) -> dict[str, Any]:
        """The encoded sample: tensors plus "caption" and "meta" entries."""
        cacheable = self.views > 0
        key = self.key(index, view)
        if cacheable and key in self._memory:
            self._memory.move_to_end(key)
            self.stats["memory_hits"] += 1
            return self._memory[key]
        path = self.cache_dir / key[:2] / f"{key}.safetensors" if (self.cache_dir and cacheable) else None
        sample = _read(path) if path is not None and path.is_file() else None
        if sample is not None:
            self.stats["disk_hits"] += 1
        else:
            item = self.dataset.items[index]
            raw = draw_sample(item, self.encoder.geometry, stable_seed(self.seed, item.key, view), crop=self.crop,
                              ref_from=self.ref_from)
            sample = self.encoder.encode(raw)
            sample["caption"], sample["meta"] = raw.caption, {**raw.meta, "key": item.key, "view": view}
            self.stats["encoded"] += 1
            if path is not None:
                _write(path, sample)
        if cacheable and self.memory_items > 0:
            self._memory[key] = sample
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)
        return sample


def _read(path: Path) -> dict[str, Any] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            out: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()}
        out["caption"], out["meta"] = meta.get("caption", ""), json.loads(meta.get("meta", "{}"))
        return out
    except (OSError, SafetensorError, ValueError):
        return None  # a torn or foreign file: re-encode and overwrite it


def _write(path: Path, sample: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in sample.items() if isinstance(v, torch.Tensor)}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"caption": sample["caption"], "meta": json.dumps(sample["meta"])})
    os.replace(tmp, path)


__all__ = ["SampleEncoder", "SampleStore", "encoder_fingerprint", "mouth_map", "roundtrip_frames", "DatasetError"]
