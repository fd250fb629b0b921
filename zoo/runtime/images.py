"""Image operations of the preprocessing contract, in numpy alone (no Pillow, OpenCV, TF or Keras).

The bundled datasets were made with Pillow (`zoo/data/build_npz.py`): `Image.resize(..., BOX)`,
`convert("L")`, `Image.alpha_composite`. These functions reproduce Pillow's 8-bit arithmetic
(its resampling coefficients in 22-bit fixed point, horizontal pass then vertical pass, each
rounded to uint8), so a file taken through the contract gives the bundled array, and an app in
another language can follow the same steps from the formulas given here.

Every function takes and returns (H, W, C) arrays; pixel values are 0..255.
"""

from __future__ import annotations

import numpy as np

# Pillow's Resample.c: 32-bit accumulators, 8 bits of pixel, 2 bits of headroom.
_PRECISION_BITS = 32 - 8 - 2
_FILTER_SUPPORT = {"box": 0.5, "bilinear": 1.0}


def _filter(method: str, x: np.ndarray) -> np.ndarray:
    if method == "box":
        return ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    return np.maximum(1.0 - np.abs(x), 0.0)  # bilinear (triangle)


def resample_matrix(in_size: int, out_size: int, method: str = "box") -> np.ndarray:
    """Pillow's fixed-point resampling weights as a dense (out_size, in_size) float64 matrix.

    Output pixel i is centred at (i + 0.5) * scale in input coordinates, scale = in/out; the filter is
    stretched by max(scale, 1) (so a downscale averages, an upscale interpolates); weights are
    normalised to sum 1, then rounded to integers of 2^22 (Pillow's `normalize_coeffs_8bpc`).

    Args:
        in_size: int. input pixels along the axis.
        out_size: int. output pixels along the axis.
        method: str. "box" (area average, Pillow's BOX) or "bilinear" (Pillow's BILINEAR).
    """
    if method not in _FILTER_SUPPORT:
        raise ValueError(f"expected resize method 'box' or 'bilinear', got {method!r}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _FILTER_SUPPORT[method] * filterscale
    matrix = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        weights = _filter(method, (np.arange(lo, hi) - center + 0.5) / filterscale)
        total = weights.sum()
        if total != 0.0:
            weights /= total
        matrix[i, lo:hi] = np.trunc(0.5 + weights * (1 << _PRECISION_BITS))
    return matrix


# Work in blocks of about this many float64 values (8 MB), so a pass over a large photo never holds a float
# copy of the whole of it.
_BLOCK_VALUES = 1 << 20


def _blocks(length: int, values_per_item: int):
    """Slices of range(length) that hold about _BLOCK_VALUES values each (at least one item)."""
    step = max(1, _BLOCK_VALUES // max(1, values_per_item))
    return (slice(i, min(i + step, length)) for i in range(0, length, step))


def _apply(matrix: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """One resampling pass along `axis` (0 or 1) with Pillow's rounding: (sum w*x + 2^21) >> 22, clipped to
    uint8; computed in blocks along the other spatial axis, exact in float64 (integers below 2^53)."""
    other = 1 - axis
    shape = list(x.shape)
    shape[axis] = matrix.shape[0]
    out = np.empty(shape, np.uint8)
    per_item = (x.shape[axis] + matrix.shape[0]) * int(np.prod(x.shape[2:]))
    for block in _blocks(x.shape[other], per_item):
        part = x[block] if other == 0 else x[:, block]
        moved = np.moveaxis(part.astype(np.float64), axis, 0)  # (in, ...)
        acc = np.tensordot(matrix, moved, axes=(1, 0)) + (1 << (_PRECISION_BITS - 1))
        result = np.moveaxis(np.clip(np.floor(acc / (1 << _PRECISION_BITS)), 0, 255).astype(np.uint8), 0, axis)
        if other == 0:
            out[block] = result
        else:
            out[:, block] = result
    return out


def resize(image: np.ndarray, size, method: str = "box") -> np.ndarray:
    """Resize as Pillow's `Image.resize((w, h), BOX | BILINEAR)` does, bit for bit on uint8.

    Args:
        image: uint8 (H, W, C).
        size: (height, width) of the output.
        method: str. "box" or "bilinear".
    """
    height, width = int(size[0]), int(size[1])
    x = to_uint8(image)
    if x.shape[1] != width:
        x = _apply(resample_matrix(x.shape[1], width, method), x, axis=1)  # horizontal pass first
    if x.shape[0] != height:
        x = _apply(resample_matrix(x.shape[0], height, method), x, axis=0)
    return x


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip pixel values to uint8 (the decoded-file domain every step below works in)."""
    x = np.asarray(image)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def flatten_alpha(image: np.ndarray, background) -> np.ndarray:
    """Composite an image with alpha (C = 2 or 4) onto an opaque background; returns C = 1 or 3.

    out = round((c * a + bg * (255 - a)) / 255), as Pillow's `Image.alpha_composite(background, image)`.

    Args:
        image: uint8 (H, W, 2 | 4): grey+alpha or RGB+alpha.
        background: sequence of 3 ints. the background colour (grey images use its luma).
    """
    x = to_uint8(image)
    bg = np.asarray(background, np.uint16).reshape(-1)
    if x.shape[-1] == 2:
        bg = luma(bg.reshape(1, 1, 3).astype(np.uint8)).astype(np.uint16).reshape(1)
    out = np.empty(x.shape[:-1] + (x.shape[-1] - 1,), np.uint8)
    for rows in _blocks(x.shape[0], x.shape[1] * x.shape[2]):
        # c * a + bg * (255 - a) + 127 <= 255 * 255 + 127 fits 16 bits.
        part = x[rows].astype(np.uint16)
        colour, alpha = part[..., :-1], part[..., -1:]
        out[rows] = (colour * alpha + bg * (255 - alpha) + 127) // 255
    return out


def luma(image: np.ndarray) -> np.ndarray:
    """RGB -> grey as Pillow's `convert("L")`: (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601-2)."""
    x = to_uint8(image)
    out = np.empty(x.shape[:-1] + (1,), np.uint8)
    for rows in _blocks(x.shape[0], x.shape[1] * 3):
        part = x[rows].astype(np.int32)  # the sum is below 2^24
        out[rows, ..., 0] = (part[..., 0] * 19595 + part[..., 1] * 38470 + part[..., 2] * 7471 + 0x8000) >> 16
    return out


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey <-> RGB: grey is repeated into RGB; RGB becomes grey by `luma`."""
    c = image.shape[-1]
    if c == channels:
        return image
    if channels == 1 and c == 3:
        return luma(image)
    if channels == 3 and c == 1:
        return np.repeat(image, 3, axis=-1)
    raise ValueError(f"cannot turn an image with {c} channels into one with {channels}")


def ink_is_light(image: np.ndarray) -> bool:
    """Whether a drawing is light ink on dark paper: the median of its one-pixel border is below mid-grey."""
    x = np.asarray(image)
    border = np.concatenate([x[0], x[-1], x[1:-1, 0], x[1:-1, -1]])  # (P, C): the border alone
    return bool(np.median(border.astype(np.float64).mean(axis=-1)) < 127.5)


def pad_to_square(image: np.ndarray, value) -> np.ndarray:
    """Pad the short side equally on both sides (the extra pixel after) with `value`, a (C,) colour."""
    h, w, c = image.shape
    side = max(h, w)
    out = np.empty((side, side, c), image.dtype)
    out[...] = np.asarray(value, image.dtype).reshape(c)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """The central square of side min(H, W) (top-left at ((H - s) // 2, (W - s) // 2))."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top : top + s, left : left + s]


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping source points onto target.

    Returns a (2, 3) matrix M with target ~ M @ [x, y, 1]. Umeyama (1991), without reflection.

    Args:
        source: (N, 2) points (x, y), N >= 2.
        target: (N, 2) points (x, y).
    """
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    covariance = d.T @ s / len(src)  # (2, 2)
    u, sigma, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / s.var(axis=0).sum()
    translation = mu_d - scale * rotation @ mu_s
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size, fill=0) -> np.ndarray:
    """Sample `image` at the inverse of the (2, 3) `matrix` (output <- input) with bilinear interpolation.

    Output pixel (x, y) (centres at integer + 0.5, Pillow's convention) takes the input at
    M^-1 [x + 0.5, y + 0.5] - 0.5; outside the image the pixel is `fill`. Returns uint8 (h, w, C).

    Args:
        image: uint8 (H, W, C).
        matrix: (2, 3) float. maps input (x, y) to output (x, y).
        size: (h, w) of the output.
        fill: number. value outside the input.
    """
    h, w = int(size[0]), int(size[1])
    forward = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])  # (3, h*w)
    sx, sy = inverse @ points - 0.5  # input coordinates of each output pixel
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[:, None], (sy - y0)[:, None]
    height, width = image.shape[:2]

    def pick(yy, xx):  # (h*w, C) float64: only the sampled pixels are converted, never the whole image
        inside = ((yy >= 0) & (yy < height) & (xx >= 0) & (xx < width))[:, None]
        return np.where(inside, image[np.clip(yy, 0, height - 1), np.clip(xx, 0, width - 1)].astype(np.float64),
                        float(fill))

    top = pick(y0, x0) * (1 - fx) + pick(y0, x0 + 1) * fx
    bottom = pick(y0 + 1, x0) * (1 - fx) + pick(y0 + 1, x0 + 1) * fx
    out = top * (1 - fy) + bottom * fy  # (h*w, C)
    return to_uint8(out.reshape(h, w, image.shape[-1]))
