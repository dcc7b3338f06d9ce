"""Fine-tuning data: the SVI / talk / dance layouts, bad files, the SVI_SPEC 3.2 augmentation, the cache."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.data import (
    DataWarning, DatasetError, Geometry, build_dataset, crop_box, draw_sample, resize_frames, stable_seed,
    storyworld_available,
)
from svi.video import write_video

GEOM = Geometry(frames=9, height=48, width=64, motion_frames=1, padding="ref")


# ---------------------------------------------------------------------------------------------- helpers
# (shared with test_finetune_train.py)
def frame_coded_video(n: int, width: int = 80, height: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3): frame t has green level 12 t (readable after compression) and a moving square."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        frames[t] = (base[0], min(255, 12 * t), base[2])
        y, x = 4 + t % (height - 20), 4 + (2 * t) % (width - 20)
        frames[t, y:y + 14, x:x + 14] = (255, 255, 255)
    return frames


def write_clip(path: Path, n: int, width: int = 80, height: int = 64, seed: int = 0, fps: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frame_coded_video(n, width, height, seed), fps)


def write_svi_folder(root: Path, n_videos: int = 3, frames: int = 14, captions: dict[str, str] | None = None,
                     category: str = "cat") -> Path:
    folder = root / category
    for i in range(n_videos):
        write_clip(folder / f"v{i}.mp4", frames, seed=i)
    rows = captions if captions is not None else {f"v{i}.mp4": f"a red ball moves {i}" for i in range(n_videos)}
    lines = ["Video Title,Video Description,Filename"] + [f"t,{text},{name}" for name, text in rows.items()]
    (folder / f"{category}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_keypoint_json(path: Path, n: int, fps: int = 8, width: int = 80, height: int = 64) -> Path:
    """A keypoint file as the storyworld generator writes it: (N, 33, 3) normalised x, y, visibility."""
    t = np.linspace(0, 1, n)[:, None]
    kp = np.zeros((n, 33, 3), np.float32)
    kp[:, :, 0] = 0.3 + 0.4 * np.linspace(0, 1, 33)[None, :] * (0.5 + 0.5 * t)
    kp[:, :, 1] = 0.2 + 0.6 * np.linspace(0, 1, 33)[None, :]
    kp[:, :, 2] = 1.0
    doc = {"format": "svi-pose", "version": 1, "layout": "mediapipe-pose-33", "fps": fps, "width": width,
           "height": height, "keypoints": kp.round(5).tolist()}
    path.write_text(json.dumps(doc))
    return path


def write_wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    import soundfile

    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    soundfile.write(path, wave.astype(np.float32), sr)
    return path


# ---------------------------------------------------------------------------------------------- layouts
def test_svi_layout_reads_csv_captions_with_the_official_fallback(tmp_path):
    write_svi_folder(tmp_path, 3, captions={"v0.mp4": "a red ball moves", "v2.mp4": "a blue cube spins"})
    ds = build_dataset("svi", tmp_path, 9)
    caps = {item.key: item.caption for item in ds.items}
    assert caps == {"cat/v0.mp4": "a red ball moves", "cat/v1.mp4": "A video from cat category",
                    "cat/v2.mp4": "a blue cube spins"}
    assert all(item.frames == 14 and item.size == (80, 64) and item.fps == 8 for item in ds.items)
    # a flat root (videos directly in it, csv named after it) reads the same way
    flat = tmp_path / "flat"
    write_clip(flat / "a.mp4", 10)
    (flat / "flat.csv").write_text("Filename,Video Description\na.mp4,a green star\n")
    assert [i.caption for i in build_dataset("svi", flat, 9).items] == ["a green star"]
    # a fixed caption overrides the csv
    assert {i.caption for i in build_dataset("svi", tmp_path, 9, caption="x").items} == {"x"}


def test_corrupt_and_too_short_videos_are_skipped_with_a_warning(tmp_path):
    write_svi_folder(tmp_path, 2)
    (tmp_path / "cat" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    write_clip(tmp_path / "cat" / "short.mp4", 5)
    with pytest.warns(DataWarning) as record:
        ds = build_dataset("svi", tmp_path, 9)
    assert sorted(i.key for i in ds.items) == ["cat/v0.mp4", "cat/v1.mp4"]
    messages = " ".join(str(w.message) for w in record)
    assert "broken.mp4" in messages and "unreadable video" in messages
    assert "short.mp4" in messages and "too short: 5 frames" in messages and "needs 9" in messages


def test_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        build_dataset("svi", tmp_path / "missing", 9)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no usable training videos.*no .mp4"):
        build_dataset("svi", tmp_path / "empty", 9)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_text("junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DatasetError, match=r"no usable training videos .*x\.mp4: unreadable"):
            build_dataset("svi", tmp_path / "bad", 9)
    (tmp_path / "csv").mkdir()
    write_clip(tmp_path / "csv" / "a.mp4", 10)
    (tmp_path / "csv" / "csv.csv").write_text("name,text\na.mp4,hello\n")
    with pytest.raises(DatasetError, match="Filename.*Video Description"):
        build_dataset("svi", tmp_path / "csv", 9)


def test_talk_layout_pairs_videos_with_wavs_and_cuts_official_audio_windows(tmp_path):
    write_clip(tmp_path / "videos" / "a.mp4", 14)
    write_clip(tmp_path / "videos" / "b.mp4", 14)
    write_clip(tmp_path / "videos" / "lonely.mp4", 14)
    (tmp_path / "audios").mkdir()
    write_wav(tmp_path / "audios" / "a.wav", 14 / 8)
    write_wav(tmp_path / "videos" / "b.wav", 14 / 8)
    with pytest.warns(DataWarning, match="lonely.mp4: no audio"):
        ds = build_dataset("talk", tmp_path, 9)
    assert [(i.key, i.audio.name, i.caption) for i in ds.items] == [
        ("videos/a.mp4", "a.wav", "the person is speaking"), ("videos/b.mp4", "b.wav", "the person is speaking")]
    s = draw_sample(ds.items[0], GEOM, seed=1)
    assert s.audio.shape == (9, 5, 1, 34) and s.pose is None
    start = s.meta["start"]
    from finetune.data import audio_features

    feats = torch.from_numpy(audio_features(ds.items[0], None))  # (N, 34) on the video frame grid
    assert feats.shape[0] == 14
    for j in (0, 4, 8):  # window row j holds features start + j - 2 .. start + j + 2, clamped
        idx = [min(max(start + j + o, 0), 13) for o in range(-2, 3)]
        assert torch.equal(s.audio[j, :, 0], feats[idx])


def test_dance_layout_reads_both_pose_formats_and_draws_maps_without_crop(tmp_path):
    from svi.conditioning.pose import PoseTrack

    write_clip(tmp_path / "a" / "video.mp4", 14)
    write_keypoint_json(tmp_path / "a" / "pose.json", 14)
    write_clip(tmp_path / "b.mp4", 14)
    kp = np.random.default_rng(0).uniform(0.2, 0.8, size=(14, 33, 2)).astype(np.float32)
    ones = np.ones((14, 33), np.float32)
    PoseTrack(kp, np.zeros_like(ones), ones, ones, np.ones(14, bool), 8.0, 80, 64).save(tmp_path / "b.pose.json")
    write_clip(tmp_path / "c.mp4", 14)
    with pytest.warns(DataWarning, match="c.mp4: no pose file"):
        ds = build_dataset("dance", tmp_path, 9)
    assert [i.key for i in ds.items] == ["a/video.mp4", "b.mp4"]
    for item in ds.items:
        s = draw_sample(item, GEOM, seed=3, crop=False)
        assert s.pose.shape == (9, 48, 64, 3) and s.pose.dtype == torch.uint8
        assert all(int(p.max()) > 0 for p in s.pose)  # a skeleton is drawn on every frame
        assert s.meta["box"] is None and s.caption == "the person is dancing"


# ---------------------------------------------------------------------------------------------- augmentation
@settings(max_examples=200, deadline=None)
@given(h0=st.integers(16, 1200), w0=st.integers(16, 1200), size=st.sampled_from([(480, 832), (48, 64), (832, 480),
                                                                                  (96, 128), (64, 64)]),
       seed=st.integers(0, 2**31))
def test_crop_box_follows_svi_rules(h0, w0, size, seed):
    H, W = size
    a = H / W
    top, left, ch, cw = crop_box(h0, w0, H, W, torch.Generator().manual_seed(seed))
    assert 0 <= top and top + ch <= h0 and 0 <= left and left + cw <= w0 and ch >= 1 and cw >= 1
    if w0 * a <= h0:  # width-limited: crop_w drawn near the full width, height from the aspect
        assert w0 - w0 // 14 <= cw <= w0 and ch == max(1, min(math.floor(cw * a), h0))
    else:
        assert h0 - h0 // 14 <= ch <= h0 and cw == max(1, min(math.floor(ch / a), w0))


def test_draw_sample_window_padding_frame_and_determinism(tmp_path):
    write_clip(tmp_path / "v.mp4", 20)
    (item,) = build_dataset("svi", tmp_path, 9).items
    starts, refs = set(), set()
    for seed in range(12):
        s = draw_sample(item, GEOM, seed)
        assert s.frames.shape == (9, 48, 64, 3) and s.ref.shape == (48, 64, 3) and s.frames.dtype == torch.uint8
        start, ref = s.meta["start"], s.meta["ref_index"]
        assert 0 <= start <= 20 - 9 and start <= ref < start + 9  # padding frame from the clip itself
        green = [float(f[..., 1].float().median()) for f in s.frames]  # frame t has green 12 t
        assert all(abs(g - 12 * (start + j)) <= 6 for j, g in enumerate(green)), (start, green)
        assert abs(float(s.ref[..., 1].float().median()) - 12 * ref) <= 6
        starts.add(start)
        refs.add(ref - start)
    assert len(starts) > 3 and len(refs) > 3  # the window and the padding frame really vary
    a, b = draw_sample(item, GEOM, 5), draw_sample(item, GEOM, 5)
    assert torch.equal(a.frames, b.frames) and a.meta == b.meta
    whole = draw_sample(item, GEOM, 5, ref_from="video")
    assert 0 <= whole.meta["ref_index"] < 20


def test_resize_frames_crops_then_resizes_and_rounds():
    x = np.zeros((2, 10, 20, 3), np.uint8)
    x[:, 2:6, 4:12] = 200
    out = resize_frames(x, 4, 8, box=(2, 4, 4, 8))
    assert out.shape == (2, 4, 8, 3) and out.dtype == torch.uint8 and int(out.min()) == 200
    assert torch.equal(resize_frames(x, 10, 20), torch.from_numpy(x))
    assert stable_seed(1, "a", 2) == stable_seed(1, "a", 2) != stable_seed(1, "a", 3)


@pytest.mark.skipif(not storyworld_available(), reason="storyworld package not present")
def test_storyworld_builtin_dataset_draws_captioned_clips():
    ds = build_dataset("storyworld", None, 17, storyworld={"videos": 3, "frames": 21, "seed": 4,
                                                          "conditions": ("audio", "pose")})
    assert len(ds) == 3 and len({i.seed for i in ds.items}) == 3
    s = draw_sample(ds.items[1], Geometry(17, 96, 128, 1, "ref"), seed=0)
    assert s.frames.shape == (17, 96, 128, 3) and len(s.caption.split()) >= 3
    assert s.audio.shape[:2] == (17, 5) and s.pose.shape == (17, 96, 128, 3)
    with pytest.raises(DatasetError, match="storyworld_frames"):
        build_dataset("storyworld", None, 17, storyworld={"videos": 1, "frames": 9})


@pytest.mark.skipif(not storyworld_available(), reason="storyworld package not present")
def test_storyworld_talk_samples_know_where_the_mouth_is_in_the_crop():
    from finetune.cache import mouth_map
    from storyworld.analyze import as_float
    from storyworld.pose import find_head

    ds = build_dataset("storyworld", None, 17, storyworld={"videos": 6, "frames": 33, "conditions": ("audio",)})
    geom = Geometry(17, 96, 128, 1, "ref")
    seen = 0
    for item in ds.items:
        s = draw_sample(item, geom, seed=5)
        assert s.mouth.shape == (17, 2)
        if not torch.isfinite(s.mouth).all():  # no person in this scene: no mouth anywhere
            assert torch.isnan(s.mouth).all()
            continue
        seen += 1
        for f in (0, 8, 16):  # after the random crop, the track lies in the lower half of the drawn head
            x, y = (s.mouth[f] * torch.tensor([128, 96])).tolist()
            cx, cy, r = find_head(as_float(s.frames[f].numpy()))
            assert (x - cx) ** 2 + (y - cy) ** 2 < r * r and cy < y, (item.key, f, (x, y), (cx, cy, r))
        m = mouth_map(s.mouth, 5, 12, 16)  # latent grid of 8x: frame 0's bump peaks on the mouth's latent pixel
        y, x = divmod(int(m[0].argmax()), 16)
        assert (x, y) == (int(s.mouth[0, 0] * 16), int(s.mouth[0, 1] * 12)) and float(m.amax(dim=(1, 2)).min()) > 0.6
    assert seen >= 2


def test_mouth_map_groups_pixel_frames_like_the_causal_vae():
    from finetune.cache import mouth_map

    track = torch.full((9, 2), float("nan"))
    track[0] = torch.tensor([0.5 / 16, 0.5 / 12])  # latent pixel (0, 0) at frame 0
    track[4] = torch.tensor([10.5 / 16, 5.5 / 12])  # pixel frame 4 belongs to latent frame 1 (frames 1-4)
    m = mouth_map(track, 3, 12, 16)
    assert m.shape == (3, 12, 16) and float(m[0, 0, 0]) == pytest.approx(1.0) and float(m[1, 5, 10]) == pytest.approx(1.0)
    assert float(m[0, 5, 10]) < 1e-6 and float(m[1, 0, 0]) < 1e-6
    assert float(m[2].max()) == 0.0  # frames 5-8 saw no mouth


# ---------------------------------------------------------------------------------------------- cache
@pytest.fixture(scope="module")
def tiny_components():
    from svi.models import load_components, use_onednn_conv3d
    from svi.presets import resolve_spec

    c = load_components(resolve_spec("storyworld-tiny", "film"), "cpu")
    use_onednn_conv3d(c.vae)
    return c


@pytest.mark.skipif(not storyworld_available(), reason="storyworld package not present")
def test_roundtrip_frames_come_back_lossy_and_in_their_own_order(tiny_components):
    """What a chain hands its next clip: the frames through the VAE and back, rounded to uint8; the
    clip runs back to front through it, so each frame still matches itself and not the other end."""
    import storyworld as sw
    from finetune.cache import roundtrip_frames
    from svi.encoders import to_model_pixels, to_uint8

    clip = sw.render(["a blue circle moves right on a snow field at dusk while a person dances"], 17, 0,
                     width=128, height=96, fps=8).frames
    v = torch.from_numpy(clip)
    back = roundtrip_frames(tiny_components.vae, v)
    assert back.shape == v.shape and back.dtype == torch.uint8
    err = lambda a, b: (a.float() - b.float()).abs().mean().item()  # noqa: E731
    assert all(0.5 < err(back[i], v[i]) < 30 for i in range(17))  # lossy, but the same picture
    assert err(back[0], v[0]) < err(back[0], v[16]) and err(back[16], v[16]) < err(back[16], v[0])
    # frame 0 took the temporal path: not what the first-frame path (frame 0 on its own) gives back
    with torch.no_grad():
        alone = tiny_components.vae.encode(to_model_pixels(v[:1])[None]).latent_dist.mode()
        alone = to_uint8(tiny_components.vae.decode(alone).sample[0])
    assert err(back[0], alone[0]) > 1.0


def test_cache_with_roundtrip_adds_y_from_the_reencoded_frames(tmp_path, tiny_components):
    from finetune.cache import SampleEncoder, SampleStore, roundtrip_frames
    from svi.encoders import vae_encode
    from svi.render import condition_mask, condition_video

    write_svi_folder(tmp_path / "data", 1)
    ds = build_dataset("svi", tmp_path / "data", 9)
    geom = Geometry(9, 48, 64, motion_frames=5, padding="zeros")
    plain = SampleStore(ds, SampleEncoder(tiny_components, geom, 32), tmp_path / "cache", seed=0, views=1, crop=True,
                        ref_from="clip")
    trip = SampleStore(ds, SampleEncoder(tiny_components, geom, 32, roundtrip=True), tmp_path / "cache", seed=0,
                       views=1, crop=True, ref_from="clip")
    assert plain.key(0, 0) != trip.key(0, 0)  # entries with and without the round trip never mix
    p, s = plain.get(0, 0), trip.get(0, 0)
    assert "yrt1" not in p and all(torch.equal(p[k], s[k]) for k in ("x0", "y1", "y5"))
    raw = draw_sample(ds.items[0], geom, stable_seed(0, ds.items[0].key, 0))
    back = roundtrip_frames(tiny_components.vae, raw.frames)
    hw = s["x0"].shape[2:]
    for m in (1, 5):
        lat = vae_encode(tiny_components, condition_video(back[:m], raw.ref, 9, "zeros"))[0]
        assert torch.allclose(s[f"yrt{m}"], torch.cat([condition_mask(3, *hw, "cpu", lat.dtype)[0], lat]), atol=1e-4)
        assert not torch.allclose(s[f"yrt{m}"], s[f"y{m}"], atol=1e-3)


def test_cache_encodes_once_and_builds_y_exactly_like_the_renderer(tmp_path, tiny_components):
    from finetune.cache import SampleEncoder, SampleStore
    from svi.encoders import vae_encode
    from svi.render import condition_mask, condition_video

    write_svi_folder(tmp_path / "data", 2)
    ds = build_dataset("svi", tmp_path / "data", 9)
    geom = Geometry(9, 48, 64, motion_frames=5, padding="zeros")  # film: y for m = 1 and m = 5
    enc = SampleEncoder(tiny_components, geom, text_len=32)
    store = SampleStore(ds, enc, tmp_path / "cache", seed=0, views=2, crop=True, ref_from="clip")
    s = store.get(1, 0)
    assert store.stats == {"memory_hits": 0, "disk_hits": 0, "encoded": 1}
    hw = (48 // tiny_components.vae_scale_spatial, 64 // tiny_components.vae_scale_spatial)  # 8x or 4x VAE
    assert s["x0"].shape == (16, 3, *hw) and s["y1"].shape == s["y5"].shape == (20, 3, *hw)
    assert s["text"].shape == (32, 64) and s["caption"] == "a red ball moves 1"
    assert store.get(1, 0) is s and store.stats["memory_hits"] == 1
    assert store.get(1, 1)["meta"] != s["meta"]  # another view: another crop / window
    # a fresh store (another process, a later run) reads the disk cache: no encode
    again = SampleStore(ds, SampleEncoder(tiny_components, geom, 32), tmp_path / "cache", seed=0, views=2, crop=True,
                        ref_from="clip")
    t = again.get(1, 0)
    assert again.stats == {"memory_hits": 0, "disk_hits": 1, "encoded": 0} and again.encoder.encodes == 0
    assert all(torch.equal(s[k], t[k]) for k in ("x0", "y1", "y5", "text", "clip")) and t["meta"] == s["meta"]
    # y = [mask ; VAE(cond frames + padding)] exactly as svi.render builds it at inference
    raw = draw_sample(ds.items[1], geom, stable_seed(0, ds.items[1].key, 0))
    for m in (1, 5):
        lat = vae_encode(tiny_components, condition_video(raw.frames[:m], raw.ref, 9, "zeros"))[0]
        want = torch.cat([condition_mask(3, *hw, "cpu", lat.dtype)[0], lat])
        assert torch.allclose(s[f"y{m}"], want, atol=1e-4)
    assert not torch.allclose(s["y1"], s["y5"])
    # another seed is another augmentation, hence another cache entry
    other = SampleStore(ds, enc, tmp_path / "cache", seed=1, views=2, crop=True, ref_from="clip")
    other.get(1, 0)
    assert other.stats["encoded"] == 1
