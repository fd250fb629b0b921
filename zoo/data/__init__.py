"""Bundled datasets and their fixed splits: `load(name, split)` returns a dict of numpy arrays.

Every dict has `images` (uint8, NHWC, always 4-D: grey images have C=1) and `labels` (int64),
plus metadata. The lookup tables (`alphabet_names`, `identity_names`, `category_names`,
`subcategory_names`, `license_names`) are per dataset; every other array has one row per
image. Returned arrays are read-only (views of an in-process cache or fresh copies); use
`np.array(x)` for a writable copy. The files and their sources are described in PROVENANCE.md.

Splits (fixed; every random choice below is `numpy.random.default_rng(SPLIT_SEED)`, SPLIT_SEED = 0):

- `omniglot`: `background` (964 characters, 30 alphabets, 19,280 images) and `evaluation`
  (659 characters, 20 alphabets, 13,180 images), Lake et al.'s split. `size=28` (default,
  area-downsampled, grey levels) or `size=105` (original, 0/255). Pixels as stored: 255 = paper,
  0 = ink. Keys: labels (global character id 0..1622), alphabet (index into alphabet_names),
  alphabet_names, drawer (1..20), character_in_alphabet (NN of `characterNN`, from 1).
  `omniglot_oneshot_runs()` gives Lake's 20 runs of 20-way one-shot classification.
- `lfw` (people with >= 10 photos: 158 identities, 4,324 images, 48x48 RGB): split by identity,
  never by image. A permutation of the 158 identities puts the first 32 (20%) in `test`
  (641 images) and the other 126 in `train` (3,683 images); `all` is every image. Labels are the
  global identity index (into identity_names), so no label is shared between train and test.
  Keys: identity_names, image_number (NNNN of the LFW file name).
- `orl` (40 subjects x 10 images, 112x92 grey): `all`; `train` / `test` by subject, a permutation
  of the 40 subjects puts 10 in `test` (100 images) and 30 in `train` (300). Labels = subject
  (0..39). Keys: image_index (1..10).
- `mnist` (the official 10,000 test images): `test`; and a stratified half/half sub-split for
  linear probes, `probe_train` (5,000) and `probe_test` (5,000): the images are ordered by
  (label, random key) and alternate between the two, so every digit is split within one image.
- `emoji` (1,911 Noto emoji, 64x64 RGB on white): `train` (1,529) / `test` (382), stratified by
  category: in each category, round(20%) of its distinct images go to `test`; identical images
  (11 groups in the file share pixels under different names) always fall on the same side.
  Labels = category (index into category_names). Keys: subcategory (str), subcategory_labels
  (index into subcategory_names, the sorted distinct subcategories), captions (the lower-cased
  Unicode name), short_names, unified (code points), cldr_names (the CLDR short name, lower-cased)
  and keywords (the CLDR keywords joined by "|").
- `coco_mini` (239 MS-COCO 2017 images, 96x96 RGB, 5 captions each): `train` (80, from
  train2017) / `val` (159, from val2017). Labels = arange(N), one instance per image. Keys:
  captions (N, 5) str, image_id (COCO id), license (COCO license id, 1..8), license_names.

`source="tfds"` reads the full public dataset with tensorflow_datasets instead (it downloads it
once, so it needs network) and converts it to the same format with the converters in
`zoo.data.tfds`; the same split names and the same sub-split rules apply. See that module for
which TFDS dataset each name maps to and the few keys TFDS cannot provide.
"""

import functools
import os

import numpy as np

SPLIT_SEED = 0
_DIR = os.path.dirname(os.path.abspath(__file__))

_SPLITS = {
    "omniglot": ("background", "evaluation"),
    "lfw": ("train", "test", "all"),
    "orl": ("train", "test", "all"),
    "mnist": ("test", "probe_train", "probe_test"),
    "emoji": ("train", "test"),
    "coco_mini": ("train", "val"),
}
_FILES = {
    "omniglot": "omniglot.npz",
    "lfw": "lfw_subset.npz",
    "orl": "orl_faces.npz",
    "mnist": "mnist_test.npz",
    "emoji": "emoji_captions.npz",
    "emoji_annotations": "emoji_annotations.npz",  # CLDR names and keywords of the emoji, row for row
    "coco_mini": "coco_captions_mini.npz",
}
LFW_TEST_FRACTION = 0.2
ORL_TEST_SUBJECTS = 10
EMOJI_TEST_FRACTION = 0.2
_TABLES = frozenset(
    ("alphabet_names", "identity_names", "category_names", "subcategory_names", "license_names")
)


def names():
    """Names of the bundled datasets."""
    return tuple(sorted(_SPLITS))


def splits(name):
    """Split names of one dataset.

    Args:
      name: str. A dataset name from `names()`.
    """
    if name not in _SPLITS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {names()}")
    return _SPLITS[name]


def load(name, split, *, source="bundled", size=None):
    """Load one split of a dataset as a dict of read-only numpy arrays.

    Args:
      name: str. A dataset name from `names()`.
      split: str. A split name from `splits(name)`.
      source: str. "bundled" (the shipped npz files, offline) or "tfds" (the full public dataset
        through tensorflow_datasets).
      size: int or None. Omniglot image side, 28 (default) or 105; must be None otherwise.
    """
    if split not in splits(name):
        raise ValueError(f"unknown split {split!r} for {name!r}; expected one of {splits(name)}")
    if source not in ("bundled", "tfds"):
        raise ValueError(f"source must be 'bundled' or 'tfds', got {source!r}")
    if name == "omniglot":
        size = 28 if size is None else size
        if size not in (28, 105):
            raise ValueError(f"omniglot size must be 28 or 105, got {size!r}")
    elif size is not None:
        raise ValueError(f"size is only for omniglot; {name!r} has one size, got size={size!r}")
    if source == "tfds":
        from zoo.data import tfds

        data = tfds.load(name, split, size=size)
    else:
        data = _BUNDLED[name](split, size)
    for value in data.values():
        value.setflags(write=False)
    return data


def omniglot_oneshot_runs(size=28):
    """Lake et al.'s 20 runs of 20-way one-shot classification on the evaluation alphabets.

    Returns train_images (20 runs, 20 classes, H, W, 1), test_images (20, 20, H, W, 1), answers
    (20, 20) int64 (for run r and test item k, the index of the matching training image), and
    train_labels / test_labels (20, 20) int64 global character ids.

    Args:
      size: int. Image side, 28 or 105.

    Reference:
      Lake, Salakhutdinov & Tenenbaum, "Human-level concept learning through probabilistic
      program induction", Science 2015.
    """
    if size not in (28, 105):
        raise ValueError(f"omniglot size must be 28 or 105, got {size!r}")
    f = _archive("omniglot")
    images = f[f"images_{size}"]
    train, test = f["oneshot_run_train_idx"], f["oneshot_run_test_idx"]
    out = {
        "train_images": images[train][..., None],
        "test_images": images[test][..., None],
        "answers": f["oneshot_run_test_answer"].astype(np.int64),
        "train_labels": f["label"][train].astype(np.int64),
        "test_labels": f["label"][test].astype(np.int64),
    }
    for value in out.values():
        value.setflags(write=False)
    return out


def sized(name) -> bool:
    """Whether `load(name, split, size=...)` takes a size (Omniglot comes at 28 and 105)."""
    return name == "omniglot"


def held_out_extras(spec, size=None) -> dict:
    """What a held-out split brings for the protocols beyond its arrays: Lake's one-shot runs on Omniglot's
    evaluation alphabets (`runs`), the emoji categories described by their subcategories' names
    (`category_descriptions`); {} for the others.

    Args:
        spec: str. "dataset/split".
        size: int | None. the image side (Omniglot's runs come at 28 and 105).
    """
    if spec == "omniglot/evaluation":
        return {"runs": omniglot_oneshot_runs(size=size or 28)}
    if spec.startswith("emoji/"):
        return {"category_descriptions": emoji_category_descriptions()}
    return {}


def emoji_category_descriptions():
    """Each of the 10 emoji categories named by itself and its subcategories (the Unicode emoji
    taxonomy), read off the train split: [['Activities', 'arts & crafts', 'award-medal', ...], ...],
    in the order of `category_names`. For zero-shot prompts that describe a class by its sub-classes;
    no test image or label is used.
    """
    train = load("emoji", "train")
    return [[str(name)] + [str(train["subcategory_names"][s])
                           for s in np.unique(train["subcategory_labels"][train["labels"] == c])]
            for c, name in enumerate(train["category_names"])]


@functools.lru_cache(maxsize=None)
def _archive(name):
    """All arrays of one bundled npz file, loaded once per process and made read-only."""
    path = os.path.join(_DIR, _FILES[name])
    if not os.path.exists(path):
        raise FileNotFoundError(f"bundled dataset file missing: {path} (see PROVENANCE.md)")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for value in arrays.values():
        value.setflags(write=False)
    return arrays


def _rows(data, index):
    """Select rows of every per-row array; a contiguous index gives views instead of copies."""
    index = np.asarray(index)
    if index.dtype == bool:
        index = np.flatnonzero(index)
    if len(index) and index[-1] - index[0] + 1 == len(index) and np.all(np.diff(index) == 1):
        index = slice(int(index[0]), int(index[-1]) + 1)
    return {k: v if k in _TABLES else v[index] for k, v in data.items()}


def _rng():
    return np.random.default_rng(SPLIT_SEED)


def identity_split(n_identities, test_fraction=LFW_TEST_FRACTION):
    """Sorted identity ids of the held-out side of an identity split.

    Args:
      n_identities: int. Number of identities (ids 0..n-1).
      test_fraction: float. Share of identities held out, rounded to the nearest count.
    """
    n_test = int(round(test_fraction * n_identities))
    return np.sort(_rng().permutation(n_identities)[:n_test])


def stratified_halves(labels):
    """Boolean mask of the first half of a stratified half/half split (every class within one).

    Args:
      labels: array (N,) int. Class of each row.
    """
    labels = np.asarray(labels)
    order = np.lexsort((_rng().random(len(labels)), labels))  # by class, random within class
    first = np.zeros(len(labels), bool)
    first[order[0::2]] = True
    return first


def split_by_identity(data, split, test_ids):
    """Rows of `data` on the requested side (`train`, `test` or `all`) of an identity split."""
    if split == "all":
        return data
    in_test = np.isin(data["labels"], test_ids)
    return _rows(data, in_test if split == "test" else ~in_test)


def _omniglot(split, size):
    f = _archive("omniglot")
    data = {
        "images": f[f"images_{size}"][..., None],
        "labels": f["label"].astype(np.int64),
        "alphabet": f["alphabet"].astype(np.int64),
        "alphabet_names": f["alphabet_names"],
        "drawer": f["drawer"].astype(np.int64),
        "character_in_alphabet": f["character_in_alphabet"].astype(np.int64),
    }
    return _rows(data, f["split"] == list(f["split_names"]).index(split))


def _lfw(split, size):
    f = _archive("lfw")
    data = {
        "images": f["images"],
        "labels": f["identity"].astype(np.int64),
        "identity_names": f["identity_names"],
        "image_number": f["image_number"].astype(np.int64),
    }
    return split_by_identity(data, split, identity_split(len(f["identity_names"])))


def _orl(split, size):
    f = _archive("orl")
    data = {
        "images": f["images"][..., None],
        "labels": f["subject"].astype(np.int64),
        "image_index": f["image_index"].astype(np.int64),
    }
    n_subjects = int(data["labels"].max()) + 1
    return split_by_identity(data, split, identity_split(n_subjects, ORL_TEST_SUBJECTS / n_subjects))


def mnist_split(data, split):
    """Rows of an MNIST test dict for `test`, `probe_train` or `probe_test`."""
    if split == "test":
        return data
    first = stratified_halves(data["labels"])
    return _rows(data, first if split == "probe_train" else ~first)


def _mnist(split, size):
    f = _archive("mnist")
    data = {"images": f["x_test"][..., None], "labels": f["y_test"].astype(np.int64)}
    return mnist_split(data, split)


@functools.lru_cache(maxsize=None)
def _emoji_test_mask():
    f = _archive("emoji")
    images, category = f["images"], f["category"]
    # One group per distinct image, so that identical images never straddle the split.
    _, first, group = np.unique(
        images.reshape(len(images), -1), axis=0, return_index=True, return_inverse=True
    )
    group = group.ravel()
    rng = _rng()
    test_groups = []
    for c in range(len(f["category_names"])):
        groups = np.flatnonzero(category[first] == c)  # distinct images of category c
        n_test = int(round(EMOJI_TEST_FRACTION * len(groups)))
        test_groups.append(rng.permutation(groups)[:n_test])
    mask = np.isin(group, np.concatenate(test_groups))
    mask.setflags(write=False)
    return mask


def _emoji(split, size):
    f = _archive("emoji")
    subcategory_names, subcategory_labels = np.unique(f["subcategory"], return_inverse=True)
    data = {
        "images": f["images"],
        "labels": f["category"].astype(np.int64),
        "category_names": f["category_names"],
        "subcategory": f["subcategory"],
        "subcategory_labels": subcategory_labels.ravel().astype(np.int64),
        "subcategory_names": subcategory_names,
        "captions": f["caption"],
        "short_names": f["short_names"],
        "unified": f["unified"],
    }
    annotations = _archive("emoji_annotations")
    if not np.array_equal(annotations["unified"], f["unified"]):
        raise ValueError("emoji_annotations.npz does not list the emoji of emoji_captions.npz in the same order; "
                         "rebuild it with build_npz.py (see PROVENANCE.md)")
    data["cldr_names"], data["keywords"] = annotations["cldr_name"], annotations["keywords"]
    test = _emoji_test_mask()
    return _rows(data, test if split == "test" else ~test)


def _coco_mini(split, size):
    f = _archive("coco_mini")
    rows = np.flatnonzero(f["split"] == ("train", "val").index(split))
    data = _rows(
        {
            "images": f["images"],
            "captions": f["captions"],
            "image_id": f["image_id"],
            "license": f["license"].astype(np.int64),
            "license_names": f["license_names"],
        },
        rows,
    )
    data["labels"] = np.arange(len(rows), dtype=np.int64)
    return data


_BUNDLED = {
    "omniglot": _omniglot,
    "lfw": _lfw,
    "orl": _orl,
    "mnist": _mnist,
    "emoji": _emoji,
    "coco_mini": _coco_mini,
}
