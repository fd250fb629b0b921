"""zoo.export.publish: the files of an entry, ONNX/SavedModel contract and parity, int8, atomicity, JAX backend."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import zoo.export
from zoo import registry
from zoo.export import publish

SHAPE = (16, 16, 1)
CARD_ARGS = dict(method="Triplet", dataset="synthetic", splits={"train": "synthetic/train"},
                 primary_metric="agreement", protocol="verification", recipe="python recipes/tiny.py",
                 paper="Schroff et al. 2015", data_license="CC0-1.0", threshold=0.9, anchor="none")


def tiny_image_embedder(seed=0):
    """Input 'images' (16, 16, 1) -> Rescaling -> Conv2D -> GAP -> Dense -> UnitNormalization."""
    keras.utils.set_random_seed(seed)
    images = keras.Input(SHAPE, name="images")
    x = keras.layers.Rescaling(1 / 255)(images)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8)(x)
    return keras.Model(images, keras.layers.UnitNormalization()(x))


def tiny_text_embedder(seed=1, vocab=50, length=6):
    """Input 'token_ids' int32 (6,) -> Embedding -> GlobalAveragePooling1D -> Dense -> UnitNormalization."""
    keras.utils.set_random_seed(seed)
    token_ids = keras.Input((length,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocab, 8)(token_ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(8)(x)
    return keras.Model(token_ids, keras.layers.UnitNormalization()(x))


def images(n, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE)).astype(np.uint8)


def mean_norm(embed_fn):
    """An evaluate() importable by the TensorFlow subprocess: mean L2 norm of the embeddings."""
    return {"norm": float(np.linalg.norm(embed_fn(images(20, seed=5)), axis=1).mean())}


def embed(model, x):
    return np.asarray(model(np.asarray(x, np.float32), training=False))


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One entry with int8 and an extra file: (root, model, card, eval_images, reference embeddings)."""
    root = tmp_path_factory.mktemp("exports")
    model = tiny_image_embedder()
    eval_images = images(64)
    reference = embed(model, eval_images)
    extra = tmp_path_factory.mktemp("extra") / "labels.txt"
    extra.write_text("a\nb\n")

    def agreement(embed_fn):  # mean cosine similarity with the Keras embeddings
        return {"agreement": float((embed_fn(eval_images) * reference).sum(axis=1).mean())}

    card = publish("tiny", model, metrics={"agreement": np.float32(1.0), "auc": 0.5}, training={"steps": 3},
                   calibration_images=eval_images, evaluate=agreement, extra_files=[extra], root=root, **CARD_ARGS)
    return root, model, card, eval_images, reference


def test_publish_writes_card_and_hashes_of_every_file(published):
    root, _, card, _, _ = published
    folder = root / "tiny"
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]  # no temporary folder left
    on_disk = snapshot(folder)
    assert on_disk.pop("card.json") == sha256(folder / "card.json")
    assert card.files == on_disk  # every other file, recursively, with its sha256
    assert {"embedder.keras", "embedder.onnx", "embedder.int8.onnx", "golden.npz", "labels.txt",
            "saved_model/saved_model.pb"} <= set(on_disk)
    assert (folder / "labels.txt").read_text() == "a\nb\n"
    assert registry.Card.from_json(folder) == card
    assert card.input_shape == SHAPE and card.embedding_dim == 8
    assert card.metrics == {"agreement": 1.0, "auc": 0.5} and card.training == {"steps": 3}
    assert card.towers == {"embedder": {"input": "images", "shape": [16, 16, 1], "dtype": "float32",
                                        "onnx": "embedder.onnx", "keras": "embedder.keras",
                                        "saved_model": "saved_model"}}
    assert datetime.fromisoformat(card.created).utcoffset() == timedelta(0)


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_onnx_names_dynamic_batch_and_parity(published, batch):
    root, model, _, _, _ = published
    session = ort.InferenceSession(str(root / "tiny" / "embedder.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name) == ("images", "tensor(float)", "embeddings")
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == list(SHAPE)
    x = images(batch, seed=batch).astype(np.float32)
    got = session.run(None, {"images": x})[0]
    assert got.shape == (batch, 8)
    np.testing.assert_allclose(got, embed(model, x), rtol=0, atol=1e-5)


def test_onnx_metadata_holds_the_card(published):
    root, _, card, _, _ = published
    proto = onnx.load(root / "tiny" / "embedder.onnx")
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    expected = card.to_dict()
    del expected["files"]
    assert json.loads(meta["zoo_card"]) == expected


def test_saved_model_serving_signature(published):
    import tensorflow as tf

    root, model, _, _, _ = published
    serve = tf.saved_model.load(str(root / "tiny" / "saved_model")).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["images"]
    x = images(5, seed=9).astype(np.float32)
    out = serve(images=tf.constant(x))
    assert list(out) == ["embeddings"]
    np.testing.assert_allclose(out["embeddings"].numpy(), embed(model, x), rtol=0, atol=1e-5)


def test_golden_npz_is_the_keras_output(published):
    root, model, _, _, _ = published
    with np.load(root / "tiny" / "golden.npz") as golden:
        assert sorted(golden.files) == ["embedder__embeddings", "embedder__inputs"]
        x = golden["embedder__inputs"]
        assert x.shape == (8, *SHAPE) and x.dtype == np.float32
        assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 255 and x.std() > 50
        np.testing.assert_allclose(golden["embedder__embeddings"], embed(model, x), rtol=0, atol=1e-6)


def test_int8_kept_with_both_numbers(published):
    root, _, card, eval_images, reference = published
    folder = root / "tiny"
    int8 = card.int8
    assert set(int8) == {"fp32", "int8", "kept", "calibration_images", "format"} and int8["calibration_images"] == 64
    assert "uint8 activations" in int8["format"]
    graph = onnx.load(str(folder / "embedder.int8.onnx")).graph
    dtypes = {i.name: i.data_type for i in graph.initializer}
    activations = [n for n in graph.node if n.op_type == "QuantizeLinear"]  # weights are stored quantised
    assert activations and all(dtypes[n.input[2]] == onnx.TensorProto.UINT8 for n in activations)
    assert int8["fp32"] == pytest.approx(1.0, abs=1e-5)  # fp32 ONNX agrees with Keras
    session = ort.InferenceSession(str(folder / "embedder.int8.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": eval_images.astype(np.float32)})[0]
    assert int8["int8"] == pytest.approx(float((got * reference).sum(axis=1).mean()), abs=1e-6)
    assert 0.9 < int8["int8"] < int8["fp32"] and int8["kept"] is True  # drop < 1 point here
    ops = {n.op_type for n in onnx.load(folder / "embedder.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "zoo_card" in {p.key for p in onnx.load(folder / "embedder.int8.onnx").metadata_props}


def test_two_towers_and_int8_dropped(tmp_path):
    image_model, text_model = tiny_image_embedder(), tiny_text_embedder()
    eval_images = images(32)
    reference = embed(image_model, eval_images)
    tokens = np.random.default_rng(2).integers(0, 50, (5, 6)).astype(np.int32)

    def sensitive(embed_fn):  # any int8 error costs far more than one point
        return {"agreement": -1000.0 * float(np.abs(embed_fn(eval_images) - reference).mean())}

    card = publish("duo", {"image_encoder": image_model, "text_encoder": text_model}, metrics={"agreement": 0.0},
                   golden_inputs={"text_encoder": tokens}, calibration_images=eval_images, evaluate=sensitive,
                   root=tmp_path, **{**CARD_ARGS, "protocol": "zero_shot"})
    folder = tmp_path / "duo"
    assert card.towers["text_encoder"] == {"input": "token_ids", "shape": [6], "dtype": "int32",
                                           "onnx": "text_encoder.onnx", "keras": "text_encoder.keras",
                                           "saved_model": "text_encoder_saved_model"}
    assert card.towers["image_encoder"]["saved_model"] == "saved_model"
    assert (folder / "text_encoder_saved_model" / "saved_model.pb").is_file()
    # int8 recorded but not kept: no file, and not listed.
    assert card.int8["kept"] is False and card.int8["fp32"] - card.int8["int8"] > 0.01
    assert abs(card.int8["fp32"]) < 1e-2
    assert not (folder / "image_encoder.int8.onnx").exists() and "image_encoder.int8.onnx" not in card.files

    session = ort.InferenceSession(str(folder / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name) == ("token_ids", "tensor(int32)", "embeddings")
    more = np.random.default_rng(3).integers(0, 50, (11, 6)).astype(np.int32)
    np.testing.assert_allclose(session.run(None, {"token_ids": more})[0], np.asarray(text_model(more)),
                               rtol=0, atol=1e-5)
    with np.load(folder / "golden.npz") as golden:
        assert np.array_equal(golden["text_encoder__inputs"], tokens)
        assert golden["image_encoder__inputs"].shape == (8, *SHAPE)
    loaded = registry.load("duo", tower="text_encoder", root=tmp_path)
    assert loaded.inputs[0].name == "token_ids"
    np.testing.assert_allclose(np.asarray(loaded(more)), np.asarray(text_model(more)), rtol=0, atol=1e-6)


def test_failed_publish_keeps_old_entry_and_republish_replaces_it(published, tmp_path, monkeypatch):
    root, model, _, _, _ = published
    shutil.copytree(root / "tiny", tmp_path / "tiny")
    before = snapshot(tmp_path / "tiny")

    def broken(serve):
        raise RuntimeError("injected ONNX failure")

    monkeypatch.setattr(zoo.export, "_to_onnx", broken)
    with pytest.raises(RuntimeError, match="injected ONNX failure"):
        publish("tiny", model, metrics={"agreement": 0.5}, root=tmp_path, **CARD_ARGS)
    assert snapshot(tmp_path / "tiny") == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]

    monkeypatch.undo()
    card = publish("tiny", model, metrics={"agreement": 0.5}, root=tmp_path, **CARD_ARGS)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # the old entry was removed after the swap
    assert registry.info("tiny", root=tmp_path) == card and card.metrics == {"agreement": 0.5}
    assert card.int8 is None and not (tmp_path / "tiny" / "embedder.int8.onnx").exists()


def test_publish_rejects_bad_input_before_writing(tmp_path):
    good = tiny_image_embedder()
    x = keras.Input(SHAPE, name="pixels")
    wrong_name = keras.Model(x, keras.layers.UnitNormalization()(keras.layers.Flatten()(x)))
    y = keras.Input(SHAPE, name="images")
    not_normalised = keras.Model(y, keras.layers.Dense(4)(keras.layers.Flatten()(y)))
    cases = [
        (dict(towers=wrong_name), "named 'images'"),
        (dict(towers=not_normalised), "L2-normalised"),
        (dict(towers=good, metrics={"auc": 1.0}), "primary_metric 'agreement' is not a key"),
        (dict(towers=good, calibration_images=images(4)), "both calibration_images and evaluate"),
        (dict(towers=good, golden_inputs=images(2)[:, :8]), r"golden_inputs\['embedder'\] must have shape"),
        (dict(towers={"image_encoder": good, "text_encoder": tiny_text_embedder()}), "is required"),
        (dict(towers={"text_encoder": tiny_text_embedder(), "image_encoder": good}), "must take 'images'"),
        (dict(towers=good, name="../evil"), "folder name"),
    ]
    for overrides, message in cases:
        kwargs = {"name": "bad", "metrics": {"agreement": 1.0}, **CARD_ARGS, **overrides}
        with pytest.raises(ValueError, match=message):
            publish(root=tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_publish_from_jax_backend(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import keras, numpy as np, onnxruntime as ort
        from test_export import CARD_ARGS, embed, images, mean_norm, tiny_image_embedder
        from zoo.export import publish
        assert keras.backend.backend() == "jax"
        model = tiny_image_embedder()
        card = publish("tinyjax", model, metrics={{"norm": 1.0}}, calibration_images=images(16), evaluate=mean_norm,
                       root={str(tmp_path)!r}, **{{**CARD_ARGS, "primary_metric": "norm"}})
        assert "tf2onnx" not in sys.modules  # the TensorFlow half ran in the subprocess
        x = images(7, seed=4).astype(np.float32)
        session = ort.InferenceSession({str(tmp_path / "tinyjax" / "embedder.onnx")!r})
        print("DIFF", float(np.abs(session.run(None, {{"images": x}})[0] - embed(model, x)).max()))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    diff = float(done.stdout.split("DIFF")[1])
    assert diff <= 1e-4  # JAX Keras vs TensorFlow-converted ONNX
    card = registry.info("tinyjax", root=tmp_path)
    assert card.int8["calibration_images"] == 16 and card.int8["fp32"] == pytest.approx(1.0, abs=1e-5)
    registry.verify_files(tmp_path / "tinyjax", card)
    assert [p.name for p in tmp_path.iterdir()] == ["tinyjax"]


def test_full_rank_broadcasts_reshapes_single_value_constants_only():
    from onnx import TensorProto, helper, numpy_helper

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 5, 5, 1])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 5, 5, 3])
    constants = {"scale": np.array(-1 / 255, np.float32), "offset": np.array([1.0], np.float32),
                 "channels": np.array([0.5, 1.5, 2.5], np.float32)}
    graph = helper.make_graph(
        [helper.make_node("Mul", ["images", "scale"], ["scaled"]),
         helper.make_node("Add", ["offset", "scaled"], ["shifted"]),  # the constant first
         helper.make_node("Sub", ["shifted", "offset"], ["again"]),  # the same constant used twice
         helper.make_node("Mul", ["again", "channels"], ["out"])],  # (3,): more than one value, left alone
        "g", [images], [out], [numpy_helper.from_array(v, k) for k, v in constants.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = proto.SerializeToString()

    after = zoo.export.full_rank_broadcasts(proto)
    onnx.checker.check_model(after)
    shapes = {t.name: tuple(t.dims) for t in after.graph.initializer}
    assert shapes == {"scale__rank4": (1, 1, 1, 1), "offset__rank4": (1, 1, 1, 1), "channels": (3,)}
    x = np.random.default_rng(0).uniform(0, 255, (7, 5, 5, 1)).astype(np.float32)
    run = lambda model: ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_array_equal(run(after.SerializeToString()), run(before))
