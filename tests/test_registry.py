"""zoo.registry: Card validation and round-trip, the zoo root, list/info, sha256 checks and load."""

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.registry import Card

# sha256 known answers (FIPS 180-2 example "abc", and the empty message).
SHA_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
SHA_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

CARD = {
    "name": "facenet_triplet", "method": "Triplet", "dataset": "lfw",
    "splits": {"train": "lfw/train", "test": "lfw/test"}, "input_shape": [48, 48, 3], "embedding_dim": 64,
    "metric": "cosine", "threshold": 1.1, "metrics": {"accuracy": 0.81, "few_shot": {"mean": 0.5, "ci95": 0.01}},
    "primary_metric": "accuracy", "protocol": "verification", "trained_with_labels": True,
    "anchor": "FaceNet 99.63% (full LFW)",
    "recipe": "python recipes/facenet_triplet.py", "paper": "Schroff et al. 2015", "data_license": "unknown",
    "created": "2025-01-02T03:04:05+00:00", "training": {"steps": 10, "backend": "tensorflow"},
    "towers": {"embedder": {"input": "images", "shape": [48, 48, 3], "dtype": "float32", "onnx": "embedder.onnx",
                            "keras": "embedder.keras", "saved_model": "saved_model"}},
    "int8": {"fp32": 0.81, "int8": 0.8, "kept": True, "calibration_images": 256}, "extras": {},
    "preprocessing": {"color": "rgb", "fit": "pad", "resize": {"method": "box", "size": [48, 48]}},
    "files": {"a.bin": SHA_ABC, "sub/empty.bin": SHA_EMPTY},
}


def card_dict(**changes):
    data = copy.deepcopy(CARD)
    data.update(changes)
    return data


def write_entry(root, name, **changes):
    folder = Path(root) / name
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"abc")
    (folder / "sub" / "empty.bin").write_bytes(b"")
    (folder / "card.json").write_text(json.dumps(card_dict(name=name, **changes)))
    return folder


def test_an_older_self_supervised_card_reads_as_few_shot_without_labels():
    card = Card.from_json(card_dict(protocol="self_supervised", trained_with_labels=None))
    assert (card.protocol, card.trained_with_labels) == ("few_shot", False)
    with pytest.raises(ValueError, match="trained_with_labels must be true, false or null"):
        Card.from_json(card_dict(trained_with_labels="yes"))


def test_card_round_trip():
    card = Card.from_json(CARD)
    assert card.input_shape == (48, 48, 3)
    assert card.to_dict() == CARD and list(card.to_dict()) == list(CARD)
    assert json.loads(card.to_json()) == CARD
    assert Card.from_json(json.loads(card.to_json())) == card
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.name = "other"


def test_card_from_path_and_folder(tmp_path):
    folder = write_entry(tmp_path, "facenet_triplet")
    assert Card.from_json(folder / "card.json") == Card.from_json(folder) == Card.from_json(CARD)
    with pytest.raises(FileNotFoundError, match="no card.json"):
        Card.from_json(tmp_path / "nowhere")
    (folder / "card.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Card.from_json(folder)


def test_card_defaults_for_optional_fields():
    data = card_dict()
    for key in ("anchor", "threshold", "int8", "training", "extras", "files"):
        del data[key]
    card = Card.from_json(data)
    assert (card.anchor, card.threshold, card.int8, card.training, card.extras, card.files) == ("", None, None,
                                                                                             {}, {}, {})


@pytest.mark.parametrize("changes, message", [
    ({"colour": "red"}, "unknown fields \\['colour'\\]"),
    ({"protocol": "retrieval"}, "protocol must be one of"),
    ({"primary_metric": "auc"}, "primary_metric 'auc' is not a key of metrics"),
    ({"input_shape": [48, 48]}, "input_shape must be"),
    ({"embedding_dim": 0}, "embedding_dim must be a positive int"),
    ({"metric": "euclidean"}, "metric must be 'cosine'"),
    ({"threshold": "1.0"}, "threshold must be a float"),
    ({"created": "yesterday"}, "ISO-8601"),
    ({"towers": {}}, "at least one tower"),
    ({"towers": {"embedder": {"input": "images"}}}, "lacks \\['shape'"),
    ({"int8": {"fp32": 1.0}}, "int8 must be None or a dict"),
    ({"splits": ["train"]}, "splits must be a dict"),
])
def test_card_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        Card.from_json(card_dict(**changes))


def test_card_missing_required_field():
    data = card_dict()
    del data["method"], data["recipe"]
    with pytest.raises(ValueError, match=r"'facenet_triplet' lacks required fields \['method', 'recipe'\]"):
        Card.from_json(data)


def test_card_tower_dtype_must_match_input():
    towers = copy.deepcopy(CARD["towers"])
    towers["embedder"]["dtype"] = "int32"
    with pytest.raises(ValueError, match="input 'images' of dtype 'int32'"):
        Card.from_json(card_dict(towers=towers))


def test_exports_dir_default_env_and_root(monkeypatch, tmp_path):
    monkeypatch.delenv("ZOO_EXPORTS", raising=False)
    assert registry.EXPORTS_DIR == Path(zoo.__file__).resolve().parent.parent / "exports"
    assert registry.exports_dir() == registry.EXPORTS_DIR
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path / "env"))
    assert registry.exports_dir() == tmp_path / "env"
    assert registry.exports_dir(tmp_path / "arg") == tmp_path / "arg"
    write_entry(tmp_path / "env", "from_env")
    assert registry.list_models() == ["from_env"]


def test_list_models_and_info(tmp_path):
    assert registry.list_models(tmp_path / "missing") == []
    write_entry(tmp_path, "siamese_contrastive")
    write_entry(tmp_path, "facenet_triplet")
    (tmp_path / "no_card").mkdir()
    write_entry(tmp_path, ".tmp-facenet_triplet-x1")  # a publish in progress
    assert registry.list_models(tmp_path) == ["facenet_triplet", "siamese_contrastive"]
    assert registry.info("facenet_triplet", root=tmp_path) == Card.from_json(CARD)
    with pytest.raises(KeyError, match=r"did you mean \['facenet_triplet'\].*available: \['facenet_triplet', "
                                       r"'siamese_contrastive'\]"):
        registry.info("facenet_triplt", root=tmp_path)


def test_file_hashes_known_answers(tmp_path):
    folder = write_entry(tmp_path, "facenet_triplet")
    assert registry.file_sha256(folder / "a.bin") == SHA_ABC
    assert registry.folder_sha256(folder) == {"a.bin": SHA_ABC, "sub/empty.bin": SHA_EMPTY}  # card.json excluded


def test_verify_files(tmp_path):
    folder = write_entry(tmp_path, "facenet_triplet")
    card = Card.from_json(folder)
    registry.verify_files(folder, card)
    (folder / "a.bin").write_bytes(b"abd")
    with pytest.raises(ValueError, match=f"sha256 mismatch for .*a.bin: expected {SHA_ABC}"):
        registry.verify_files(folder, card)
    (folder / "a.bin").write_bytes(b"abc")
    (folder / "sub" / "empty.bin").unlink()
    with pytest.raises(FileNotFoundError, match="empty.bin"):
        registry.verify_files(folder, card)
    with pytest.raises(ValueError, match="lists no files"):
        registry.verify_files(folder, dataclasses.replace(card, files={}))


def test_import_registry_imports_neither_keras_nor_tensorflow():
    code = ("import sys, zoo, zoo.registry; zoo.Card; "
            "assert not {'keras', 'tensorflow'} & set(sys.modules), sorted(m for m in sys.modules if 'keras' in m)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def published(tiny_entry):
    """The session's published tiny embedder (tests/conftest.py): (root, model)."""
    return tiny_entry.root, tiny_entry.model


@pytest.fixture
def entry(published, tmp_path):
    """A private copy of the published entry, free to tamper with: (root, model)."""
    root, model = published
    shutil.copytree(root / "tiny", tmp_path / "tiny")
    return tmp_path, model


def test_load_gives_the_published_model(published):
    root, model = published
    assert registry.list_models(root) == ["tiny"]
    loaded = registry.load("tiny", root=root)
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=0, atol=1e-6)
    with pytest.raises(KeyError, match="no tower 'text_encoder'"):
        registry.load("tiny", tower="text_encoder", root=root)
    with pytest.raises(KeyError, match=r"did you mean \['tiny'\]"):
        registry.load("tine", root=root)


@pytest.mark.parametrize("relpath", ["embedder.keras", "embedder.onnx"])
def test_load_rejects_tampered_files(entry, relpath):
    root, _ = entry
    path = root / "tiny" / relpath
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"sha256 mismatch for .*{relpath}"):
        registry.load("tiny", root=root)


def test_load_without_verify_skips_the_check(entry):
    root, _ = entry
    (root / "tiny" / "embedder.onnx").write_bytes(b"tampered")
    assert registry.load("tiny", root=root, verify=False).inputs[0].name == "images"


def test_load_reports_missing_file(entry):
    root, _ = entry
    os.remove(root / "tiny" / "saved_model" / "saved_model.pb")
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        registry.load("tiny", root=root)


@pytest.mark.parametrize("contract, message", [
    ({"color": "grey", "resize": {"size": [48, 48]}}, "preprocessing.color must be rgb"),
    ({"color": "rgb", "resize": {"size": [28, 28]}}, r"preprocessing.resize.size must be \[48, 48\]"),
    ({"color": "rgb", "fit": "squash", "resize": {"size": [48, 48]}}, "preprocessing.fit must be"),
    ({"color": "rgb", "resize": {"size": [48, 48]}, "face": {"template": [[0, 0]], "frame": [9, 9]}},
     "5-point template"),
])
def test_card_refuses_a_contract_that_does_not_fit_its_input(contract, message):
    with pytest.raises(ValueError, match=message):
        Card.from_json({**CARD, "preprocessing": contract})
