"""The preprocessing contract: how a decoded image file becomes a model input, from `card["preprocessing"]`.

A card's `preprocessing` (written by the recipe that published it) holds:

    color       "rgb" | "grey"            model channels; grey = Pillow's convert("L") luma
    background  [r, g, b]                 alpha is flattened onto it; padding takes it too
    ink         "dark" | null             drawings: dark ink on light paper; a light-on-dark one is inverted
    face        null | {detector, frame, template, select, ...}
                                          detect, then align 5 landmarks onto `template` (x, y pixels of a
                                          `frame` = [h, w] crop) by a similarity transform
    crop        null | {frame, box}       a fixed box [x1, y1, x2, y2] of a [h, w] frame, scaled to the image
    fit         "pad" | "center_crop" | "stretch"   how another aspect ratio reaches the model's
    resize      {method, size}            Pillow's BOX (area) or BILINEAR, to [h, w]
    source      str                       how the training arrays were made from the original files

Steps, in this order, on uint8 (H, W, C) pixels: (1) flatten alpha (C = 2 or 4) onto `background`;
(2) for face entries, detect and warp the face onto `face.frame`, else cut `crop`; (3) convert the
colour; (4) invert if `ink` is "dark" and the median of the one-pixel border is below 127.5; (5) fit
the aspect ratio; (6) resize. An image already of the model's (H, W, C) is taken as prepared (the
bundled arrays are): it gets step 4 only.
"""

from __future__ import annotations

import threading

import numpy as np

from . import images as ops
from .files import read_image

__all__ = ["prepare", "prepare_file", "decode_side", "NoFaceError", "face_detector"]

_DETECTORS: dict = {}
_DETECTORS_LOCK = threading.Lock()
# Below this scale (output pixels per input pixel) the photo is first shrunk by area, so the bilinear
# warp does not alias a large face.
_MIN_WARP_SCALE = 0.5


class NoFaceError(ValueError):
    """No face was found in an image given to a face entry."""


def face_detector(spec: dict):
    """The process-wide detector for a card's `face` spec (built once, shared by threads). The card's
    `detector_sha256` must name this runtime's graphs: the template was measured with them."""
    from .faces import MTCNN_SHA256, FaceDetector

    key = (spec.get("detector", "mtcnn"), int(spec.get("min_face_size", 20)))
    if key[0] != "mtcnn":
        raise ValueError(f"unknown face detector {key[0]!r} in the card; this runtime has 'mtcnn'")
    if spec.get("detector_sha256", MTCNN_SHA256) != MTCNN_SHA256:
        raise ValueError(f"the card's face detector (sha256 {spec['detector_sha256']}) is not this runtime's "
                         f"({MTCNN_SHA256}); use the zoo.runtime the entry was published with")
    with _DETECTORS_LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = FaceDetector(min_face_size=key[1])
        return _DETECTORS[key]


def _check_pixels(image, name: str) -> np.ndarray:
    x = np.asarray(image)
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise ValueError(f"{name}: expected uint8 or float pixel values 0..255, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN or Inf; expected finite pixel values 0..255")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 2, 3, 4) or min(x.shape[:2]) < 1:
        raise ValueError(f"{name}: expected an image (H, W), (H, W, C) with C in 1..4 (grey, grey+alpha, RGB, "
                         f"RGBA), got shape {x.shape}")
    return x


def align_face(image: np.ndarray, spec: dict, face_index: int = 0, name: str = "image"):
    """Detect faces, pick one (0 = largest) and warp it onto the template; returns (uint8 frame, face dict).

    Args:
        image: uint8 (H, W, 3) RGB.
        spec: dict. the card's `preprocessing["face"]`.
        face_index: int. which face by area, largest first.
        name: str. how errors name the image.
    """
    faces = face_detector(spec).detect(image)
    if not faces:
        raise NoFaceError(f"{name}: no face found (a face entry needs a photo with a face of at least "
                          f"{spec.get('min_face_size', 20)} pixels)")
    if not 0 <= face_index < len(faces):
        raise ValueError(f"{name}: face {face_index} asked for, but {len(faces)} found (0 = largest)")
    face = faces[face_index]
    template = np.asarray(spec["template"], np.float64)  # (5, 2) in frame pixels
    landmarks = np.asarray(face["landmarks"], np.float64)  # (5, 2) in image pixels
    matrix = ops.similarity_transform(landmarks, template)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < _MIN_WARP_SCALE:
        # Shrink by area to about the frame's scale, then warp from the shrunk photo.
        h, w = image.shape[:2]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = ops.resize(image, size, "box")
        landmarks = landmarks * [size[1] / w, size[0] / h]
        matrix = ops.similarity_transform(landmarks, template)
    frame = ops.warp_affine(image, matrix, spec["frame"], fill=0)
    return frame, face


def prepare(image, contract: dict, input_shape, *, face_index: int = 0, align: bool = True,
            name: str = "image") -> np.ndarray:
    """One decoded image -> the model input (H, W, C) float32 0..255, by the card's contract.

    Args:
        image: array. (H, W) or (H, W, C), C in 1..4, uint8 or float 0..255, any size.
        contract: dict. the card's `preprocessing` (see the module docstring).
        input_shape: (H, W, C) of the model.
        face_index: int. face entries: which detected face, by area (0 = largest).
        align: bool. face entries: detect and align (True) or cut the fixed `crop` box (False).
        name: str. how errors name the image (a file name, or "image 3").
    """
    h, w, c = (int(n) for n in input_shape)
    x = _check_pixels(image, name)
    if x.shape == (h, w, c):  # already prepared
        return _fix_ink(x.astype(np.float32), contract)
    x = ops.to_uint8(x)
    background = contract.get("background") or [255, 255, 255]
    if x.shape[-1] in (2, 4):
        x = ops.flatten_alpha(x, background)
    face, crop = contract.get("face"), contract.get("crop")
    if face and align:
        x, _ = align_face(ops.match_channels(x, 3), face, face_index, name)
    elif crop:
        fh, fw = crop["frame"]
        x1, y1, x2, y2 = crop["box"]
        sy, sx = x.shape[0] / fh, x.shape[1] / fw
        x = x[round(y1 * sy) : round(y2 * sy), round(x1 * sx) : round(x2 * sx)]
    x = ops.match_channels(x, c)
    x = _fix_ink(x, contract)
    fit = contract.get("fit", "stretch")
    if x.shape[0] * w != x.shape[1] * h and fit != "stretch":
        if h != w:
            raise ValueError(f"fit {fit!r} needs a square model input, got {input_shape}")
        paper = ops.match_channels(np.array([[background]], np.uint8), c)[0, 0]  # (C,)
        x = ops.pad_to_square(x, paper) if fit == "pad" else ops.center_crop_square(x)
    resize = contract.get("resize") or {"method": "box", "size": [h, w]}
    return ops.resize(x, (h, w), resize.get("method", "box")).astype(np.float32)


def decode_side(contract: dict, input_shape, align: bool = True) -> int:
    """The shorter side a decoded file must keep for this contract: a JPEG larger than twice this may be decoded
    already shrunk (`read_image(min_side=...)`). Face detection searches up to DETECT_MAX_SIDE pixels; any other
    input keeps 8x the model's side, so the contract's area resize still averages many source pixels."""
    from .faces import DETECT_MAX_SIDE

    side = 8 * max(int(n) for n in input_shape[:2])
    return max(side, DETECT_MAX_SIDE) if contract.get("face") and align else side


def prepare_file(path, contract: dict, input_shape, *, data: bytes | None = None, face_index: int = 0,
                 align: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """One image file -> the model input (H, W, C) float32: decoded within the pixel budget (see `read_image`),
    then `prepare`. Only this file's pixels are held, so a batch of files costs one decoded image at a time.

    Args:
        path: str | Path. the file (with `data`, only its name in errors).
        contract: dict. the card's `preprocessing`.
        input_shape: (H, W, C) of the model.
        data: bytes | None. the file's bytes, already read.
        face_index: int. face entries: which detected face, by area (0 = largest).
        align: bool. face entries: detect and align (True) or cut the fixed `crop` box (False).
        max_pixels: int | None. the decode budget (default `zoo.runtime.files.MAX_PIXELS`).
    """
    image = read_image(path, data, max_pixels=max_pixels, min_side=decode_side(contract, input_shape, align))
    return prepare(image, contract, input_shape, face_index=face_index, align=align, name=str(path))


def _fix_ink(x, contract):
    if contract.get("ink") == "dark" and ops.ink_is_light(x):
        return 255 - x  # uint8 stays uint8, float stays float
    return x
