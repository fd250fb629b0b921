"""One parametrised test over every published entry: integrity, and Keras = SavedModel = ONNX (= int8 shape)."""

import json

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.runtime import OnnxEmbedder, Tokenizer

ENTRIES = registry.list_models()
ATOL = 1e-5
MIN_COSINE = 0.99999


def test_the_zoo_is_not_empty():
    assert ENTRIES, f"no published entries under {registry.exports_dir()}"


def tower_inputs(spec, batch, seed):
    """Random inputs of a tower: raw pixels 0..255, or byte-token rows with an end token and padding."""
    rng = np.random.default_rng(seed)
    if spec["input"] == "images":
        return rng.uniform(0, 255, (batch, *spec["shape"])).astype("float32")
    length = spec["shape"][0]
    ids = np.zeros((batch, length), np.int32)
    for row, n in enumerate(rng.integers(0, length, batch)):
        ids[row, :n] = rng.integers(2, Tokenizer.vocab_size, n)
        ids[row, n] = Tokenizer.end_id
    return ids


def assert_same(a, b, what):
    assert a.shape == b.shape, what
    assert np.abs(a - b).max() <= ATOL, f"{what}: max abs diff {np.abs(a - b).max():.2e} > {ATOL}"
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= MIN_COSINE, f"{what}: cosine {cosine.min()}"


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_loads_verified_and_all_formats_agree(name):
    import onnxruntime as ort
    import tensorflow as tf

    card = zoo.info(name)
    folder = registry.exports_dir() / name
    registry.verify_files(folder, card)
    assert set(card.files) == set(registry.folder_sha256(folder)), "card.files must list every file"
    assert card.primary_metric in card.metrics
    golden = np.load(folder / "golden.npz")
    for role, spec in card.towers.items():
        keras_model = zoo.load(name, tower=role)
        saved = tf.saved_model.load(str(folder / spec["saved_model"])).signatures["serving_default"]
        session = ort.InferenceSession(str(folder / spec["onnx"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [spec["input"]]
        assert [o.name for o in session.get_outputs()] == ["embeddings"]
        metadata = json.loads(session.get_modelmeta().custom_metadata_map["zoo_card"])
        assert metadata["name"] == name and metadata["metrics"] == card.metrics
        cases = {"golden": golden[f"{role}__inputs"]}
        cases.update({f"random batch {b}": tower_inputs(spec, b, seed=b) for b in (1, 7, 32)})
        for case, x in cases.items():
            k = np.asarray(keras_model.predict_on_batch(x))
            s = saved(**{spec["input"]: tf.constant(x)})["embeddings"].numpy()
            o = session.run(["embeddings"], {spec["input"]: x})[0]
            assert_same(k, s, f"{name}/{role} {case}: Keras vs SavedModel")
            assert_same(k, o, f"{name}/{role} {case}: Keras vs ONNX")
            np.testing.assert_allclose(np.linalg.norm(o, axis=1), 1.0, atol=1e-5)
            if case == "golden":
                assert_same(k, golden[f"{role}__embeddings"], f"{name}/{role}: Keras vs golden.npz")


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_runtime_and_int8(name):
    card = zoo.info(name)
    folder = registry.exports_dir() / name
    embedder = OnnxEmbedder(folder)
    x = tower_inputs({"input": "images", "shape": card.input_shape}, 5, seed=3)
    e = embedder.embed(x)
    assert e.shape == (5, card.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    if card.int8:
        assert card.int8["kept"] == (card.int8["file"] is not None) == (card.int8["file"] in card.files)
        assert card.int8["kept"] == (card.int8["fp32"] - card.int8["int8"] <= card.int8["max_drop"] == 0.01
                                     and card.int8["golden_min_cosine"] >= card.int8["min_cosine"] == 0.98)


@pytest.mark.parametrize("name", [n for n in ENTRIES if (zoo.info(n).int8 or {}).get("kept")])
def test_int8_graph_agrees_with_fp32_on_this_cpu(name):
    """On whatever CPU runs the suite: the shipped int8 graph itself (no runtime fallback) against fp32 on the
    held-out golden images, at the card's gate (cosine >= 0.98)."""
    import onnxruntime as ort

    from zoo.runtime import int8_cpu_class

    card = zoo.info(name)
    folder = registry.exports_dir() / name
    role = next(iter(card.towers))
    with np.load(folder / "golden.npz") as golden:
        real, fp32 = golden[f"{role}__inputs"], golden[f"{role}__embeddings"]
    session = ort.InferenceSession(str(folder / card.int8["file"]), providers=["CPUExecutionProvider"])
    q = session.run(["embeddings"], {"images": real})[0]
    cosine = np.sum(q * fp32, axis=1) / np.linalg.norm(q, axis=1)
    assert cosine.min() >= card.int8["min_cosine"], (f"int8 vs fp32 cosine {cosine.round(4)} on {int8_cpu_class()}; "
                                                     f"the card validated {card.int8['validated_on']}")
    runtime = OnnxEmbedder(folder, int8=True)
    assert runtime.int8 and (runtime.int8_check is None) == (int8_cpu_class() in card.int8["validated_on"])


def test_clip_zero_shot_through_onnxruntime_gives_the_cards_numbers():
    """The card's zero-shot numbers (zoo.protocols on the Keras towers, in the recipe) again from the ONNX graphs,
    and from the runtime's own prompt-ensemble classifier."""
    if "clip" not in ENTRIES:
        pytest.skip("no clip entry published")
    from zoo import protocols
    from zoo.runtime import OnnxCLIP

    card = zoo.info("clip")
    runtime = OnnxCLIP(registry.exports_dir() / "clip")
    test = protocols.test_data(card)
    templates = card.extras["templates"]
    metrics = protocols.zero_shot(runtime.encode_image, runtime.encode_text, test, templates=templates)
    for key in ("image_to_text_recall@5", "zero_shot_category_top1", "zero_shot_category_top1_with_subcategory_names",
                "zero_shot_subcategory_top1"):
        assert metrics[key] == pytest.approx(card.metrics[key], abs=1e-9), key
    names = [protocols.words(n) for n in test["category_names"]]
    predictions, _ = runtime.zero_shot(test["images"], names, templates=templates)
    assert float(np.mean(predictions == test["labels"])) == pytest.approx(card.metrics["zero_shot_category_top1"],
                                                                          abs=1e-9)
