"""zoo.export.publish: the files of an entry, ONNX/SavedModel contract and parity, int8 and its gate, atomicity,
re-export, JAX backend."""

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
CARD = dict(method="Triplet", dataset="synthetic", splits={"train": "synthetic/train"},
            primary_metric="agreement", protocol="verification", recipe="python recipes/tiny.py",
            paper="Schroff et al. 2015", data_license="CC0-1.0", anchor="none")
CARD_ARGS = dict(card=CARD, threshold=0.9, int8=False)
# An entry whose int8 is calibrated and gated on real held-out data: Omniglot, 28x28 grey, few-shot protocol.
OMNIGLOT = (28, 28, 1)
OMNIGLOT_ARGS = dict(card={**CARD, "protocol": "few_shot", "primary_metric": "5way1shot",
                           "splits": {"train": "omniglot/background", "test": "omniglot/evaluation"}})


def tiny_image_embedder(seed=0, shape=SHAPE):
    """Input 'images' (16, 16, 1) -> Rescaling -> Conv2D -> GAP -> Dense -> UnitNormalization."""
    keras.utils.set_random_seed(seed)
    images = keras.Input(shape, name="images")
    x = keras.layers.Rescaling(1 / 255)(images)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8)(x)
    return keras.Model(images, keras.layers.UnitNormalization()(x))


def pixel_projection(seed=0, shape=OMNIGLOT, dim=32):
    """Input 'images' -> Rescaling -> Flatten -> Dense(32) -> UnitNormalization: a random projection of the
    pixels, whose few-shot accuracy int8 keeps (a random conv net's is too fragile for a one-point gate)."""
    keras.utils.set_random_seed(seed)
    images = keras.Input(shape, name="images")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(images))
    return keras.Model(images, keras.layers.UnitNormalization()(keras.layers.Dense(dim)(x)))


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


def embed(model, x):
    return np.asarray(model(np.asarray(x, np.float32), training=False))


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One entry with an extra file: (root, model, card)."""
    root = tmp_path_factory.mktemp("exports")
    model = tiny_image_embedder()
    extra = tmp_path_factory.mktemp("extra") / "labels.txt"
    extra.write_text("a\nb\n")
    card = publish("tiny", model, metrics={"agreement": np.float32(1.0), "auc": 0.5}, training={"steps": 3},
                   extra_files=[extra], root=root, **CARD_ARGS)
    return root, model, card


@pytest.fixture(scope="module")
def omniglot_entry(tmp_path_factory):
    """A tiny 28x28 embedder published with int8, gated on the Omniglot evaluation alphabets: (root, model, card)."""
    root = tmp_path_factory.mktemp("exports")
    model = pixel_projection()
    card = publish("omni", model, metrics={"5way1shot": 0.5}, root=root, **OMNIGLOT_ARGS)
    return root, model, card


def test_publish_writes_card_and_hashes_of_every_file(published):
    root, _, card = published
    folder = root / "tiny"
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]  # no temporary folder left
    on_disk = snapshot(folder)
    assert on_disk.pop("card.json") == sha256(folder / "card.json")
    assert card.files == on_disk  # every other file, recursively, with its sha256
    assert {"embedder.keras", "embedder.onnx", "embedder.tflite", "golden.npz", "labels.txt",
            "saved_model/saved_model.pb"} <= set(on_disk)
    assert (folder / "labels.txt").read_text() == "a\nb\n"
    assert registry.Card.from_json(folder) == card
    assert card.input_shape == SHAPE and card.embedding_dim == 8
    assert card.metrics == {"agreement": 1.0, "auc": 0.5} and card.training == {"steps": 3}
    assert card.towers == {"embedder": {"input": "images", "shape": [16, 16, 1], "dtype": "float32",
                                        "onnx": "embedder.onnx", "keras": "embedder.keras",
                                        "saved_model": "saved_model", "tflite": "embedder.tflite"}}
    assert datetime.fromisoformat(card.created).utcoffset() == timedelta(0)


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_onnx_names_dynamic_batch_and_parity(published, batch):
    root, model, _ = published
    session = ort.InferenceSession(str(root / "tiny" / "embedder.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name) == ("images", "tensor(float)", "embeddings")
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == list(SHAPE)
    x = images(batch, seed=batch).astype(np.float32)
    got = session.run(None, {"images": x})[0]
    assert got.shape == (batch, 8)
    np.testing.assert_allclose(got, embed(model, x), rtol=0, atol=1e-5)


def test_onnx_metadata_holds_the_card(published):
    root, _, card = published
    proto = onnx.load(root / "tiny" / "embedder.onnx")
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    expected = card.to_dict()
    del expected["files"]
    assert json.loads(meta["zoo_card"]) == expected


def test_saved_model_serving_signature(published):
    import tensorflow as tf

    root, model, _ = published
    serve = tf.saved_model.load(str(root / "tiny" / "saved_model")).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["images"]
    x = images(5, seed=9).astype(np.float32)
    out = serve(images=tf.constant(x))
    assert list(out) == ["embeddings"]
    np.testing.assert_allclose(out["embeddings"].numpy(), embed(model, x), rtol=0, atol=1e-5)


def test_golden_npz_is_the_keras_output(published):
    root, model, _ = published
    with np.load(root / "tiny" / "golden.npz") as golden:
        assert sorted(golden.files) == ["embedder__embeddings", "embedder__inputs"]
        x = golden["embedder__inputs"]
        assert x.shape == (8, *SHAPE) and x.dtype == np.float32
        assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 255 and x.std() > 50
        np.testing.assert_allclose(golden["embedder__embeddings"], embed(model, x), rtol=0, atol=1e-6)


def test_int8_kept_with_the_gate_measured_on_this_cpu(omniglot_entry):
    from zoo import protocols
    from zoo.runtime import cpu_features, int8_cpu_class

    root, _, card = omniglot_entry
    folder = root / "omni"
    int8 = card.int8
    assert int8["kept"] is True and int8["file"] == "embedder.int8.onnx" and "embedder.int8.onnx" in card.files
    assert int8["scheme"] == zoo.export.INT8_SCHEME_ORDER[0] and int8["metric"] == "5way1shot"
    assert [t["scheme"] for t in int8["tried"]] == [int8["scheme"]] and int8["tried"][0]["kept"]
    assert int8["calibration_images"] == protocols.CALIBRATION_COUNT
    assert int8["cpu"] == cpu_features() and int8["validated_on"] == [int8_cpu_class()]
    assert int8["fp32"] - int8["int8"] <= 0.01 and int8["golden_min_cosine"] >= 0.98
    # The gate's numbers are what the protocol gives for each graph.
    for key, path in (("fp32", folder / "embedder.onnx"), ("int8", folder / "embedder.int8.onnx")):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        embed_fn = lambda x, s=session: s.run(None, {"images": x})[0]
        assert protocols.gate_metric(registry.info("omni", root=root), embed_fn) == pytest.approx(int8[key], abs=1e-9)
    graph = onnx.load(str(folder / "embedder.int8.onnx")).graph
    dtypes = {i.name: i.data_type for i in graph.initializer}
    activations = [n for n in graph.node if n.op_type == "QuantizeLinear"]  # weights are stored quantised
    assert activations and all(dtypes[n.input[2]] == onnx.TensorProto.UINT8 for n in activations)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    assert "zoo_card" in {p.key for p in onnx.load(folder / "embedder.int8.onnx").metadata_props}


def test_int8_dropped_when_the_gate_fails(tmp_path, monkeypatch):
    model = pixel_projection()
    monkeypatch.setattr(zoo.export.int8, "INT8_MIN_COSINE", 1.5)  # no graph reaches it
    card = publish("omni", model, metrics={"5way1shot": 0.5}, root=tmp_path, **OMNIGLOT_ARGS)
    assert card.int8["kept"] is False and card.int8["file"] is None and card.int8["validated_on"] == []
    assert [t["scheme"] for t in card.int8["tried"]] == list(zoo.export.INT8_SCHEME_ORDER)
    assert not (tmp_path / "omni" / "embedder.int8.onnx").exists() and "embedder.int8.onnx" not in card.files


def test_int8_gate_catches_a_graph_that_disagrees(omniglot_entry, tmp_path):
    """A wrong int8 graph (half the projection's weights negated, as saturation corrupts them) fails the gate."""
    from onnx import numpy_helper

    root, _, card = omniglot_entry
    folder = root / "omni"
    proto = onnx.load(str(folder / "embedder.onnx"))
    weights = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))  # the (784, 32) projection
    value = numpy_helper.to_array(weights).copy()
    value[..., ::2] *= -1
    weights.CopyFrom(numpy_helper.from_array(value, weights.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(proto, str(wrong))
    with np.load(folder / "golden.npz") as golden:
        gate = zoo.export.int8_gate(card, folder, wrong, golden["embedder__inputs"])
    assert gate["kept"] is False and gate["golden_min_cosine"] < 0.98


def test_published_scheme_cannot_saturate(tmp_path):
    """A conv built to saturate uint8 x int8 pair sums in int16 (255 * 127 * 2 > 32767, as VPMADDUBSW does on
    x86 without VNNI): every scheme the exporter may ship must still agree with fp32, on any CPU. The U8S8 scheme is shown
    wrong where this CPU class saturates (AVX2 or AVX-512BW without VNNI)."""
    from onnx import TensorProto, helper, numpy_helper

    from zoo.runtime import cpu_features

    rng = np.random.default_rng(0)
    kernel = (rng.uniform(0.5, 1.0, (16, 1, 3, 3)) * rng.choice([-1, 1], (16, 1, 3, 3))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["nchw", "kernel"], ["conv"]),
         helper.make_node("Flatten", ["conv"], ["flat"]),
         helper.make_node("LpNormalization", ["flat"], ["embeddings"], axis=1, p=2)],
        "saturating", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8, 8, 1])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", 576])],
        [numpy_helper.from_array(kernel, "kernel")])
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    x = np.where(rng.random((64, 8, 8, 1)) < 0.8, 255.0, 0.0).astype(np.float32)  # mostly saturated pixels
    cosine = {}
    for scheme in ("u8s8", *zoo.export.INT8_SCHEME_ORDER):
        path = tmp_path / f"{scheme}.onnx"
        zoo.export.quantize(fp32, path, x, "images", scheme=scheme)
        run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        cosine[scheme] = float(np.min(np.sum(run(path) * run(fp32), axis=1)))
    assert all(cosine[scheme] >= 0.999 for scheme in zoo.export.INT8_SCHEME_ORDER), cosine
    flags = set(cpu_features()["flags"])
    if flags & {"avx2", "avx512bw"} and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        assert cosine["u8s8"] < 0.99, cosine  # the saturation this scheme avoids happens here


def test_two_towers(tmp_path):
    image_model, text_model = tiny_image_embedder(), tiny_text_embedder()
    tokens = np.random.default_rng(2).integers(0, 50, (5, 6)).astype(np.int32)
    card = publish("duo", {"image_encoder": image_model, "text_encoder": text_model}, metrics={"agreement": 0.0},
                   golden_inputs={"text_encoder": tokens}, root=tmp_path,
                   **{**CARD_ARGS, "card": {**CARD, "protocol": "zero_shot"}})
    folder = tmp_path / "duo"
    assert card.towers["text_encoder"] == {"input": "token_ids", "shape": [6], "dtype": "int32",
                                           "onnx": "text_encoder.onnx", "keras": "text_encoder.keras",
                                           "saved_model": "text_encoder_saved_model",
                                           "tflite": "text_encoder.tflite"}
    assert card.towers["image_encoder"]["saved_model"] == "saved_model"
    assert (folder / "text_encoder_saved_model" / "saved_model.pb").is_file()
    assert card.int8 is None and not (folder / "image_encoder.int8.onnx").exists()

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
    root, model, _ = published
    shutil.copytree(root / "tiny", tmp_path / "tiny")
    before = snapshot(tmp_path / "tiny")

    def broken(serve):
        raise RuntimeError("injected ONNX failure")

    monkeypatch.setattr(zoo.export.onnx_graph, "to_onnx", broken)
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
        (dict(towers=good, int8=True), r"splits\['train'\] = 'synthetic/train'"),
        (dict(towers=good, card={**CARD, "owner": "me"}), r"unknown \['owner'\]"),
        (dict(towers=good, card={k: v for k, v in CARD.items() if k != "paper"}), r"missing \['paper'\]"),
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


def test_reexport_recomputes_int8_and_hashes_and_keeps_the_rest(omniglot_entry, tmp_path, monkeypatch):
    root, model, card = omniglot_entry
    shutil.copytree(root / "omni", tmp_path / "omni")
    monkeypatch.setattr(zoo.export.int8, "INT8_MIN_COSINE", 1.5)  # an exporter change: this int8 now fails the gate
    again = zoo.export.reexport("omni", root=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["omni"] and again == registry.info("omni", root=tmp_path)
    registry.verify_files(tmp_path / "omni", again)
    assert set(again.files) == set(registry.folder_sha256(tmp_path / "omni"))
    assert again.int8["kept"] is False and not (tmp_path / "omni" / "embedder.int8.onnx").exists()
    assert again.int8["fp32"] == pytest.approx(card.int8["fp32"], abs=1e-9)  # the same weights
    assert again.extras["reexported"] == {"command": "python -m zoo.export --reexport omni",
                                          "first_published": card.created}
    for field in ("metrics", "training", "towers", "splits", "recipe", "threshold"):
        assert getattr(again, field) == getattr(card, field), field
    with np.load(tmp_path / "omni" / "golden.npz") as new, np.load(root / "omni" / "golden.npz") as old:
        np.testing.assert_array_equal(new["embedder__inputs"], old["embedder__inputs"])
        np.testing.assert_allclose(new["embedder__embeddings"], old["embedder__embeddings"], rtol=0, atol=1e-6)
    assert again.files["embedder.keras"] == card.files["embedder.keras"]  # the weights, byte for byte


@pytest.mark.slow
def test_publish_from_jax_backend_in_one_step(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import keras, numpy as np, onnxruntime as ort
        from test_export import OMNIGLOT, OMNIGLOT_ARGS, embed, pixel_projection
        from zoo.export import publish
        assert keras.backend.backend() == "jax"
        model = pixel_projection()
        card = publish("tinyjax", model, metrics={{"5way1shot": 0.5}}, root={str(tmp_path)!r}, **OMNIGLOT_ARGS)
        assert "tf2onnx" not in sys.modules  # the TensorFlow half ran in the subprocess
        x = np.random.default_rng(4).uniform(0, 255, (7, *OMNIGLOT)).astype(np.float32)
        session = ort.InferenceSession({str(tmp_path / "tinyjax" / "embedder.onnx")!r})
        print("DIFF", float(np.abs(session.run(None, {{"images": x}})[0] - embed(model, x)).max()))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    diff = float(done.stdout.split("DIFF")[1])
    assert diff <= 1e-4  # JAX Keras vs TensorFlow-converted ONNX
    card = registry.info("tinyjax", root=tmp_path)
    assert card.int8["calibration_images"] == 256 and card.int8["metric"] == "5way1shot"
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
