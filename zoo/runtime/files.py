"""Image files -> uint8 pixels, for `OnnxEmbedder.embed_files` and the CLI.

Decoding is the one step of the runtime that needs a library beyond numpy: Pillow, imported when a
file is read (the preprocessing contract after it is numpy alone, see `contract.py`). The decoded
image keeps its alpha and its grey/colour mode; the contract decides what to do with them.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
from pathlib import Path

import numpy as np

__all__ = ["read_image", "image_files", "check_regular_file", "IMAGE_SUFFIXES", "MAX_PIXELS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
# The decode budget: an image whose header declares more pixels (width x height; for a GIF its logical screen)
# is refused before any pixel is decoded. 40 Mpx is a 7300 x 5500 photo, past every phone camera's default;
# decoded as RGBA it takes 160 MB. Callers may pass their own `max_pixels`.
MAX_PIXELS = 40_000_000
# Pillow modes -> the mode decoded into: everything ends as L, LA, RGB or RGBA, 8 bits.
_TARGET_MODE = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "RGB": "RGB", "RGBA": "RGBA", "RGBa": "RGBA",
                "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "PA": "RGBA"}


# stat's file types that are not regular files, as errors name them.
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def check_regular_file(path, what: str = "image file") -> None:
    """Raise an OSError that names what `path` is unless it is a readable regular file; stat only, so that a
    FIFO is never opened (an open would wait for a writer forever).

    Args:
        path: str | Path. the file.
        what: str. what was expected, for the message of a missing file: "no such image file".
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        dangling = " (a symlink to nothing)" if path.is_symlink() else ""
        raise FileNotFoundError(f"{path}: no such {what}{dangling}") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(f"{path}: symlink loop (too many levels of symlinks)") from None
        if err.errno == errno.EACCES:
            raise PermissionError(f"{path}: permission denied") from None
        raise OSError(f"{path}: {err.strerror}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise OSError(f"{path}: is not a regular file ({kind})")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: permission denied")


def read_image(path, data: bytes | None = None, *, max_pixels: int | None = None,
               min_side: int | None = None) -> np.ndarray:
    """Decode one image file with Pillow: uint8 (H, W, C), C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA).

    EXIF orientation is applied; palette images become RGB (RGBA where the palette has transparency);
    16-bit grey becomes 8-bit (value / 257, rounded); CMYK and YCbCr become RGB. The first frame of an
    animation is used. The header is read first: an image past the pixel budget is refused undecoded.

    Args:
        path: str | Path. the file.
        data: bytes | None. the file's bytes, already read (e.g. by Apache Beam from gs:// or s3://); `path`
            then only names the file in errors.
        max_pixels: int | None. the decode budget, width x height (default MAX_PIXELS).
        min_side: int | None. a JPEG may be decoded already shrunk by 2, 4 or 8 (libjpeg's DCT scaling,
            Pillow's `draft`) as long as its shorter side stays >= min_side; None decodes at full size.

    Raises:
        FileNotFoundError: no such file (when `data` is None).
        OSError: not a readable regular file: a folder, a FIFO (never opened), a symlink loop, no permission
            (`check_regular_file`); the message says which.
        ValueError: the file is not an image Pillow can decode, is truncated, or is past the budget; the
            message names it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path) if data is None else path
    if data is None:
        check_regular_file(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            _check_budget(im, path, MAX_PIXELS if max_pixels is None else int(max_pixels))
            if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
                scale = min_side / min(im.size)
                im.draft(im.mode, (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in _TARGET_MODE:
                im = im.convert(_TARGET_MODE[mode]) if _TARGET_MODE[mode] != mode else im
            elif mode.startswith("I") or mode == "F":
                array = np.asarray(im).astype(np.float32)  # 16-bit values are exact in float32
                scale = 257.0 if array.max(initial=0) > 255 or mode.startswith("I;16") else 1.0
                return np.clip(np.rint(array / scale), 0, 255).astype(np.uint8)[..., None]
            else:
                im = im.convert("RGB")
            array = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file that can be decoded (expected PNG, JPEG, BMP, GIF, "
                         "TIFF, WebP or PNM)") from None
    except Image.DecompressionBombError:  # Pillow's own limit, far above the budget: refused at open
        raise ValueError(f"{path}: more pixels than Pillow decodes ({2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx), "
                         "past the decode budget; shrink the image first") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot decode the image ({err}); is the file truncated or corrupt?") from None
    return array[..., None] if array.ndim == 2 else array


def _check_budget(im, path, max_pixels: int) -> None:
    """Refuse, from the header alone, an image whose width x height is past `max_pixels`."""
    width, height = im.size
    if width * height > max_pixels:
        raise ValueError(f"{path}: {width} x {height} = {width * height / 1e6:.1f} Mpx, past the decode budget of "
                         f"{max_pixels / 1e6:.1f} Mpx; shrink the image first")


def image_files(folder) -> list[Path]:
    """The image files directly inside a folder (by suffix, see IMAGE_SUFFIXES), sorted by name.

    Raises ValueError naming the folder when it holds none, FileNotFoundError when it does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no image files in the folder (expected {', '.join(IMAGE_SUFFIXES)})")
    return files
