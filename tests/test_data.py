"""Bundled datasets: splits, shapes, metadata, and the TFDS converters on in-memory examples."""

import numpy as np
import pytest

import zoo.data as zd
from zoo.data import tfds as ztfds

ALL = [(name, split) for name in zd.names() for split in zd.splits(name)]


def test_names_and_splits():
    assert zd.names() == ("coco_mini", "emoji", "lfw", "mnist", "omniglot", "orl")
    assert zd.splits("omniglot") == ("background", "evaluation")
    with pytest.raises(KeyError, match="omniglot"):
        zd.load("cifar", "train")
    with pytest.raises(ValueError, match="background"):
        zd.load("omniglot", "train")
    with pytest.raises(ValueError, match="28 or 105"):
        zd.load("omniglot", "background", size=64)
    with pytest.raises(ValueError, match="only for omniglot"):
        zd.load("lfw", "train", size=28)
    with pytest.raises(ValueError, match="bundled"):
        zd.load("lfw", "train", source="web")


@pytest.mark.parametrize("name,split", ALL)
def test_common_format(name, split):
    d = zd.load(name, split)
    images, labels = d["images"], d["labels"]
    assert images.dtype == np.uint8 and images.ndim == 4
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    for key, value in d.items():
        assert not value.flags.writeable, key
        if key not in zd._TABLES:
            assert len(value) == len(images), key
    with pytest.raises(ValueError):
        images[0, 0, 0, 0] = 1


def test_omniglot():
    bg, ev = zd.load("omniglot", "background"), zd.load("omniglot", "evaluation")
    assert bg["images"].shape == (19280, 28, 28, 1) and ev["images"].shape == (13180, 28, 28, 1)
    assert np.array_equal(np.unique(bg["labels"]), np.arange(964))
    assert np.array_equal(np.unique(ev["labels"]), np.arange(964, 1623))
    assert np.all(np.bincount(bg["labels"]) == 20)
    assert len(np.unique(bg["alphabet"])) == 30 and len(np.unique(ev["alphabet"])) == 20
    assert not set(bg["alphabet"]) & set(ev["alphabet"])
    # Every character of an alphabet has its own character_in_alphabet number, from 1.
    for a in (bg["alphabet"][0], ev["alphabet"][0]):
        d = bg if a in bg["alphabet"] else ev
        chars = d["character_in_alphabet"][d["alphabet"] == a].reshape(-1, 20)
        assert np.all(chars == chars[:, :1]) and chars[:, 0].min() == 1
        assert len(np.unique(chars[:, 0])) == len(chars)
    assert np.array_equal(bg["drawer"][:20], np.arange(1, 21))
    big = zd.load("omniglot", "evaluation", size=105)
    assert big["images"].shape == (13180, 105, 105, 1)
    assert set(np.unique(big["images"])) == {0, 255}
    assert big["images"].mean() > 200  # 255 = paper: mostly white
    # The 28-pixel images are 4x4-ish area averages of the 105-pixel ones.
    assert abs(big["images"][:50].mean() - ev["images"][:50].mean()) < 2


def test_omniglot_oneshot_runs():
    runs = zd.omniglot_oneshot_runs()
    assert runs["train_images"].shape == (20, 20, 28, 28, 1)
    assert runs["test_images"].shape == (20, 20, 28, 28, 1)
    answers, train, test = runs["answers"], runs["train_labels"], runs["test_labels"]
    for r in range(20):
        assert len(set(train[r])) == 20  # 20-way
        for k in range(20):
            assert train[r, answers[r, k]] == test[r, k]
            assert not np.array_equal(runs["train_images"][r, answers[r, k]], runs["test_images"][r, k])
    assert train.min() >= 964  # evaluation alphabets only
    assert zd.omniglot_oneshot_runs(105)["test_images"].shape == (20, 20, 105, 105, 1)


def test_lfw_identity_split():
    train, test, full = (zd.load("lfw", s) for s in ("train", "test", "all"))
    assert len(full["identity_names"]) == 158 and len(full["images"]) == 4324
    assert (len(train["images"]), len(test["images"])) == (3683, 641)
    train_ids, test_ids = set(train["labels"]), set(test["labels"])
    assert len(test_ids) == 32 and len(train_ids) == 126
    assert not train_ids & test_ids and train_ids | test_ids == set(range(158))
    assert full["images"].shape[1:] == (48, 48, 3)
    # The split is pinned: trained cards report metrics on exactly these people.
    test_names = full["identity_names"][np.unique(test["labels"])]
    assert list(test_names[:4]) == ["Andre_Agassi", "Ari_Fleischer", "Bill_McBride", "Halle_Berry"]
    assert np.array_equal(test["labels"], np.sort(test["labels"]))
    bush = list(full["identity_names"]).index("George_W_Bush")
    assert np.sum(full["labels"] == bush) == 530


def test_orl_subject_split():
    train, test, full = (zd.load("orl", s) for s in ("train", "test", "all"))
    assert full["images"].shape == (400, 112, 92, 1)
    assert (len(train["images"]), len(test["images"])) == (300, 100)
    assert sorted(set(test["labels"])) == [1, 2, 3, 4, 11, 18, 23, 24, 27, 34]  # pinned
    assert not set(train["labels"]) & set(test["labels"])
    assert np.all(np.bincount(test["labels"])[list(set(test["labels"]))] == 10)


def test_mnist_probe_split():
    full = zd.load("mnist", "test")
    a, b = zd.load("mnist", "probe_train"), zd.load("mnist", "probe_test")
    assert full["images"].shape == (10000, 28, 28, 1)
    assert len(a["labels"]) == len(b["labels"]) == 5000
    counts = np.bincount(full["labels"])
    assert np.array_equal(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert np.all(np.abs(np.bincount(a["labels"]) - np.bincount(b["labels"])) <= 1)
    mask = zd.stratified_halves(full["labels"])
    assert np.array_equal(a["images"], full["images"][mask])
    assert np.array_equal(b["images"], full["images"][~mask])


def test_emoji_split():
    train, test = zd.load("emoji", "train"), zd.load("emoji", "test")
    assert (len(train["images"]), len(test["images"])) == (1529, 382)
    assert train["images"].shape[1:] == (64, 64, 3)
    assert not set(train["unified"]) & set(test["unified"])
    # Identical images never straddle the split.
    assert not {x.tobytes() for x in train["images"]} & {x.tobytes() for x in test["images"]}
    for c in range(10):
        n_test, n = np.sum(test["labels"] == c), np.sum(test["labels"] == c) + np.sum(train["labels"] == c)
        assert abs(n_test - 0.2 * n) <= 2, train["category_names"][c]
    for d in (train, test):
        assert np.array_equal(d["subcategory_names"][d["subcategory_labels"]], d["subcategory"])
    i = list(train["captions"]).index("grinning face")
    assert train["category_names"][train["labels"][i]] == "Smileys & Emotion"
    assert train["unified"][i] == "1F600" and train["subcategory"][i] == "face-smiling"
    # CLDR annotations, row for row (emoji_annotations.npz).
    assert train["cldr_names"][i] == "grinning face" and "grin" in train["keywords"][i].split("|")
    flags = [k for k, c in enumerate(train["captions"]) if c.endswith(" flag") and train["subcategory"][k] == "country-flag"]
    assert flags and all(train["cldr_names"][k] == "flag: " + train["captions"][k][:-5] for k in flags[:3])
    assert all(len(d["cldr_names"]) == len(d["images"]) == len(d["keywords"]) for d in (train, test))


def test_every_bundled_file_matches_its_provenance_sha256():
    import hashlib
    import re
    from pathlib import Path

    folder = Path(zd.__file__).parent
    table = dict(re.findall(r"^\| (\S+\.npz) \| [0-9.]+ \| ([0-9a-f]{64}) \|$",
                            (folder / "PROVENANCE.md").read_text(), re.M))
    assert set(table) == {p.name for p in folder.glob("*.npz")}
    for name, digest in table.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_coco_mini():
    train, val = zd.load("coco_mini", "train"), zd.load("coco_mini", "val")
    assert train["images"].shape == (80, 96, 96, 3) and val["images"].shape == (159, 96, 96, 3)
    assert train["captions"].shape == (80, 5) and np.all(np.char.str_len(val["captions"]) > 0)
    assert np.array_equal(val["labels"], np.arange(159))
    assert not set(train["image_id"]) & set(val["image_id"])
    assert set(train["license"]) <= set(range(1, 9))


# --------------------------------------------------------------------------- TFDS converters


def test_tfds_unsupported_names():
    with pytest.raises(ValueError, match="no TFDS source"):
        zd.load("emoji", "train", source="tfds")  # fails before importing or downloading
    assert ztfds.tfds_split("omniglot", "evaluation") == "test"
    assert ztfds.tfds_split("mnist", "probe_train") == "test"


def test_tfds_omniglot_matches_bundled():
    import tensorflow as tf
    import tensorflow_datasets as tfds

    f = zd._archive("omniglot")
    rows = np.concatenate([np.arange(20 * c, 20 * c + 5) for c in (7, 3, 500)])  # 3 characters
    shuffled = np.random.default_rng(1).permutation(rows)
    examples = tf.data.Dataset.from_tensor_slices(
        {
            "image": np.repeat(f["images_105"][shuffled][..., None], 3, axis=-1),  # TFDS: RGB
            "alphabet": f["alphabet"][shuffled].astype(np.int64),
            "alphabet_char_id": f["character_in_alphabet"][shuffled].astype(np.int64) - 1,
            "label": f["label"][shuffled].astype(np.int64),
        }
    )
    names = list(f["alphabet_names"])
    out = ztfds.from_examples("omniglot", "background", tfds.as_numpy(examples), alphabet_names=names)
    order = np.argsort(f["label"][shuffled], kind="stable")
    expected = shuffled[order]
    assert out["images"].shape == (15, 28, 28, 1) and out["images"].dtype == np.uint8
    assert np.array_equal(out["images"][..., 0], f["images_28"][expected])  # same PIL BOX resize
    assert np.array_equal(out["labels"], f["label"][expected])
    assert np.array_equal(out["character_in_alphabet"], f["character_in_alphabet"][expected])
    assert np.array_equal(out["alphabet_names"][out["alphabet"]], f["alphabet_names"][f["alphabet"][expected]])
    assert np.all(out["drawer"] == -1)
    big = ztfds.omniglot(tfds.as_numpy(examples), names, size=105)
    assert np.array_equal(big["images"][..., 0], f["images_105"][expected])


def test_tfds_mnist_split_matches_bundled():
    full = zd.load("mnist", "test")
    examples = [{"image": im, "label": np.int64(y)} for im, y in zip(full["images"], full["labels"])]
    for split in ("test", "probe_test"):
        out = ztfds.from_examples("mnist", split, examples)
        ref = zd.load("mnist", split)
        assert np.array_equal(out["images"], ref["images"]) and np.array_equal(out["labels"], ref["labels"])


def _lfw_example(name, value):
    image = np.zeros((250, 250, 3), np.uint8)
    left, top, right, bottom = ztfds.LFW_BOX
    image[top:bottom, left:right] = value  # only the face box survives the crop
    return {"image": image, "label": name.encode()}


def test_tfds_lfw_crop_filter_and_identity_split():
    counts = {"Zed": 10, "Amy": 12, "Bob": 3, "Cat": 10, "Dan": 11}
    examples, value = [], {}
    for i, (name, n) in enumerate(counts.items()):
        value[name] = 20 * (i + 1)
        examples += [_lfw_example(name, value[name] + j) for j in range(n)]
    full = ztfds.from_examples("lfw", "all", examples)
    kept = ["Amy", "Cat", "Dan", "Zed"]  # >= 10 photos, alphabetical; Bob dropped
    assert list(full["identity_names"]) == kept
    assert full["images"].shape == (43, 48, 48, 3)
    for label, name in enumerate(kept):
        faces = full["images"][full["labels"] == label]
        assert np.array_equal(faces[:, 0, 0, 0], value[name] + np.arange(counts[name]))
        assert np.all(faces == faces[:, :1, :1, :1])  # nothing outside the box leaked in
    test = ztfds.from_examples("lfw", "test", examples)
    train = ztfds.from_examples("lfw", "train", examples)
    assert set(test["labels"]) == set(zd.identity_split(4))  # round(0.2 * 4) = 1 identity
    assert len(test["labels"]) + len(train["labels"]) == 43
    assert not set(test["labels"]) & set(train["labels"])
    with pytest.raises(ValueError, match="250, 250, 3"):
        ztfds.lfw([{"image": np.zeros((64, 64, 3), np.uint8), "label": b"X"}])


def test_tfds_coco_captions():
    wide = np.zeros((60, 100, 3), np.uint8)
    wide[:, 20:80] = 200  # the centre square is uniform; the side strips are cut off
    tall = np.full((100, 60, 3), 50, np.uint8)
    examples = [
        {
            "image": wide,
            "image/id": np.int64(42),
            "captions": {"text": np.array([b"f", b"b ", b"a", b"e", b"d", b"c"]), "id": np.array([6, 2, 1, 5, 4, 3])},
        },
        {
            "image": tall,
            "image/id": np.int64(7),
            "captions": {"text": np.array([b"v", b"w", b"x", b"y", b"z"]), "id": np.arange(5)},
        },
    ]
    out = ztfds.from_examples("coco_mini", "val", examples)
    assert out["images"].shape == (2, 96, 96, 3)
    assert np.all(out["images"][0] == 200) and np.all(out["images"][1] == 50)
    assert out["captions"].tolist() == [["a", "b", "c", "d", "e"], ["v", "w", "x", "y", "z"]]
    assert out["image_id"].tolist() == [42, 7] and out["labels"].tolist() == [0, 1]
    short = dict(examples[1], captions={"text": np.array([b"a"]), "id": np.array([1])})
    with pytest.raises(ValueError, match="expected >= 5"):
        ztfds.coco_captions([short])
