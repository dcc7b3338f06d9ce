"""Audio conditioning: decode once, normalise loudness, featurise once per asset, slice per clip.

Every clip of a plan sees the audio of exactly the frames it draws (SVI_SPEC 2.7 fixed): features
live on the *video* frame grid of the asset, where video frame j covers the samples
[round(j sr / fps), round((j + 1) sr / fps)) -- a grid that never drifts, however long the audio,
and whose frames tile the samples with no gap and no overlap. A clip's `MediaPiece`s name which
asset frames go where, so contiguous clips tile the audio and the m carried frames of clip k are
the very frames clip k-1 ended on.

Two feature paths share the grid: the librosa features here (mel bands, loudness, onset strength;
the tiny preset) and wav2vec2 hidden states (`svi.conditioning.wav2vec`, the talk preset).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np

from . import require_media_file, track_for

SAMPLE_RATE = 16_000  # wav2vec2 and MultiTalk work at 16 kHz (SVI_SPEC 1.7); one rate for both paths
TARGET_LUFS = -23.0  # EBU R128 target used by MultiTalk's loader
SILENCE_PEAK = 1e-4  # -80 dBFS: below this peak the file holds no usable sound
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block: shorter audio has no integrated loudness
MAX_ABS_LOUDNESS = 100.0  # MultiTalk skips normalisation when |LUFS| > 100 (numerically silent)
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".mov", ".mkv",
                    ".webm", ".aiff", ".aif")


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True, eq=False)
class DecodedAudio:
    samples: np.ndarray  # (channels, n) float32 in [-1, 1], native rate
    sr: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sr


def decode_audio(path: str | os.PathLike) -> DecodedAudio:
    """Decode any common audio file (or a video's audio track) at its native rate and channels.

    libsndfile (through soundfile) reads wav/flac/ogg/mp3/aiff; anything else (m4a/aac, the audio of
    mp4/mov/mkv) goes through PyAV's bundled ffmpeg, so no ffmpeg binary is needed.
    """
    path = os.fspath(path)
    require_media_file(path, AudioError, "audio")
    errors = []
    try:
        import soundfile as sf

        data, sr = sf.read(path, dtype="float32", always_2d=True)  # (n, ch)
        decoded = DecodedAudio(np.ascontiguousarray(data.T), int(sr))
    except Exception as e:  # libsndfile raises several types; PyAV gets the next try
        errors.append(f"libsndfile: {e}")
        try:
            decoded = _decode_with_av(path)
        except AudioError:
            raise
        except Exception as e2:
            errors.append(f"ffmpeg: {e2}")
            raise AudioError(f"{path}: cannot decode audio; the file is corrupt or not an audio format this "
                             f"build reads (wav, mp3, flac, ogg, m4a/aac, or a video's audio track) "
                             f"[{'; '.join(errors)}]") from None
    if decoded.samples.shape[1] == 0:
        raise AudioError(f"{path}: contains no audio samples (zero length)")
    if not np.isfinite(decoded.samples).all():
        raise AudioError(f"{path}: contains non-finite samples (NaN or infinity); the file is corrupt")
    return decoded


def _decode_with_av(path: str) -> DecodedAudio:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        # fltp keeps the layout and rate and gives float planar frames: (channels, n) per frame.
        resampler = av.AudioResampler(format="fltp")
        chunks, sr = [], stream.rate
        tb = stream.time_base
        for frame in container.decode(stream):
            # An edit list (encoder priming, e.g. AAC's 1024 samples) shows as negative timestamps.
            skip = 0
            if frame.pts is not None and tb is not None and frame.pts < 0:
                skip = min(frame.samples, round(-frame.pts * tb * frame.sample_rate))
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray()[:, skip:])
                sr = out.sample_rate
                skip = 0
        for out in resampler.resample(None):  # flush
            chunks.append(out.to_ndarray())
    if not chunks:
        raise AudioError(f"{path}: contains no audio samples (zero length)")
    return DecodedAudio(np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32), int(sr))


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds; reads the header when it can (no decode), else decodes."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: audio file not found")
    try:
        import soundfile as sf

        info = sf.info(path)
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    except Exception:  # not a libsndfile format: let the full decode decide
        pass
    return decode_audio(path).duration_s


@dataclass(frozen=True, eq=False)
class LoadedAudio:
    """Mono audio at the conditioning rate, loudness-normalised."""

    samples: np.ndarray  # (n,) float32, may exceed [-1, 1] after normalisation (features do not care)
    sr: int
    source_sr: int
    source_channels: int
    loudness_lufs: float | None  # measured before normalisation; None when too short or silent
    gain_db: float  # gain applied by normalisation (0 when skipped)
    silent: bool
    path: str | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sr


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE, *, normalize: bool = True,
               allow_silent: bool = False) -> LoadedAudio:
    """Decode, mix to mono, resample to `sr` and normalise loudness to -23 LUFS (SVI_SPEC 1.7).

    Args:
        sr (int, default 16000): output rate.
        normalize (bool, default True): loudness-normalise (skipped for silent or < 0.4 s audio).
        allow_silent (bool, default False): accept a silent file instead of raising AudioError.
    """
    decoded = decode_audio(path)
    return prepare_audio(decoded.samples, decoded.sr, sr, normalize=normalize, allow_silent=allow_silent,
                         path=os.fspath(path))


def prepare_audio(samples: np.ndarray, source_sr: int, sr: int = SAMPLE_RATE, *, normalize: bool = True,
                  allow_silent: bool = False, path: str | None = None) -> LoadedAudio:
    """The in-memory half of `load_audio`: samples (n,) or (channels, n) at `source_sr`."""
    import librosa

    name = path or "audio"
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise AudioError(f"{name}: expected samples of shape (n,) or (channels, n), got {x.shape}")
    channels = 1 if x.ndim == 1 else x.shape[0]
    if x.size == 0:
        raise AudioError(f"{name}: contains no audio samples (zero length)")
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: contains non-finite samples (NaN or infinity)")
    if source_sr <= 0:
        raise AudioError(f"{name}: invalid sample rate {source_sr}")
    mono = librosa.to_mono(x) if x.ndim == 2 else x  # channel mean, as librosa.load(mono=True)
    if source_sr != sr:
        mono = librosa.resample(mono, orig_sr=source_sr, target_sr=sr)  # soxr_hq, as librosa.load
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if len(mono) == 0:
        raise AudioError(f"{name}: too short to resample to {sr} Hz (zero samples)")
    silent = bool(np.max(np.abs(mono)) < SILENCE_PEAK)
    if silent and not allow_silent:
        raise AudioError(f"{name}: the audio is silent (peak below -80 dBFS); pass allow_silent=True "
                         f"(CLI: --allow-silent) to use it anyway")
    loudness, gain_db = None, 0.0
    if not silent and len(mono) >= LOUDNESS_BLOCK_S * sr:
        loudness = _integrated_loudness(mono, sr)
        if normalize and loudness is not None and abs(loudness) <= MAX_ABS_LOUDNESS:
            gain_db = TARGET_LUFS - loudness
            mono = (mono * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
    return LoadedAudio(mono, sr, int(source_sr), channels, loudness, gain_db, silent, path)


def _integrated_loudness(mono: np.ndarray, sr: int) -> float | None:
    import pyloudnorm

    try:
        value = float(pyloudnorm.Meter(sr).integrated_loudness(mono.astype(np.float64)))
    except ValueError:  # shorter than a gating block
        return None
    return value if math.isfinite(value) else None  # -inf: every block was gated out (near-silent)


# ---------------------------------------------------------------------------------------------- frame grid
def fps_fraction(fps: float | int | Fraction) -> Fraction:
    """fps as an exact fraction (29.97002997 -> 30000/1001), so the grid arithmetic is exact."""
    if isinstance(fps, Fraction):
        f = fps
    elif isinstance(fps, int):
        f = Fraction(fps)
    else:
        f = Fraction(float(fps)).limit_denominator(10_000)
    if f <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return f


def frame_bounds(start_frame: int, n_frames: int, sr: int, fps: float | Fraction) -> np.ndarray:
    """(n_frames + 1,) int64 sample boundaries: frame j covers [b[j - start], b[j - start + 1]).

    b(j) = round(j sr / fps), half rounded up, in exact integer arithmetic."""
    f = fps_fraction(fps)
    p, q = f.numerator, f.denominator
    j = np.arange(start_frame, start_frame + n_frames + 1, dtype=np.int64)
    return (2 * j * sr * q + p) // (2 * p)


def frames_covering(n_samples: int, sr: int, fps: float | Fraction) -> int:
    """How many grid frames start before sample `n_samples` (the last one may be partial)."""
    if n_samples <= 0:
        return 0
    f = fps_fraction(fps)
    p, q = f.numerator, f.denominator
    # smallest j with b(j) >= n  <=>  j >= (2n - 1) p / (2 sr q)
    return -((-(2 * n_samples - 1) * p) // (2 * sr * q))


# ---------------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class FeatureConfig:
    """The librosa feature layout: [mel bands | loudness | onset], each in [0, 1], 0 = silence.

    Zero meaning silence lets an uncovered frame (no audio segment) be the zero vector."""

    n_mels: int = 32  # enough to tell vowels from fricatives for a mouth; small for the tiny adapter
    n_fft: int = 1024  # 64 ms analysis window at 16 kHz, centred on each video frame
    fmin: float = 40.0
    fmax: float | None = None  # None: sr / 2
    db_floor: float = -90.0  # mel power (dB) mapped to 0 ...
    db_ceiling: float = 10.0  # ... and to 1
    rms_floor_db: float = -80.0  # frame RMS (dBFS) mapped to 0; 0 dBFS maps to 1

    @property
    def dim(self) -> int:
        return self.n_mels + 2

    @property
    def loudness_index(self) -> int:
        return self.n_mels

    @property
    def onset_index(self) -> int:
        return self.n_mels + 1


def frame_features(samples: np.ndarray, sr: int, fps: float | Fraction,
                   config: FeatureConfig = FeatureConfig(), block: int = 2048) -> np.ndarray:
    """(N, D) float32 per-video-frame features of mono `samples` on the sample-exact frame grid.

    - mel: power spectrum of an n_fft Hann window centred on the frame's sample span, mel filter
      bank (librosa), in dB mapped [db_floor, db_ceiling] -> [0, 1];
    - loudness: RMS over exactly the frame's samples, dBFS mapped [rms_floor_db, 0] -> [0, 1];
    - onset: spectral flux, mean positive rise of the mapped mel bands since the previous frame.
    """
    import librosa

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"frame_features expects mono samples (n,), got {x.shape}")
    n = frames_covering(len(x), sr, fps)
    out = np.zeros((n, config.dim), dtype=np.float32)
    if n == 0:
        return out
    bounds = frame_bounds(0, n, sr, fps)  # (n+1,)
    half = config.n_fft // 2
    tail = max(int(bounds[-1]) - len(x), 0) + half + 1
    xp = np.concatenate([np.zeros(half, np.float32), x, np.zeros(tail, np.float32)])  # silence around
    window = np.hanning(config.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    # A full-scale sine then has spectral peak power ~1 (0 dB).
    scale = 2.0 / window.sum()
    mel_fb = librosa.filters.mel(sr=sr, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin,
                                 fmax=config.fmax, norm=None).astype(np.float32)  # (n_mels, n_fft/2+1)
    offsets = np.arange(config.n_fft, dtype=np.int64)
    # RMS over the exact span: cumulative sums of squares (float64 against cancellation).
    csum = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    b0 = np.minimum(bounds[:-1], len(x))
    b1 = np.minimum(bounds[1:], len(x))
    span = (bounds[1:] - bounds[:-1]).astype(np.float64)  # a partial last frame counts its tail as silence
    rms = np.sqrt((csum[b1] - csum[b0]) / span)
    rms_db = 20.0 * np.log10(np.maximum(rms, 1e-12))
    out[:, config.loudness_index] = np.clip((rms_db - config.rms_floor_db) / -config.rms_floor_db, 0.0, 1.0)
    centres = (bounds[:-1] + bounds[1:]) // 2  # (n,)
    for s in range(0, n, block):  # blocks bound memory at block * n_fft floats
        c = centres[s:s + block]
        frames = xp[c[:, None] + offsets[None, :]] * window  # (b, n_fft): x[c - half, c + half) via the pad
        power = (np.abs(np.fft.rfft(frames, axis=1)) * scale) ** 2  # (b, n_fft/2+1)
        mel_db = 10.0 * np.log10(np.maximum(power @ mel_fb.T, 1e-20))  # (b, n_mels)
        out[s:s + block, :config.n_mels] = np.clip(
            (mel_db - config.db_floor) / (config.db_ceiling - config.db_floor), 0.0, 1.0)
    mel = out[:, :config.n_mels]
    prev = np.vstack([np.zeros((1, config.n_mels), np.float32), mel[:-1]])  # silence before the start
    out[:, config.onset_index] = np.maximum(mel - prev, 0.0).mean(axis=1)
    return out


@dataclass(frozen=True, eq=False)
class AudioTrack:
    """One audio asset, decoded and featurised once, on the video frame grid at `fps`."""

    features: np.ndarray  # (N, D) float32, row j = video frame j of the asset
    fps: float
    sr: int
    samples: np.ndarray  # (n,) float32 mono at sr, loudness-normalised
    path: str | None = None
    loudness_lufs: float | None = None
    gain_db: float = 0.0
    silent: bool = False
    config: FeatureConfig = field(default_factory=FeatureConfig)

    @property
    def n_frames(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sr

    @classmethod
    def from_audio(cls, audio: LoadedAudio, fps: float, config: FeatureConfig = FeatureConfig()) -> "AudioTrack":
        feats = frame_features(audio.samples, audio.sr, fps, config)
        return cls(feats, float(fps), audio.sr, audio.samples, audio.path, audio.loudness_lufs, audio.gain_db,
                   audio.silent, config)

    @classmethod
    def from_file(cls, path: str | os.PathLike, fps: float, config: FeatureConfig = FeatureConfig(), *,
                  allow_silent: bool = False, normalize: bool = True) -> "AudioTrack":
        audio = load_audio(path, SAMPLE_RATE, normalize=normalize, allow_silent=allow_silent)
        return cls.from_audio(audio, fps, config)

    def slice(self, pieces: Sequence, frames: int) -> np.ndarray:
        """(frames, D) features of one clip; see `slice_features`."""
        return slice_features(self, pieces, frames)


@lru_cache(maxsize=8)
def _cached_track(path: str, size: int, mtime_ns: int, fps: float, config: FeatureConfig,
                  allow_silent: bool) -> AudioTrack:
    return AudioTrack.from_file(path, fps, config, allow_silent=allow_silent)


def cached_track(path: str | os.PathLike, fps: float, config: FeatureConfig = FeatureConfig(), *,
                 allow_silent: bool = False) -> AudioTrack:
    """`AudioTrack.from_file`, memoised on (path, size, mtime, fps, config): features once per asset."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        raise AudioError(f"{path}: audio file not found") from None
    return _cached_track(path, st.st_size, st.st_mtime_ns, float(fps), config, allow_silent)


# ---------------------------------------------------------------------------------------------- slicing
def piece_source_frames(piece, fps: float) -> np.ndarray:
    """(piece.length,) int64 asset frame shown at each clip-local frame of `piece`.

    Clip-local frame d = piece.dst_start + i plays the asset at time src_start_s + i speed / fps,
    i.e. asset frame round(that * fps). At speed 1 the index is a base plus i, so clips that continue
    one another continue the asset frame by frame; the small epsilon keeps the rounding of a
    half-frame offset identical in every clip despite float error in src_start_s."""
    i = np.arange(piece.length, dtype=np.int64)
    if piece.speed == 1:
        return _round_half_up(piece.src_start_s * fps) + i
    return np.floor((piece.src_start_s + i * (piece.speed / fps)) * fps + 0.5 + 1e-6).astype(np.int64)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-6))


def _track_for(tracks, piece):
    if isinstance(tracks, Mapping):
        return track_for(tracks, piece, AudioError, "audio")
    if tracks.path is not None and piece.path != tracks.path and os.path.abspath(piece.path) != os.path.abspath(
            tracks.path):
        raise AudioError(f"clip piece asks for {piece.path} but the track given is {tracks.path}")
    return tracks


def slice_features(tracks: AudioTrack | Mapping[str, AudioTrack], pieces: Sequence, frames: int) -> np.ndarray:
    """(frames, D) float32 features of one clip from its MediaPieces (ClipSpec.audio).

    Clip-local frames covered by no piece, or by a piece past its asset's end, are zeros (silence).

    Args:
        tracks: one AudioTrack, or a mapping from piece.path to AudioTrack (several audio assets).
        pieces: the clip's MediaPiece tuple (dst_start, length, src_start_s, speed).
        frames: F, the clip's frame count.
    """
    dim = None
    out = None
    for piece in pieces:
        track = _track_for(tracks, piece)
        if out is None:
            dim = track.dim
            out = np.zeros((frames, dim), dtype=np.float32)
        elif track.dim != dim:
            raise AudioError(f"{piece.path}: feature size {track.dim} differs from the clip's other audio ({dim})")
        if piece.dst_start < 0 or piece.dst_start + piece.length > frames:
            raise ValueError(f"piece [{piece.dst_start}, {piece.dst_start + piece.length}) lies outside the "
                             f"clip's {frames} frames")
        src = piece_source_frames(piece, track.fps)  # (length,)
        ok = (src >= 0) & (src < track.n_frames)
        dst = piece.dst_start + np.arange(piece.length)
        out[dst[ok]] = track.features[src[ok]]
    if out is None:  # no audio in this clip: the caller decides the feature size
        if isinstance(tracks, AudioTrack):
            return np.zeros((frames, tracks.dim), dtype=np.float32)
        dims = {t.dim for t in tracks.values()}
        return np.zeros((frames, dims.pop() if len(dims) == 1 else FeatureConfig().dim), dtype=np.float32)
    return out


# ---------------------------------------------------------------------------------------------- mux helpers
def audio_for_frames(track_or_path: AudioTrack | LoadedAudio | str | os.PathLike, start_s: float, n_frames: int,
                     fps: float) -> tuple[np.ndarray, int]:
    """Audio under `n_frames` video frames at `fps` starting `start_s` into the source, ready to mux.

    Returns (samples (n, channels) float32 in [-1, 1], sr) with n = round(n_frames sr / fps) exactly,
    so the audio lasts as long as the video to the sample; silence pads before the start or past the
    end. A path keeps its native rate and channels, unnormalised (what the user supplied); a track
    gives its 16 kHz mono samples, clipped to [-1, 1].
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if isinstance(track_or_path, (AudioTrack, LoadedAudio)):
        data, sr = track_or_path.samples[None, :], track_or_path.sr  # (1, n)
    else:
        decoded = decode_audio(track_or_path)
        data, sr = decoded.samples, decoded.sr  # (ch, n)
    total = int(frame_bounds(0, n_frames, sr, fps)[-1])
    start = _round_half_up(start_s * sr)
    out = np.zeros((total, data.shape[0]), dtype=np.float32)
    a, b = max(start, 0), min(start + total, data.shape[1])
    if b > a:
        out[a - start:b - start] = data[:, a:b].T
    return np.clip(out, -1.0, 1.0), sr


def timeline_audio(segments: Sequence, n_frames: int, fps: float, sr: int | None = None) -> tuple[np.ndarray, int]:
    """The storyboard's audio track under a video of `n_frames`: each segment (start, end, path,
    offset; e.g. svi.timeline.AudioSegment) placed at round(start fps) on the frame grid, for
    round((end - start) fps) frames, silence elsewhere.

    Returns (samples (n, channels) float32, sr): n = round(n_frames sr / fps) exactly. The rate is
    `sr` or the first segment's native rate; channels 2 if any file is stereo or wider, else 1.
    """
    import librosa

    decoded = {}
    for seg in segments:
        if seg.path not in decoded:
            decoded[seg.path] = decode_audio(seg.path)
    if sr is None:
        sr = decoded[segments[0].path].sr if segments else SAMPLE_RATE
    channels = 2 if any(d.samples.shape[0] >= 2 for d in decoded.values()) else 1
    total = int(frame_bounds(0, n_frames, sr, fps)[-1])
    out = np.zeros((total, channels), dtype=np.float32)
    for seg in sorted(segments, key=lambda s: s.start):
        d = decoded[seg.path]
        data = d.samples if d.sr == sr else librosa.resample(d.samples, orig_sr=d.sr, target_sr=sr)
        if data.shape[0] > channels:
            data = data[:channels] if channels == 2 else data.mean(axis=0, keepdims=True)
        if data.shape[0] < channels:
            data = np.repeat(data, channels, axis=0)
        f0 = _round_half_up(seg.start * fps)
        f1 = min(_round_half_up(seg.end * fps), n_frames)
        if f1 <= f0:
            continue
        a, b = (int(v) for v in frame_bounds(f0, f1 - f0, sr, fps)[[0, -1]])
        src0 = _round_half_up(getattr(seg, "offset", 0.0) * sr)
        n = max(0, min(b - a, data.shape[1] - src0))
        out[a:a + n] = data[:, src0:src0 + n].T
    return np.clip(out, -1.0, 1.0), sr
