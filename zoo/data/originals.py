"""The bundled arrays as files like their originals, for tests and benchmarks of the preprocessing contract.

The project keeps only the converted arrays: LFW's 48x48 crops of the box (69, 72)-(181, 184) and the emoji
flattened onto white. These rebuild inputs of the originals' kind from them, stated as what they are.
"""

import numpy as np

from zoo.data.build_npz import LFW_BOX

LFW_FRAME = 250


def lfw_photo(crop) -> np.ndarray:
    """A 250x250 LFW-like photo from a bundled 48x48 crop: enlarged (bilinear) to the 112-pixel box and set at
    the box's place, the crop's edges repeated outside it. uint8 (250, 250, 3)."""
    from zoo.runtime import images as ops

    x1, y1, x2, y2 = LFW_BOX
    box = ops.resize(crop, (y2 - y1, x2 - x1), "bilinear")
    return np.pad(box, ((y1, LFW_FRAME - y2), (x1, LFW_FRAME - x2), (0, 0)), mode="edge")


def emoji_rgba(images) -> np.ndarray:
    """RGBA emoji as an app holds them, from the white-background arrays: alpha 0 (and black colour) where the
    picture is pure white, opaque elsewhere. uint8 (..., H, W, 4)."""
    images = np.asarray(images)
    white = np.all(images == 255, axis=-1, keepdims=True)
    return np.concatenate([np.where(white, 0, images), np.where(white, 0, 255)], axis=-1).astype(np.uint8)
