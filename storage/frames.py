"""Frames of a take (uint8 video, (n, H, W, 3)) as .npz bytes, and back.

Lossless, because carry frames seed the next clip: a resumed render must condition on exactly the
pixels the crashed run would have used, or every later clip's input hash would change.
Deterministic (fixed zip timestamps, fixed member name), so the same frames always give the same
bytes and therefore the same asset: duplicates and re-imports dedup in the asset store.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from .errors import AssetError

_MEMBER = "frames.npy"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp; any fixed value works


def encode_frames(frames: np.ndarray, *, compress: bool = True) -> bytes:
    """uint8 frames (n, H, W, 3) as a deterministic .npz."""
    check_frames(frames, "frames")
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    # compresslevel 1: video frames barely compress better at 9, and 9 is several times slower.
    with zipfile.ZipFile(buf, "w", compression=method, compresslevel=1 if compress else None) as z:
        info = zipfile.ZipInfo(_MEMBER, date_time=_EPOCH)
        info.compress_type = method
        info.external_attr = 0o644 << 16
        with z.open(info, "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(frames), allow_pickle=False)
    return buf.getvalue()


def decode_frames(data: bytes | str) -> np.ndarray:
    """Frames from .npz bytes or a path; refuses pickles and anything not uint8 (n, H, W, 3)."""
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with np.load(src, allow_pickle=False) as npz:
            if _MEMBER[:-4] not in npz.files:
                raise AssetError(f"frames file has no {_MEMBER!r} member (has {npz.files})")
            frames = npz[_MEMBER[:-4]]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, AssetError):
            raise
        raise AssetError(f"not a readable frames file: {e}") from None
    check_frames(frames, "stored frames")
    return frames


def check_frames(frames: object, what: str) -> None:
    if not isinstance(frames, np.ndarray):
        raise AssetError(f"{what}: expected a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise AssetError(f"{what}: expected uint8 (n, H, W, 3) with n >= 1, got {frames.dtype} {frames.shape}")
