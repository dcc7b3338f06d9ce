"""Small JPEG thumbnails as data: URIs (project cards, clip cards): nothing to serve, nothing to leak."""

from __future__ import annotations

import base64
import io
import os
from functools import lru_cache

import numpy as np
from PIL import Image

THUMB_SIZE = (160, 120)


def image_data_uri(path: str | os.PathLike, size: tuple[int, int] = THUMB_SIZE) -> str:
    """Thumbnail of an image file; "" when it cannot be read (a card still shows its name)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return _image_uri(path, st.st_size, st.st_mtime_ns, size)


@lru_cache(maxsize=512)
def _image_uri(path: str, _size: int, _mtime: int, size: tuple[int, int]) -> str:
    try:
        with Image.open(path) as im:
            im.draft("RGB", size)  # JPEG: decode at a reduced scale, cheap for big photos
            im = im.convert("RGB")
            im.thumbnail(size)
            return _encode(im)
    except Exception:  # a damaged file gets no thumbnail; the card says the rest
        return ""


def frame_data_uri(frame: np.ndarray, size: tuple[int, int] = THUMB_SIZE) -> str:
    """Thumbnail of one uint8 (H, W, 3) frame."""
    im = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    im.thumbnail(size)
    return _encode(im)


def _encode(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
