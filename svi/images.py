"""Reading user images safely: a clear error for anything that is not a usable picture."""

from __future__ import annotations

import os
import warnings

from PIL import Image, UnidentifiedImageError

# Refuse absurd images before decoding them (a 20k x 20k PNG is 1.2 GB of RGB); the output is at
# most 832 px a side, so nothing is lost.
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_BYTES = 100 * 1024 * 1024


class ImageError(ValueError):
    pass


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB (alpha flattened on white), or raise ImageError saying why not."""
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
    except OSError:
        raise ImageError(f"{name}: image file not found") from None
    if size == 0:
        raise ImageError(f"{name}: the image file is empty")
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"{name}: image file too large ({size / 2**20:.0f} MB; limit {MAX_IMAGE_BYTES // 2**20} MB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(name)
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ImageError(f"{name}: image too large ({img.width}x{img.height} pixels; "
                                 f"limit {MAX_IMAGE_PIXELS // 1_000_000} megapixels)")
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: not an image file this app can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: the image is damaged or truncated ({e})") from None
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB")
