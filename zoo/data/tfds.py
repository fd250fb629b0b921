"""TFDS adapters: the full public datasets through tensorflow_datasets, in `zoo.data.load`'s format.

| zoo name | TFDS dataset | zoo split -> TFDS split |
| --- | --- | --- |
| omniglot | omniglot | background -> train, evaluation -> test |
| lfw | lfw | train / test / all -> train (every image), then the identity split of `zoo.data` |
| mnist | mnist | test / probe_train / probe_test -> test, then the probe sub-split of `zoo.data` |
| coco_mini | coco_captions (Karpathy splits) | train -> train, val -> val |

`emoji` and `orl` have no TFDS counterpart. The converters take any iterable of TFDS-shaped
example dicts (numpy values, e.g. `tfds.as_numpy(dataset)`) and reproduce the bundled
conversion (PROVENANCE.md): Omniglot grey 0/255 with 255 = paper, area-downsampled (PIL BOX) to
28x28; LFW cropped to the box (69, 72, 181, 184) and area-resized to 48x48, people with at least
10 photos; COCO centre-cropped to a square and area-resized to 96x96, the first 5 captions by
annotation id. What TFDS does not carry is filled with -1: Omniglot `drawer`, LFW
`image_number`; COCO has no `license` keys. TensorFlow Datasets is imported only inside `load`.
"""

import numpy as np

from zoo.data import identity_split, mnist_split, split_by_identity

TFDS_NAMES = {"omniglot": "omniglot", "lfw": "lfw", "mnist": "mnist", "coco_mini": "coco_captions"}
_TFDS_SPLIT = {
    ("omniglot", "background"): "train",
    ("omniglot", "evaluation"): "test",
    ("coco_mini", "train"): "train",
    ("coco_mini", "val"): "val",
}
LFW_BOX = (69, 72, 181, 184)  # (left, top, right, bottom): 112x112 around the face centre
LFW_SIZE = 48
LFW_MIN_IMAGES = 10
COCO_SIZE = 96
COCO_CAPTIONS = 5


def tfds_split(name, split):
    """The TFDS split that a zoo (name, split) is read from."""
    if name not in TFDS_NAMES:
        raise ValueError(f"{name!r} has no TFDS source; TFDS-backed names: {sorted(TFDS_NAMES)}")
    default = {"lfw": "train", "mnist": "test"}.get(name)
    return _TFDS_SPLIT.get((name, split), default)


def load(name, split, size=None):
    """Download (once) and convert one split of a TFDS dataset; needs network the first time.

    Args:
      name: str. A zoo dataset name with a TFDS source (see TFDS_NAMES).
      split: str. A zoo split name of that dataset.
      size: int or None. Omniglot image side, 28 or 105.
    """
    source_split = tfds_split(name, split)
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAMES[name])
    builder.download_and_prepare()
    examples = tfds.as_numpy(builder.as_dataset(split=source_split, shuffle_files=False))
    alphabet_names = builder.info.features["alphabet"].names if name == "omniglot" else None
    return from_examples(name, split, examples, size=size, alphabet_names=alphabet_names)


def from_examples(name, split, examples, *, size=None, alphabet_names=None):
    """Convert TFDS examples of the split `tfds_split(name, split)` and apply the zoo sub-split.

    Args:
      name: str. A zoo dataset name with a TFDS source.
      split: str. A zoo split name of that dataset.
      examples: iterable of dict. TFDS-shaped examples with numpy values.
      size: int or None. Omniglot image side, 28 (default) or 105.
      alphabet_names: sequence of str or None. Omniglot only: TFDS's `alphabet` ClassLabel names.
    """
    tfds_split(name, split)
    if name == "omniglot":
        return omniglot(examples, alphabet_names, size=size or 28)
    if name == "lfw":
        data = lfw(examples)
        return split_by_identity(data, split, identity_split(len(data["identity_names"])))
    if name == "mnist":
        return mnist_split(mnist(examples), split)
    return coco_captions(examples)


def omniglot(examples, alphabet_names, size=28):
    """Omniglot examples (image (105, 105, 3), alphabet, alphabet_char_id, label) to a zoo dict.

    Rows are sorted by global character id, keeping TFDS's order within a character.

    Args:
      examples: iterable of dict. TFDS `omniglot` examples.
      alphabet_names: sequence of str. Names of the `alphabet` ids (sorted folder names).
      size: int. Output side, 28 (area-downsampled) or 105 (original).
    """
    if size not in (28, 105):
        raise ValueError(f"omniglot size must be 28 or 105, got {size!r}")
    images, labels, alphabet, character = [], [], [], []
    for ex in examples:
        image = _image(ex["image"], (105, 105, 3), "omniglot")[..., 0]  # grey stored as RGB
        images.append(image if size == 105 else _box_resize(image, (size, size)))
        labels.append(int(ex["label"]))
        alphabet.append(int(ex["alphabet"]))
        character.append(int(ex["alphabet_char_id"]) + 1)  # TFDS counts from 0, folders from 1
    order = np.argsort(np.asarray(labels, np.int64), kind="stable")
    return {
        "images": _stack(images, (size, size), order)[..., None],
        "labels": np.asarray(labels, np.int64)[order],
        "alphabet": np.asarray(alphabet, np.int64)[order],
        "alphabet_names": np.asarray(alphabet_names, str),
        "drawer": np.full(len(order), -1, np.int64),
        "character_in_alphabet": np.asarray(character, np.int64)[order],
    }


def lfw(examples, min_images=LFW_MIN_IMAGES):
    """LFW examples (image (250, 250, 3), label = person name) to a zoo dict of face crops.

    Identities are the people with at least `min_images` photos, in alphabetical order; rows are
    grouped by identity in TFDS's order.

    Args:
      examples: iterable of dict. TFDS `lfw` examples.
      min_images: int. Fewest photos a person needs to be kept.
    """
    by_name = {}
    for ex in examples:
        face = _box_resize(_image(ex["image"], (250, 250, 3), "lfw"), (LFW_SIZE, LFW_SIZE), LFW_BOX)
        by_name.setdefault(_text(ex["label"]), []).append(face)
    keep = sorted(name for name, faces in by_name.items() if len(faces) >= min_images)
    if not keep:
        raise ValueError(f"no person in the LFW examples has >= {min_images} images")
    images = [face for name in keep for face in by_name[name]]
    labels = np.repeat(np.arange(len(keep), dtype=np.int64), [len(by_name[n]) for n in keep])
    return {
        "images": np.stack(images),
        "labels": labels,
        "identity_names": np.asarray(keep, str),
        "image_number": np.full(len(labels), -1, np.int64),
    }


def mnist(examples):
    """MNIST examples (image (28, 28, 1), label) to a zoo dict.

    Args:
      examples: iterable of dict. TFDS `mnist` examples.
    """
    images, labels = [], []
    for ex in examples:
        images.append(_image(ex["image"], (28, 28, 1), "mnist"))
        labels.append(int(ex["label"]))
    return {"images": _stack(images, (28, 28, 1)), "labels": np.asarray(labels, np.int64)}


def coco_captions(examples):
    """COCO captions examples (image, image/id, captions {text, id}) to a zoo dict.

    Each image is centre-cropped to a square and area-resized to 96x96; its captions are ordered
    by annotation id and the first 5 are kept. Labels are arange(N): one instance per image.

    Args:
      examples: iterable of dict. TFDS `coco_captions` examples.
    """
    images, captions, image_ids = [], [], []
    for ex in examples:
        image = np.asarray(ex["image"])
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"coco image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        s = min(h, w)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        images.append(_box_resize(image, (COCO_SIZE, COCO_SIZE), box))
        order = np.argsort(np.asarray(ex["captions"]["id"]), kind="stable")
        texts = [_text(ex["captions"]["text"][i]).strip() for i in order]
        if len(texts) < COCO_CAPTIONS:
            raise ValueError(f"COCO image {int(ex['image/id'])} has {len(texts)} captions, expected >= 5")
        captions.append(texts[:COCO_CAPTIONS])
        image_ids.append(int(ex["image/id"]))
    return {
        "images": _stack(images, (COCO_SIZE, COCO_SIZE, 3)),
        "captions": np.asarray(captions, str).reshape(-1, COCO_CAPTIONS),
        "image_id": np.asarray(image_ids, np.int64),
        "labels": np.arange(len(images), dtype=np.int64),
    }


def _image(value, shape, name):
    image = np.asarray(value)
    if image.shape != shape or image.dtype != np.uint8:
        raise ValueError(f"{name} image must be uint8 {shape}, got {image.dtype} {image.shape}")
    return image


def _stack(images, shape, order=None):
    if not images:
        return np.zeros((0, *shape), np.uint8)
    stacked = np.stack(images)
    return stacked if order is None else stacked[order]


def _box_resize(image, size, box=None):
    """Crop to `box` (left, top, right, bottom) and area-resize to `size` (h, w) with PIL BOX."""
    from PIL import Image  # the filter that built the bundled files

    pil = Image.fromarray(image)
    if box is not None:
        pil = pil.crop(box)
    return np.asarray(pil.resize((size[1], size[0]), Image.BOX))


def _text(value):
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
