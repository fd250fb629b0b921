"""zoo.convert.dlib: dlib's file format read against a writer made here from dlib's serialisation rules, clear errors
on files that are not the network, the layers dlib's network needs against numpy, the published dlib_resnet entry
against its card, and (where dlib is at hand) the converted model against dlib itself."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from zoo import registry
from zoo.backbones import ChannelAffine, PaddedAdd, dlib_face_resnet
from zoo.convert import dlib

REPO = Path(__file__).resolve().parent.parent
MODEL = "dlib_face_recognition_resnet_model_v1.dat"


# ---- a writer of dlib's primitives, from serialize.h's rules ----------------------------------------------------

def integer(value):
    """dlib's integer: a control byte (0x80 if negative | number of bytes), then |value| little-endian."""
    magnitude = abs(int(value))
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def string(text):
    return integer(len(text)) + text.encode()


def real(value):
    """float_details: mantissa and exponent such that value = mantissa * 2^exponent (here 2^-20 steps)."""
    return integer(round(value * 2**20)) + integer(-20)


def tensor(values, shape):
    return integer(2) + b"".join(integer(s) for s in shape) + struct.pack(f"<{len(values)}f", *values)


def alias(shape):
    return integer(1) + b"".join(integer(s) for s in shape)


def empty_tensor():
    return tensor([], (0, 0, 0, 0))


def tail(first):
    """What add_layer writes after its details: three flags, x_grad, cached_output, then grad_final and the
    sample expansion factor (the layer on the input, version 3) or params_grad (version 2)."""
    return b"110" + empty_tensor() * 2 + (empty_tensor() + integer(1) if first else empty_tensor())


TINY = [{"kind": "input", "side": 8}, {"kind": "con", "filters": 2, "size": 3, "stride": 1}, {"kind": "affine"},
        {"kind": "tag", "id": 1}, {"kind": "relu"}, {"kind": "add_prev", "tag": 1},
        {"kind": "avg_pool", "size": 0, "stride": 1}, {"kind": "fc", "outputs": 3, "bias": False},
        {"kind": "loss_metric"}]


def tiny_file(rng, con_name="con_4", extra=b""):
    """A dlib file of TINY with random weights, written as dlib's serialize would; returns (bytes, weights)."""
    filters, biases = rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2)
    gamma, beta, fc = rng.normal(size=2), rng.normal(size=2), rng.normal(size=(2, 3))
    head = integer(1) + string("loss_metric_2") + real(0.04) + real(0.6)
    # The wrappers' versions, output first: fc, avg_pool, add_prev, relu (add_layer 2), tag (1), affine (2), and
    # con, the add_layer on the input (3).
    head += b"".join(integer(v) for v in (2, 2, 2, 2, 1, 2, 3))
    body = string("input_rgb_image_sized") + real(122.5) + real(117.0) + real(104.25) + integer(8) + integer(8)
    body += (string(con_name) + tensor([*filters.ravel(), *biases], (1, 1, 1, 56)) + b"".join(
        integer(v) for v in (2, 3, 3, 1, 1, 1, 1)) + alias((2, 3, 3, 3)) + alias((1, 2, 1, 1)) + real(1) * 4
        + tail(True))
    body += string("affine_") + tensor([*gamma, *beta], (1, 1, 1, 4)) + alias((1, 2, 1, 1)) * 2 + integer(0) + tail(0)
    body += string("relu_") + tail(False) + string("add_prev_") + tail(False)
    body += string("avg_pool_2") + b"".join(integer(v) for v in (0, 0, 1, 1, 0, 0)) + tail(False)
    body += (string("fc_2") + integer(3) + integer(2) + tensor(fc.ravel(), (2, 3, 1, 1)) + alias((2, 3, 1, 1))
             + alias((0, 0, 0, 0)) + integer(1) + real(1) * 4 + tail(False))
    return head + body + extra, {"filters": filters, "biases": biases, "gamma": gamma, "beta": beta, "fc": fc}


def test_reads_a_file_written_by_dlibs_rules(tmp_path):
    data, want = tiny_file(np.random.default_rng(0))
    (tmp_path / "tiny.dat").write_bytes(data)
    network = dlib.read_network(tmp_path / "tiny.dat", TINY)
    assert [layer["kind"] for layer in network] == [layer["kind"] for layer in TINY]
    assert network[0]["mean"] == [122.5, 117.0, 104.25] and network[0]["side"] == 8
    assert network[-1]["margin"] == pytest.approx(0.04, abs=1e-6)
    assert network[-1]["distance_threshold"] == pytest.approx(0.6, abs=1e-6)
    np.testing.assert_allclose(network[1]["filters"], want["filters"], rtol=1e-6)
    np.testing.assert_allclose(network[1]["biases"], want["biases"], rtol=1e-6)
    np.testing.assert_allclose(network[2]["gamma"], want["gamma"], rtol=1e-6)
    np.testing.assert_allclose(network[2]["beta"], want["beta"], rtol=1e-6)
    np.testing.assert_allclose(network[7]["weights"], want["fc"], rtol=1e-6)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.replace(b"con_4", b"con_9"), r"tiny\.dat: at byte \d+: expected a conv layer \('con_4'\), found "
                                              r"'con_9'.*layer 1 of the network, a con"),
    (lambda d: d[:-7], r"tiny\.dat: at byte \d+: the file ends"),
    (lambda d: d + b"\x00", r"tiny\.dat: at byte \d+: 1 bytes left after the network"),
    (lambda d: d.replace(b"relu_", b"sig__"), r"expected a relu layer"),
    (lambda d: b"\x01\x02" + d[2:], r"expected add_loss_layer version 1"),
])
def test_a_file_that_is_not_the_network_is_refused_naming_the_file(tmp_path, damage, message):
    data, _ = tiny_file(np.random.default_rng(0))
    (tmp_path / "tiny.dat").write_bytes(damage(data))
    with pytest.raises(dlib.DlibFormatError, match=message):
        dlib.read_network(tmp_path / "tiny.dat", TINY)


def test_a_conv_of_another_shape_is_refused(tmp_path):
    data, _ = tiny_file(np.random.default_rng(0))
    (tmp_path / "tiny.dat").write_bytes(data)
    wider = [dict(layer, filters=4) if layer["kind"] == "con" else layer for layer in TINY]
    with pytest.raises(dlib.DlibFormatError, match="con_4 with 2 filters of 3x3.*the network has 4"):
        dlib.read_network(tmp_path / "tiny.dat", wider)


def test_the_face_network_type_is_dnn_face_recognition_ex():
    kinds = [layer["kind"] for layer in dlib.FACE_RESNET]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert kinds.count("avg_pool") == 5 and kinds.count("max_pool") == 1 and kinds.count("relu") == 29
    model = dlib_face_resnet()
    assert {layer.name for layer in model.layers if layer.weights} == set(dlib.face_resnet_layers(
        [dict(layer, filters=np.zeros((1, 1, 1, 1)), biases=0, gamma=0, beta=0, weights=0)
         for layer in dlib.FACE_RESNET]))
    assert model.count_params() == 5_614_592


def test_padded_add_zero_pads_the_smaller_map_at_the_end():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 4, 4, 3)).astype("float32"), rng.normal(size=(2, 3, 3, 5)).astype("float32")
    want = np.zeros((2, 4, 4, 5), np.float32)
    want[:, :, :, :3] += a
    want[:, :3, :3, :] += b
    np.testing.assert_allclose(keras.ops.convert_to_numpy(PaddedAdd()([a, b])), want, atol=1e-6)


def test_channel_affine_and_the_network_round_trip_through_keras_files(tmp_path):
    layer = ChannelAffine()
    x = np.random.default_rng(2).normal(size=(2, 3, 3, 4)).astype("float32")
    layer.build(x.shape)
    layer.set_weights([np.arange(4, dtype="float32"), np.ones(4, "float32")])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x * np.arange(4) + 1, atol=1e-6)
    model = dlib_face_resnet(embedding_dim=8)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert not [l for l in again.layers if isinstance(l, keras.layers.Lambda)]
    images = np.random.default_rng(3).uniform(0, 255, (2, 150, 150, 3)).astype("float32")
    np.testing.assert_allclose(again.predict_on_batch(images), model.predict_on_batch(images), atol=1e-5)


# ---- the published entry ---------------------------------------------------------------------------------------

def dlib_entry():
    if "dlib_resnet" not in registry.list_models():
        pytest.skip("dlib_resnet is not published")
    return registry.info("dlib_resnet"), registry.exports_dir() / "dlib_resnet"


def test_the_published_entry_names_its_source_and_its_checks():
    card, folder = dlib_entry()
    recipe = _import_recipe()
    assert card.source["sha256"] == recipe.PACKAGE["files"][MODEL]
    assert card.source["version"] == recipe.PACKAGE["version"] and "CC0" in card.source["licence"]
    assert card.extras["parity"]["faces"] >= 100
    assert max(card.extras["parity"]["max_abs_raw"], card.extras["parity"]["max_abs_normalised"]) <= 1e-4
    assert card.input_shape == (150, 150, 3) and card.preprocessing["face"]["frame"] == [150, 150]
    assert card.training["fine_tune"]["config"]["backbone"] == "dlib_resnet"
    assert card.recipe.split()[1] == "recipes/import_dlib_resnet.py"


def _import_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_dlib_resnet", REPO / "recipes" / "import_dlib_resnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- against dlib itself, where it is at hand -------------------------------------------------------------------

def _model_folder():
    """The package's models/ folder where it is installed or fetched into the import's cache, else None."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    candidates = [Path(spec.origin).parent / "models"] if spec and spec.origin else []
    candidates.append(REPO / "runs" / "imports" / "face_recognition_models-0.3.0" / "models")
    return next((c for c in candidates if (c / MODEL).is_file()), None)


def test_the_converted_model_equals_dlib_on_its_own_chips(tmp_path):
    """The import's parity check, where dlib runs: in this interpreter, or in $ZOO_DLIB_PYTHON (a venv with
    dlib-bin); skipped elsewhere (CI has neither)."""
    import importlib.util

    python = sys.executable if importlib.util.find_spec("dlib") else os.environ.get("ZOO_DLIB_PYTHON")
    if not python:
        pytest.skip("dlib is not importable and $ZOO_DLIB_PYTHON is not set (pip install dlib-bin==20.0.1.post1 "
                    "into a separate venv and point $ZOO_DLIB_PYTHON at its python)")
    folder = _model_folder()
    if folder is None:
        pytest.skip("face_recognition_models 0.3.0 is neither installed nor in runs/imports (run "
                    "recipes/import_dlib_resnet.py once)")
    import zoo.data
    from zoo.data.originals import lfw_photo

    test, orl = zoo.data.load("lfw", "test"), zoo.data.load("orl", "all")["images"]
    photos = [lfw_photo(c) for c in test["images"][::12]] + [orl[i] for i in range(0, 400, 8)]
    np.savez(tmp_path / "in.npz", **{f"{i:05d}": p for i, p in enumerate(photos)})
    subprocess.run([python, str(REPO / "benchmarks" / "dlib_reference.py"), "faces", str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz"), "--models", str(folder)], check=True, capture_output=True)
    ref = np.load(tmp_path / "out.npz")
    assert ref["found"].sum() >= 100
    model = dlib.face_resnet(dlib.read_network(folder / MODEL))
    ours = model.predict(ref["chips"][ref["found"]].astype("float32"), batch_size=32, verbose=0)
    assert np.abs(ours - ref["descriptors"][ref["found"]]).max() <= 1e-4
