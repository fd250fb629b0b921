"""Image files -> uint8 pixels, for `OnnxEmbedder.embed_files` and the CLI.

Decoding is the one step of the runtime that needs a library beyond numpy: Pillow, imported when a
file is read (the preprocessing contract after it is numpy alone, see `contract.py`). The decoded
image keeps its alpha and its grey/colour mode; the contract decides what to do with them.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import numpy as np

__all__ = ["read_image", "image_files", "check_regular_file", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
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


def read_image(path, data: bytes | None = None) -> np.ndarray:
    """Decode one image file with Pillow: uint8 (H, W, C), C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA).

    EXIF orientation is applied; palette images become RGB (RGBA where the palette has transparency);
    16-bit grey becomes 8-bit (value / 257, rounded); CMYK and YCbCr become RGB. The first frame of an
    animation is used.

    Args:
        path: str | Path. the file.
        data: bytes | None. the file's bytes, already read (e.g. by Apache Beam from gs:// or s3://); `path`
            then only names the file in errors.

    Raises:
        FileNotFoundError: no such file (when `data` is None).
        ValueError: the file is not an image Pillow can decode, or is truncated; the message names it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path) if data is None else path
    if data is None:
        check_regular_file(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in _TARGET_MODE:
                im = im.convert(_TARGET_MODE[mode]) if _TARGET_MODE[mode] != mode else im
            elif mode.startswith("I") or mode == "F":
                array = np.asarray(im).astype(np.float64)
                scale = 257.0 if array.max(initial=0) > 255 or mode.startswith("I;16") else 1.0
                return np.clip(np.rint(array / scale), 0, 255).astype(np.uint8)[..., None]
            else:
                im = im.convert("RGB")
            array = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file that can be decoded (expected PNG, JPEG, BMP, GIF, "
                         "TIFF, WebP or PNM)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: cannot decode the image ({err}); is the file truncated or corrupt?") from None
    return array[..., None] if array.ndim == 2 else array


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
