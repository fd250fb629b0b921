"""The user's own images as datasets in the bundled format (`zoo.data.load`): uint8 NHWC `images`, `labels`.

Three layouts, told apart by what the folder holds:

    labelled    DIR/<class>/<image>       one subfolder per class (identity, character, product ...)
    unlabelled  DIR/<image>               images only (self-supervised methods)
    captions    DIR/captions.csv          columns image,caption; image paths relative to DIR (CLIP)

Images of any size and format Pillow reads are brought to the model's input by an entry's preprocessing
contract (`zoo.runtime.contract`: alpha, face alignment, colour, ink, fit, resize), so a folder trains
exactly what `zoo embed` will later see. A file that cannot be used (not an image, truncated, no face for a
face entry) is skipped and counted in `skipped` (file, reason), with a warning; a folder where nothing is
left, an empty folder, a folder mixing subfolders and loose images, and a class with fewer images than
the method needs are refused with a ValueError naming them.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

__all__ = ["read_folder", "split_classes", "LAYOUTS"]

LAYOUTS = ("labelled", "unlabelled", "captions")


def _layout(folder: Path) -> str:
    from zoo.runtime.files import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise FileNotFoundError(f"--data {folder}: no such folder")
    if (folder / "captions.csv").is_file():
        return "captions"
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if subfolders and loose:
        raise ValueError(f"--data {folder}: holds both class subfolders ({subfolders[0].name}/ ...) and loose images "
                         f"({loose[0].name} ...); expected DIR/<class>/<image> or DIR/<image>, not both")
    if subfolders:
        return "labelled"
    if loose:
        return "unlabelled"
    raise ValueError(f"--data {folder}: empty; expected DIR/<class>/<image>, DIR/<image> or DIR/captions.csv")


def _caption_rows(folder: Path) -> list[tuple[Path, str]]:
    path = folder / "captions.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected the columns image,caption, got {reader.fieldnames}")
        rows = [(folder / row["image"], (row["caption"] or "").strip()) for row in reader]
    if not rows:
        raise ValueError(f"{path}: no rows; expected one line per image: image,caption")
    for image, caption in rows:
        if not caption:
            raise ValueError(f"{path}: the caption of {image.name} is empty")
    return rows


def read_folder(path, input_shape, contract, *, min_per_class=1) -> dict:
    """Read a folder of images as a dataset: images prepared by `contract` to `input_shape`, uint8.

    Returns a dict: `images` (N, H, W, C) uint8, `labels` (N,) int64 (class index; 0..N-1 for unlabelled
    images, each its own instance; the image's index for captions), `files` (N,) str, `layout`, `skipped`
    (list of (file, reason)), and `class_names` (labelled) or `captions` (N,) str (captions).

    Args:
        path: str | Path. the folder (see the module docstring for its layouts).
        input_shape: (H, W, C) of the model.
        contract: dict. the entry's `preprocessing` contract.
        min_per_class: int. labelled folders: the fewest usable images a class may have (pairs and P x K
            batches need 2).
    """
    from zoo.runtime import image_files, read_image
    from zoo.runtime.contract import prepare

    folder = Path(path)
    layout = _layout(folder)
    if layout == "labelled":
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        entries = [(f, c.name) for c in classes for f in _class_files(c, image_files)]
    elif layout == "unlabelled":
        entries = [(f, None) for f in image_files(folder)]
    else:
        entries = _caption_rows(folder)
    images, kept, skipped = [], [], []
    for file, tag in entries:
        try:
            images.append(prepare(read_image(file), contract, input_shape, name=str(file)).astype(np.uint8))
            kept.append((file, tag))
        except (ValueError, OSError) as err:
            skipped.append((str(file), str(err)))
    if skipped:
        warnings.warn(f"--data {folder}: skipped {len(skipped)} of {len(entries)} files, e.g. {skipped[0][1]}",
                      RuntimeWarning, stacklevel=2)
    if not images:
        raise ValueError(f"--data {folder}: none of its {len(entries)} files could be used; first: "
                         f"{skipped[0][1] if skipped else 'no files'}")
    data = {"images": np.stack(images), "files": np.array([str(f) for f, _ in kept]), "layout": layout,
            "skipped": skipped}
    if layout == "labelled":
        names = sorted({tag for _, tag in kept})
        data["labels"] = np.array([names.index(tag) for _, tag in kept], np.int64)
        data["class_names"] = np.array(names)
        counts = np.bincount(data["labels"], minlength=len(names))
        few = [f"{n} ({c})" for n, c in zip(names, counts) if c < min_per_class]
        if few:
            raise ValueError(f"--data {folder}: every class needs at least {min_per_class} usable images; "
                             f"these have fewer: {', '.join(few)}")
        missing = [c.name for c in classes if c.name not in names]
        if missing:
            raise ValueError(f"--data {folder}: no usable image in the class folders {missing}")
    else:
        data["labels"] = np.arange(len(images), dtype=np.int64)
        if layout == "captions":
            data["captions"] = np.array([tag for _, tag in kept])
    return data


def _class_files(folder, image_files):
    try:
        return image_files(folder)
    except ValueError:
        return []  # an empty class folder: reported by the check on classes without images


def split_classes(data, test_fraction, seed=0) -> tuple[dict, dict]:
    """Split a folder dataset into train and held-out parts: by class for labelled data (no class in both),
    by image otherwise. round(test_fraction * n) of a seeded permutation are held out, at least 1, at most n - 1.

    Args:
        data: dict. `read_folder` output.
        test_fraction: float. share of the classes (or images) held out, 0 < f < 1.
        seed: int. the permutation's seed (numpy default_rng).
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"--test-fraction must lie strictly between 0 and 1, got {test_fraction}")
    labels = data["labels"]
    groups = np.unique(labels)
    if len(groups) < 2:
        raise ValueError(f"cannot hold out classes: the folder has {len(groups)} class; give at least 2")
    n_test = min(max(1, round(float(test_fraction) * len(groups))), len(groups) - 1)
    held_out = np.random.default_rng(seed).permutation(groups)[:n_test]
    test_rows = np.isin(labels, held_out)
    parts = []
    for rows in (~test_rows, test_rows):
        part = {k: (v[rows] if isinstance(v, np.ndarray) and len(v) == len(labels) else v) for k, v in data.items()}
        parts.append(part)
    return parts[0], parts[1]
