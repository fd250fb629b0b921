"""The bundled arrays as files like their originals, for tests and benchmarks of the preprocessing contract, and
the held-out splits prepared through an entry's own contract where its input is not the bundled arrays' size.

The project keeps only the converted arrays: LFW's 48x48 crops of the box (69, 72)-(181, 184) and the emoji
flattened onto white. These rebuild inputs of the originals' kind from them, stated as what they are. ORL's
arrays are its original 92x112 photos as they are.
"""

import functools
import json

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


# Data sets whose bundled images can be given as photos of the originals' kind (`photos`).
PHOTO_SETS = ("lfw", "orl")


def photos(name, split, rows=None) -> dict:
    """A split's images as photos of the originals' kind: LFW's as 250x250 frames rebuilt from the crops
    (`lfw_photo`), ORL's as they are (grey 92x112). {"images": list of uint8 arrays, "labels": (N,) int64}.

    Args:
        name: str. "lfw" or "orl".
        split: str. a split of `zoo.data.load(name, ...)`.
        rows: array | None. the rows to give (default all), in this order.
    """
    import zoo.data

    if name not in PHOTO_SETS:
        raise ValueError(f"photos of {name!r}: only {PHOTO_SETS} have photos of the originals' kind")
    data = zoo.data.load(name, split)
    rows = np.arange(len(data["labels"])) if rows is None else np.asarray(rows)
    rebuild = lfw_photo if name == "lfw" else np.asarray
    return {"images": [rebuild(data["images"][i]) for i in rows], "labels": np.asarray(data["labels"])[rows]}


def prepared(name, split, contract, shape, rows=None) -> dict:
    """A split through an entry's preprocessing contract, at the entry's input shape: each image as a photo
    (`photos`), then `zoo.runtime.contract.prepare` (for a face entry: MTCNN and alignment onto its template).
    Where no face is found the photo is cut by the contract's fixed box instead (`align=False`), as the
    benchmarks do; "no_face" counts those. Computed once per process for the same arguments.

    Args:
        name: str. "lfw" or "orl".
        split: str. its split.
        contract: dict. the card's `preprocessing`.
        shape: (H, W, C). the entry's input shape.
        rows: array | None. the rows to prepare (default all).

    Returns:
        {"images": uint8 (N, H, W, C), "labels": (N,) int64, "no_face": int}, read-only.
    """
    key = None if rows is None else tuple(int(r) for r in rows)
    return _prepared(name, split, json.dumps(contract, sort_keys=True), tuple(int(s) for s in shape), key)


@functools.lru_cache(maxsize=8)
def _prepared(name, split, contract_json, shape, rows):
    from zoo.runtime.contract import NoFaceError, prepare

    contract = json.loads(contract_json)
    source = photos(name, split, rows)
    images, missing = [], 0
    for i, photo in enumerate(source["images"]):
        try:
            x = prepare(photo, contract, shape, name=f"{name}/{split} image {i}")
        except NoFaceError:
            missing += 1
            x = prepare(photo, contract, shape, align=False)
        images.append(x.astype(np.uint8))
    out = {"images": np.stack(images), "labels": source["labels"]}
    for value in out.values():
        value.setflags(write=False)
    return {**out, "no_face": missing}
