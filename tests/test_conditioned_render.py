"""Talk and dance end to end: the tiny preset's adapters, the release layout at toy scale, audio mux."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from svi import plan, resolve_spec
from svi.conditioning.pose import N_LANDMARKS, PoseTrack
from svi.engine import build_renderer
from svi.timeline import AudioSegment, PoseSegment, PromptSegment, Storyboard, StoryboardError
from svi.video import video_info

from .conftest import BUNDLED_DIT, BUNDLED_WIDTH, ROOT

STEPS = 2
DIT_WIDTH, DIT_FFN = BUNDLED_WIDTH, BUNDLED_DIT["ffn_dim"]


def speech_like(path, seconds: float, sr: int = 16000, seed: int = 0, freq: float = 220.0):
    """Syllable-like bursts: a tone gated on and off, so loudness varies frame to frame."""
    t = np.arange(int(seconds * sr)) / sr
    gate = (np.sin(2 * np.pi * 3.0 * t + seed) > 0).astype(np.float32)
    sf.write(path, 0.4 * gate * np.sin(2 * np.pi * freq * t), sr)
    return str(path)


def waving_pose(path, seconds: float = 6.0, fps: float = 25.0, phase: float = 0.0):
    """A standing figure whose arms swing: a valid svi-pose track without running the detector."""
    n = int(seconds * fps)
    kp = np.full((n, N_LANDMARKS, 2), 0.5, np.float32)
    body = {0: (0.5, 0.2), 11: (0.42, 0.35), 12: (0.58, 0.35), 23: (0.45, 0.6), 24: (0.55, 0.6),
            25: (0.45, 0.75), 26: (0.55, 0.75), 27: (0.45, 0.9), 28: (0.55, 0.9)}
    for j, (x, y) in body.items():
        kp[:, j] = (x, y)
    swing = np.sin(np.arange(n) / fps * 2 * math.pi + phase)[:, None] * 0.15
    kp[:, 13] = np.c_[0.32 + 0 * swing, 0.35 + swing]
    kp[:, 15] = np.c_[0.25 + 0 * swing, 0.30 + 2 * swing]
    kp[:, 14] = np.c_[0.68 + 0 * swing, 0.35 - swing]
    kp[:, 16] = np.c_[0.75 + 0 * swing, 0.30 - 2 * swing]
    ones = np.ones((n, N_LANDMARKS), np.float32)
    PoseTrack(kp, 0 * ones, ones, ones, np.ones(n, bool), fps, 128, 96).save(path)
    return str(path)


@pytest.fixture(scope="module")
def talk_renderer():
    return build_renderer(resolve_spec("storyworld-tiny", "talk"), "cpu")[0]


def talk_board(image, audio_path, seconds=4.0):
    return Storyboard(image, (PromptSegment(0, seconds, "a figure talks"),),
                      audio=(AudioSegment(0, seconds, audio_path),)).with_settings(steps=STEPS)


def test_talk_audio_changes_the_clip_and_batches_three_branches(talk_renderer, start_image, tmp_path):
    calls = []
    hook = talk_renderer.c.transformer.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        a = list(talk_renderer.stream(plan(talk_board(start_image, speech_like(tmp_path / "a.wav", 4)),
                                           talk_renderer.spec)))
    finally:
        hook.remove()
    assert calls == [3] * (STEPS * len(a))  # cond / null audio / drop-text in one forward per step
    b = list(talk_renderer.stream(plan(talk_board(start_image, speech_like(tmp_path / "b.wav", 4, seed=2,
                                                                           freq=600.0)), talk_renderer.spec)))
    assert not np.array_equal(a[0].frames, b[0].frames)  # the audio reaches the pixels
    assert a[0].input_hash != b[0].input_hash  # and the clip identity


def test_talk_needs_audio(talk_renderer, start_image):
    sb = Storyboard(start_image, (PromptSegment(0, 2, "a figure talks"),)).with_settings(steps=STEPS)
    with pytest.raises(StoryboardError, match="audio"):
        list(talk_renderer.stream(plan(sb, talk_renderer.spec)))


def test_dance_pose_changes_the_clip(start_image, tmp_path):
    renderer, _ = build_renderer(resolve_spec("storyworld-tiny", "dance"), "cpu")

    def frames(phase):
        pose = waving_pose(tmp_path / f"p{phase}.pose.json", phase=phase)
        sb = Storyboard(start_image, (PromptSegment(0, 2, "a figure dances"),),
                        poses=(PoseSegment(0, 2, pose),)).with_settings(steps=STEPS)
        return next(renderer.stream(plan(sb, renderer.spec))).frames

    assert not np.array_equal(frames(0.0), frames(math.pi))


def test_cli_render_with_audio_muxes_it_in_sync(start_image, tmp_path):
    shutil.copy(start_image, tmp_path / "start.png")
    speech_like(tmp_path / "voice.wav", 5.3)
    sb = {"start_image": "start.png", "settings": {"variant": "talk", "steps": STEPS},
          "prompts": [{"start": 0, "end": 5.3, "text": "a figure talks"}],
          "audio": [{"start": 0, "end": 5.3, "path": "voice.wav"}]}
    (tmp_path / "sb.json").write_text(json.dumps(sb))
    out = tmp_path / "talk.mp4"
    r = subprocess.run([sys.executable, "app.py", "render", str(tmp_path / "sb.json"), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    info = video_info(out)
    assert info["frames"] == 17 + 16 + 16  # 5.3 s at 8 fps = 42 frames -> 3 clips
    assert abs(info["audio_duration"] - info["frames"] / info["fps"]) <= 1 / info["fps"]


def test_release_layout_talk_and_dance_at_toy_scale(tmp_path, start_image, monkeypatch):
    """The wan preset's talk/dance wiring with fabricated files in the real key layouts: MultiTalk
    weights (`audio_proj.*`, `blocks.N.norm_x`, `blocks.N.audio_cross_attn.*`) beside the DiT, a
    local wav2vec2 folder, and `dwpose_embedding.*` inside the dance LoRA."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from svi.conditioning.audio_adapter import AudioAdapter, AudioAdapterConfig
    from svi.conditioning.pose_encoder import PoseEncoder

    weights = tmp_path / "weights"
    folder = weights / "Wan2.1-I2V-14B-480P-Diffusers"
    # the tiny folder's own svi-*.safetensors would be found first; this test fabricates the release's
    shutil.copytree(ROOT / "assets/models/storyworld-tiny", folder, ignore=shutil.ignore_patterns("svi-*.safetensors"))
    w2v = Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    Wav2Vec2Model(w2v).save_pretrained(weights / "chinese-wav2vec2-base")
    cfg = AudioAdapterConfig(dim=DIT_WIDTH, num_heads=4, num_layers=4, audio_layers=3, audio_dim=32,
                             intermediate_dim=48, context_tokens=4, token_dim=24)
    save_file({f"model.diffusion_model.{k}": v for k, v in AudioAdapter(cfg).state_dict().items()},
              folder / "multitalk.safetensors")
    lora_dir = weights / "Stable-Video-Infinity" / "version-1.0"
    lora_dir.mkdir(parents=True)
    save_file({"pipe.dit.blocks.0.self_attn.q.lora_A.default.weight": torch.randn(4, DIT_WIDTH) * 0.1,
               "pipe.dit.blocks.0.self_attn.q.lora_B.default.weight": torch.randn(DIT_WIDTH, 4) * 0.1,
               **{f"dwpose_embedding.{k}": v for k, v in
                  PoseEncoder(dim=DIT_WIDTH).dwpose_embedding.state_dict().items()}},
              lora_dir / "svi-dance.safetensors")
    save_file({"pipe.dit.blocks.0.ffn.0.lora_A.default.weight": torch.randn(4, DIT_WIDTH) * 0.1,
               "pipe.dit.blocks.0.ffn.0.lora_B.default.weight": torch.randn(DIT_FFN, 4) * 0.1},
              lora_dir / "svi-talk.safetensors")
    monkeypatch.setenv("SVI_WEIGHTS_DIR", str(weights))

    talk_spec = resolve_spec("wan2.1-i2v-14b-480p", "talk", steps=STEPS)
    talk, _ = build_renderer(talk_spec, "cpu")
    # the adapter's shape is inferred from the files (nothing told the engine token_dim=24)
    assert talk.audio.wav2vec is not None and talk.audio.adapter.cfg == cfg
    voice = speech_like(tmp_path / "v.wav", 4)
    sb = Storyboard(start_image, (PromptSegment(0, 3, "x"),), audio=(AudioSegment(0, 3, voice),))
    (clip,) = list(talk.stream(plan(sb, talk_spec, max_clips=1)))
    assert clip.frames.shape == (81, 96, 128, 3)  # the wan clip length at the image's size (no upscaling)

    dance_spec = resolve_spec("wan2.1-i2v-14b-480p", "dance", steps=STEPS)
    dance, files = build_renderer(dance_spec, "cpu")
    assert any(k.startswith("dwpose_embedding.") for k in files[0].extras)
    pose = waving_pose(tmp_path / "d.pose.json")
    sb = Storyboard(start_image, (PromptSegment(0, 3, "x"),), poses=(PoseSegment(0, 3, pose),))
    (clip,) = list(dance.stream(plan(sb, dance_spec, max_clips=1)))
    assert clip.frames.shape == (81, 96, 128, 3)


def test_finetuned_talk_lora_carries_its_audio_adapter(tmp_path):
    """A talk LoRA from our trainer holds adapter weights beside the LoRA pairs; they replace the
    bundled adapter (and a dance LoRA's dwpose_embedding replaces the bundled pose encoder)."""
    from safetensors.torch import save_file

    from svi.conditioning.runtime import load_audio_adapter

    base = load_audio_adapter(ROOT / "assets/models/storyworld-tiny/audio_adapter")
    tuned = {f"diffusion_model.{k}": v + 0.5 for k, v in base.state_dict().items()}
    tuned["diffusion_model.blocks.0.self_attn.q.lora_A.weight"] = torch.randn(4, DIT_WIDTH) * 0.1
    tuned["diffusion_model.blocks.0.self_attn.q.lora_B.weight"] = torch.randn(DIT_WIDTH, 4) * 0.1
    save_file(tuned, tmp_path / "talk-lora.safetensors")
    spec = resolve_spec("storyworld-tiny", "talk", extra_loras=((str(tmp_path / "talk-lora.safetensors"), 1.0),))
    renderer, _ = build_renderer(spec, "cpu")
    got = renderer.audio.adapter.state_dict()
    for k, v in base.state_dict().items():
        assert torch.allclose(got[k], v + 0.5)
