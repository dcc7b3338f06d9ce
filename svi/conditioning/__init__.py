"""Conditioning streams beyond text and image: audio (talk) and pose (dance).

Submodules are imported by their users so that importing the package stays cheap (no torch, no
mediapipe): `svi.conditioning.audio`, `.wav2vec`, `.pose`, `.pose_render`, `.audio_adapter`,
`.pose_encoder`.
"""

import os
from collections.abc import Mapping


def require_media_file(path: str, error: type[Exception], what: str) -> None:
    """Refuse a missing path, a folder or a zero-byte file with `error`, naming the path."""
    if not os.path.exists(path):
        raise error(f"{path}: {what} file not found")
    if os.path.isdir(path):
        raise error(f"{path}: is a folder, not {'an' if what[0] in 'aeiou' else 'a'} {what} file")
    if os.path.getsize(path) == 0:
        raise error(f"{path}: the file is empty (zero bytes)")


def track_for(tracks, piece, error: type[Exception], what: str):
    """The track a clip's MediaPiece reads: tracks[piece.path] from a mapping, else the one track."""
    if isinstance(tracks, Mapping):
        try:
            return tracks[piece.path]
        except KeyError:
            raise error(f"{piece.path}: no {what} track loaded for this clip piece") from None
    return tracks
