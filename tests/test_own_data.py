"""Your own data: folders in the three layouts read through the contract, their errors, the seeded class split,
and --data / --init / --name / --root on the recipes (a smoke fine-tune: parent -> child -> zoo.load)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
import zoo.data
from zoo import registry
from zoo.data.folders import read_folder, split_classes
from zoo.data.kits import EMOJI_PREPROCESSING, OMNIGLOT_PREPROCESSING
from zoo.runtime import read_image
from zoo.runtime.contract import prepare

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
GREY = (28, 28, 1)


def drawings(n, seed=0):
    """n Omniglot drawings of the evaluation alphabets, 105x105 (the original files' size)."""
    images = zoo.data.load("omniglot", "evaluation", size=105)["images"]
    return images[np.random.default_rng(seed).choice(len(images), n, replace=False)][..., 0]


def labelled_folder(root, classes=3, per_class=3):
    """DIR/<class>/<image> with files of several sizes and modes (grey PNG, RGBA PNG, JPEG)."""
    for c in range(classes):
        for i, image in enumerate(drawings(per_class, seed=c)):
            folder = root / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            if i % 3 == 0:
                Image.fromarray(image).save(folder / f"{i}.png")
            elif i % 3 == 1:
                Image.fromarray(np.dstack([image] * 3 + [np.full_like(image, 255)])).resize((80, 64)).save(
                    folder / f"{i}.png")
            else:
                Image.fromarray(image).save(folder / f"{i}.jpg", quality=95)
    return root


def test_labelled_folder_goes_through_the_contract(tmp_path):
    root = labelled_folder(tmp_path / "chars")
    data = read_folder(root, GREY, OMNIGLOT_PREPROCESSING)
    assert data["layout"] == "labelled" and data["images"].shape == (9, 28, 28, 1) and data["images"].dtype == np.uint8
    assert list(data["class_names"]) == ["class0", "class1", "class2"]
    assert list(data["labels"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2] and data["skipped"] == []
    for image, file in zip(data["images"], data["files"]):
        np.testing.assert_array_equal(image, prepare(read_image(file), OMNIGLOT_PREPROCESSING, GREY))


def test_unlabelled_and_captions_folders(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(drawings(4)):
        Image.fromarray(image).save(flat / f"{i}.png")
    data = read_folder(flat, GREY, OMNIGLOT_PREPROCESSING)
    assert data["layout"] == "unlabelled" and list(data["labels"]) == [0, 1, 2, 3]
    pairs = tmp_path / "pairs"
    (pairs / "img").mkdir(parents=True)
    emoji = zoo.data.load("emoji", "test")
    rows = ["image,caption"]
    for i in range(3):
        Image.fromarray(emoji["images"][i]).save(pairs / "img" / f"{i}.png")
        rows.append(f'img/{i}.png,"{emoji["captions"][i]}, drawn"')
    (pairs / "captions.csv").write_text("\n".join(rows) + "\n")
    data = read_folder(pairs, (64, 64, 3), EMOJI_PREPROCESSING)
    assert data["layout"] == "captions" and list(data["captions"]) == [f"{c}, drawn" for c in emoji["captions"][:3]]
    np.testing.assert_array_equal(data["images"], emoji["images"][:3])


def test_folder_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_folder(tmp_path / "missing", GREY, OMNIGLOT_PREPROCESSING)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty; expected DIR/<class>/<image>"):
        read_folder(tmp_path / "empty", GREY, OMNIGLOT_PREPROCESSING)
    mixed = labelled_folder(tmp_path / "mixed", classes=2, per_class=2)
    Image.fromarray(drawings(1)[0]).save(mixed / "loose.png")
    with pytest.raises(ValueError, match="both class subfolders .* and loose images"):
        read_folder(mixed, GREY, OMNIGLOT_PREPROCESSING)
    few = labelled_folder(tmp_path / "few", classes=2, per_class=2)
    (few / "class1" / "1.png").unlink()
    with pytest.raises(ValueError, match=r"at least 2 usable images; these have fewer: class1 \(1\)"):
        read_folder(few, GREY, OMNIGLOT_PREPROCESSING, min_per_class=2)
    broken = labelled_folder(tmp_path / "broken", classes=2, per_class=3)
    (broken / "class0" / "bad.png").write_text("not a picture")
    with pytest.warns(RuntimeWarning, match="skipped 1 of 7 files"):
        data = read_folder(broken, GREY, OMNIGLOT_PREPROCESSING)
    assert len(data["images"]) == 6 and data["skipped"][0][0].endswith("bad.png")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_text("no")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="none of its 1 files could be used"):
        read_folder(junk, GREY, OMNIGLOT_PREPROCESSING)
    csv_folder = tmp_path / "csv"
    csv_folder.mkdir()
    (csv_folder / "captions.csv").write_text("file,text\na.png,x\n")
    with pytest.raises(ValueError, match="expected the columns image,caption"):
        read_folder(csv_folder, (64, 64, 3), EMOJI_PREPROCESSING)


def test_class_split_is_seeded_and_disjoint():
    data = {"images": np.zeros((40, 2, 2, 1)), "labels": np.repeat(np.arange(10), 4), "layout": "labelled"}
    train, test = split_classes(data, 0.25, seed=3)
    assert len(np.unique(test["labels"])) == 2 and len(np.unique(train["labels"])) == 8
    assert not set(train["labels"]) & set(test["labels"]) and len(train["images"]) + len(test["images"]) == 40
    again, _ = split_classes(data, 0.25, seed=3)
    np.testing.assert_array_equal(again["labels"], train["labels"])
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            split_classes(data, fraction)
    with pytest.raises(ValueError, match="the folder has 1 class"):
        split_classes({**data, "labels": np.zeros(40, int)}, 0.5)


def run_recipe(name, argv, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    spec = importlib.util.spec_from_file_location(f"{name}_own_data", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def orl_folder(root, subjects, per_subject=4):
    orl = zoo.data.load("orl", "all")
    for s in subjects:
        for i in range(per_subject):
            path = root / f"s{s + 1}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(orl["images"][s * 10 + i][..., 0]).save(path)
    return root


def test_a_split_that_holds_out_one_class_is_refused_before_training(tmp_path):
    from dataclasses import dataclass

    from zoo.finetune import user_data
    from zoo.training import parse_config

    @dataclass
    class Config:
        name: str = "x"

    root = labelled_folder(tmp_path / "chars", classes=3, per_class=2)
    _, args = parse_config(Config, {}, ["--data", str(root), "--test-fraction", "0.2"])
    with pytest.raises(ValueError, match="holds out one class of 3"):
        user_data(args, GREY, OMNIGLOT_PREPROCESSING)


@pytest.mark.slow
def test_smoke_fine_tune_parent_to_child_to_zoo_load(tmp_path, monkeypatch):
    root = tmp_path / "R"
    parent = run_recipe("face", ["--preset", "facenet_triplet", "--smoke", "--root", str(root), "--workdir",
                                 str(tmp_path / "w1")], monkeypatch)
    faces = orl_folder(tmp_path / "faces", range(8))
    # No --preset: the parent's card names it (facenet_triplet).
    child = run_recipe("face", ["--smoke", "--data", str(faces), "--init", str(root / parent.name), "--name", "child",
                                "--root", str(root), "--workdir", str(tmp_path / "w2")], monkeypatch)
    assert child.name == "child" and (root / "child" / "card.json").is_file()
    assert child.recipe.startswith("python recipes/face.py --preset facenet_triplet --smoke --data ")  # not --name
    assert child.training["data"]["layout"] == "labelled" and child.training["data"]["held_out_classes"] == 2
    assert child.training["config"]["widths"] == parent.training["config"]["widths"]  # the parent's options
    record = child.extras["parent"]
    assert record["entry"] == parent.name and record["sha256"] == parent.files["embedder.keras"]
    assert set(record["metrics_on_held_out"]) >= {"verification_accuracy", "auc"}
    assert child.preprocessing == parent.preprocessing and child.splits["test"].endswith("#held_out")
    assert child.int8 is None
    model = zoo.load("child", root=root)
    x = zoo.data.load("lfw", "test")["images"][:2].astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(model.predict(x, verbose=0)), axis=1), 1.0, atol=1e-4)
    registry.verify_files(root / "child", registry.info("child", root))


@pytest.mark.slow
def test_simclr_on_an_unlabelled_folder_and_clip_on_captions(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(drawings(40)):
        Image.fromarray(image).save(flat / f"{i}.png")
    card = run_recipe("self_supervised", ["--preset", "simclr", "--smoke", "--data", str(flat), "--name", "mine",
                                          "--root", str(tmp_path / "R"), "--workdir", str(tmp_path / "w1")],
                      monkeypatch)
    assert card.primary_metric == "copy_recall@1" and card.metrics["images"] == 10  # 25% of 40 held out
    assert card.training["data"]["layout"] == "unlabelled"
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    emoji = zoo.data.load("emoji", "train")
    lines = ["image,caption"] + [f"{i}.png,{emoji['captions'][i]}" for i in range(24)]
    for i in range(24):
        Image.fromarray(emoji["images"][i]).save(pairs / f"{i}.png")
    (pairs / "captions.csv").write_text("\n".join(lines) + "\n")
    card = run_recipe("clip", ["--smoke", "--data", str(pairs), "--root", str(tmp_path / "R"),
                               "--workdir", str(tmp_path / "w2")], monkeypatch)
    assert card.metrics["test_images"] == 6 and "image_to_text_recall@5" in card.metrics
    assert json.loads((tmp_path / "R" / "clip" / "card.json").read_text())["training"]["data"]["layout"] == "captions"
