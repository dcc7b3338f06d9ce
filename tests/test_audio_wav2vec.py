"""wav2vec2 features for the talk preset: local loading, 25 fps interpolation, per-clip windows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from svi.conditioning.audio import prepare_audio
from svi.conditioning.wav2vec import (
    Wav2VecTrack, clip_audio_embedding, clip_window, hidden_states, load_wav2vec, split_window, wav2vec_track,
    window_indices,
)
from svi.planning import MediaPiece, plan
from svi.presets import resolve_spec
from svi.timeline import AudioSegment, PromptSegment, Settings, Storyboard


def tiny_wav2vec(folder, stable: bool = False, layers: int = 3):
    """A randomly initialised wav2vec2 with the real CNN strides (320 samples per step), tiny widths."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=48,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                         do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group",
                         mask_time_prob=0.0)
    torch.manual_seed(0)
    Wav2Vec2Model(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_wav2vec(tiny_wav2vec(tmp_path_factory.mktemp("w2v")))


def test_layer_outputs_match_transformers_hidden_states(encoder):
    x = torch.randn(1, 16000)
    natural = encoder.model.feature_extractor(x).shape[-1]  # interpolation to the same length is the identity
    ours = hidden_states(encoder.model, x, natural)  # (N, L, C)
    ref = encoder.model(x, output_hidden_states=True).hidden_states
    assert ours.shape == (natural, 3, 32) and len(ref) == 4
    for i in range(3):
        torch.testing.assert_close(ours[:, i], ref[i + 1][0])


def test_cnn_features_are_interpolated_to_the_video_frames_before_the_transformer(encoder):
    """Reference: transformers' own forward with its CNN output resampled (MultiTalk's patch)."""
    x = torch.randn(1, 16000 * 2)
    n = 50  # 2 s at 25 fps; the CNN gives 99 steps
    cnn = encoder.model.feature_extractor

    class Resampled(torch.nn.Module):
        def forward(self, v):
            return Fn.interpolate(cnn(v), size=n, mode="linear", align_corners=True)

    ours = hidden_states(encoder.model, x, n)
    encoder.model.feature_extractor = Resampled()
    try:
        ref = encoder.model(x, output_hidden_states=True).hidden_states[1:]
    finally:
        encoder.model.feature_extractor = cnn
    torch.testing.assert_close(ours, torch.stack(ref, dim=2)[0])


def test_stable_layer_norm_models_end_with_the_final_norm(tmp_path):
    enc = load_wav2vec(tiny_wav2vec(tmp_path, stable=True))
    x = torch.randn(1, 8000)
    n = enc.model.feature_extractor(x).shape[-1]
    ours = hidden_states(enc.model, x, n)
    out = enc.model(x, output_hidden_states=True)
    torch.testing.assert_close(ours[:, 0], out.hidden_states[1][0])
    torch.testing.assert_close(ours[:, -1], out.last_hidden_state[0])  # transformers 4.x hidden_states[-1]


def test_track_has_int_duration_times_25_frames(encoder):
    audio = prepare_audio(np.random.default_rng(0).normal(0, 0.1, 16000 * 3 + 500).astype(np.float32), 16000)
    track = wav2vec_track(audio, encoder)
    assert track.features.shape == (75, 3, 32) and track.fps == 25  # int(3.03 s * 25)
    assert torch.isfinite(track.features).all()


def test_missing_folder_or_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="wav2vec2 folder not found: .*nothere"):
        load_wav2vec(tmp_path / "nothere")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_wav2vec(tmp_path / "w")


def coded(n: int, layers: int = 2, dim: int = 3) -> Wav2VecTrack:
    """Features whose every entry of row j is j: windows reveal the frame indices they gathered."""
    f = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, layers, dim).clone()
    return Wav2VecTrack(f, 25.0, "voice.wav")


def test_window_indices_match_the_official_clamp():
    idx = window_indices(0, 81, 200)
    assert idx.shape == (81, 5)
    assert idx[0].tolist() == [0, 0, 0, 1, 2] and idx[80].tolist() == [78, 79, 80, 81, 82]
    assert window_indices(190, 81, 200)[80].tolist() == [199] * 5  # past the end: the last frame repeats


def test_split_window_takes_the_8_vectors_of_each_latent():
    track = coded(400)
    window, covered = clip_window(track, (MediaPiece("voice.wav", "h", 0, 81, 100 / 25),), 81)
    assert covered.all()
    first, latter = split_window(window)
    assert first.shape == (1, 5, 2, 3) and latter.shape == (20, 8, 2, 3)
    assert first[0, :, 0, 0].tolist() == [98, 99, 100, 101, 102]
    for t in range(1, 21):  # latent t covers pixel frames 4t-3..4t: it hears frames 4t-5 .. 4t+2
        f0 = 100 + 4 * t - 3
        assert latter[t - 1, :, 0, 0].tolist() == list(range(f0 - 2, f0 + 6))


def test_talk_plan_uses_the_clean_start_index_and_no_lag():
    spec = resolve_spec("wan2.1-i2v-14b-480p", "talk")  # F = 81, m = 1, 25 fps
    board = Storyboard("start.png", prompts=(PromptSegment(0, 20, "talk"),),
                       audio=(AudioSegment(0, 20, "voice.wav"),), settings=Settings(duration=20))
    clips = plan(board, spec, asset_hash=lambda p: "h").clips
    track = coded(20 * 25)
    for k, clip in enumerate(clips[:4]):
        window, covered = clip_window(track, clip.audio, clip.frames)
        start = 80 * k  # s_k = (81 - m) k, SVI_SPEC 2.7's fix (official: 81k - m)
        expected = track.features[window_indices(start, 81, track.n_frames)]
        assert covered.all()
        torch.testing.assert_close(window, expected)


def test_uncovered_frames_are_null_audio_and_shapes_batch():
    track = coded(300)
    pieces = (MediaPiece("voice.wav", "h", 10, 30, 2.0),)
    window, covered = clip_window(track, pieces, 81)
    assert covered.sum() == 30 and not covered[:10].any() and covered[10:40].all()
    assert (window[~covered] == 0).all()
    assert window[10, :, 0, 0].tolist() == [48, 49, 50, 51, 52]  # context crosses the piece edge (continuity)
    first, latter = clip_audio_embedding(track, pieces, 81)
    assert first.shape == (1, 1, 5, 2, 3) and latter.shape == (1, 20, 8, 2, 3)
    with pytest.raises(ValueError, match="4n\\+1"):
        split_window(window[:80])
    moved = replace(pieces[0], dst_start=60)
    with pytest.raises(ValueError, match="outside"):
        clip_window(track, (moved,), 81)
