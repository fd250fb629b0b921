"""`zoo` command line on a temporary zoo root (ZOO_EXPORTS), checked against zoo.runtime."""

import json

import matplotlib.image
import numpy as np
import pytest

from zoo.cli import main
from zoo.runtime import OnnxEmbedder

H, W, C = 8, 8, 3
THRESHOLD = 0.9


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    import keras
    from keras import layers

    from zoo.export import publish

    keras.utils.set_random_seed(0)
    images = keras.Input((H, W, C), name="images")
    x = layers.Flatten()(layers.Rescaling(1.0 / 255.0)(images))
    model = keras.Model(images, layers.UnitNormalization()(layers.Dense(4)(x)))
    root = tmp_path_factory.mktemp("exports")
    card = dict(method="Triplet", dataset="synthetic", splits={"test": "synthetic/test"}, primary_metric="accuracy",
                protocol="verification", recipe="pytest", paper="none", data_license="none")
    publish("tiny", model, card=card, metrics={"accuracy": 0.75}, threshold=THRESHOLD, int8=False, root=root)
    return root


@pytest.fixture
def zoo_env(root, monkeypatch):
    monkeypatch.setenv("ZOO_EXPORTS", str(root))
    return OnnxEmbedder(root / "tiny")


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, C), dtype=np.uint8)


def test_list_and_info(zoo_env, root, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "Triplet" in out and "accuracy=0.7500" in out
    assert main(["info", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((root / "tiny" / "card.json").read_text())
    assert main(["info", "tin"]) == 1
    assert "no zoo entry 'tin'" in capsys.readouterr().err


def test_list_empty_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path))
    assert main(["list"]) == 0
    assert "no published entries" in capsys.readouterr().out


def test_embed_npy_npz_and_png(zoo_env, tmp_path):
    batch, single, png = _images(3, 1), _images(1, 2)[0], _images(1, 3)[0]
    np.save(tmp_path / "batch.npy", batch)
    np.savez(tmp_path / "single.npz", images=single)
    matplotlib.image.imsave(tmp_path / "img.png", png)
    out = tmp_path / "emb.npy"
    files = [str(tmp_path / f) for f in ("batch.npy", "single.npz", "img.png")]
    assert main(["embed", "tiny", *files, "--out", str(out)]) == 0
    expected = zoo_env.embed(np.concatenate([batch, single[None], png[None]]))
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_embed_errors(zoo_env, tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 9, 9, 3)))
    assert main(["embed", "tiny", str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "e.npy")]) == 1
    assert "expected images of shape (B, 8, 8, 3)" in capsys.readouterr().err
    assert main(["embed", "tiny", str(tmp_path / "missing.png"), "--out", str(tmp_path / "e.npy")]) == 1
    assert "missing.png" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


def test_verify(zoo_env, tmp_path, capsys):
    a, b = _images(4, 4), _images(4, 5)
    b[0] = a[0]
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    assert main(["verify", "tiny", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    same, distances = zoo_env.verify(a, b)
    assert len(lines) == 4 and lines[0].startswith("same: distance 0.0000")
    for line, s, d in zip(lines, same, distances):
        assert line == f"{'same' if s else 'different'}: distance {d:.4f} (threshold {THRESHOLD:.4f})"


def test_search_gallery_folder(zoo_env, tmp_path, capsys):
    gallery = _images(6, 6)
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i, image in enumerate(gallery):
        matplotlib.image.imsave(folder / f"g{i}.png", image)
    np.save(tmp_path / "q.npy", gallery[2])
    assert main(["search", "tiny", str(tmp_path / "q.npy"), "--gallery", str(folder), "-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    indices, distances = zoo_env.search(gallery[2], gallery, k=3)
    assert out[0] == "query 0:"
    assert out[1:] == [f"  {r:>2}. g{i}.png  distance {d:.4f}"
                       for r, (i, d) in enumerate(zip(indices[0], distances[0]), 1)]
    assert indices[0, 0] == 2


def test_report_empty_root_and_failed_entry(zoo_env, root, tmp_path, monkeypatch, capsys):
    # The card's test split "synthetic/test" is no bundled dataset: the entry fails, the report still gets written.
    assert main(["report", "--quick", "--out", str(tmp_path / "report")]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "unknown dataset 'synthetic'" in out
    assert "tiny" in (tmp_path / "report" / "index.html").read_text()
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path / "empty"))
    assert main(["report", "--out", str(tmp_path / "report2")]) == 0
    assert "no published entries" in capsys.readouterr().out


def test_bench_writes_ratios(zoo_env, tmp_path, capsys):
    out = tmp_path / "inference.json"
    assert main(["bench", "--entry", "tiny", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["entries"]["tiny"]
    assert set(result["latency_ms_b1"]) == {"keras_predict", "tf_compiled", "saved_model", "ort_fp32"}
    assert all(v > 0 for v in result["throughput_b256"].values())
    ratios = result["ratios"]
    latency = result["latency_ms_b1"]
    assert ratios["ort_vs_predict_b1"] == pytest.approx(latency["keras_predict"] / latency["ort_fp32"])
    for engine, ips in result["throughput_b256"].items():
        assert result["gflops_b256"][engine] == pytest.approx(ips * result["gflop_per_image"])
    assert json.loads(out.read_text())["machine"]["matmul_gflops"] > 0
    table = capsys.readouterr().out
    assert "ORT fp32 vs keras predict, batch-1 latency" in table and ("PASS" in table or "FAIL" in table)
    assert "compute at batch 256" in table


def test_flops_per_image_counts_conv_and_matmul_multiply_adds(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from zoo.bench import flops_per_image

    weight = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")  # (C_out, C_in, kh, kw)
    matrix = numpy_helper.from_array(np.zeros((6, 7), np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Relu", ["y"], ["r"]),
         helper.make_node("MatMul", ["z", "b"], ["m"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 5, 6])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, None)],
        [weight, matrix])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "g.onnx")
    # Conv: a (4, 4, 4) output, 3 x 3 x 3 multiply-adds each; MatMul: a (5, 7) output, 6 each.
    assert flops_per_image(tmp_path / "g.onnx") == 2 * (4 * 4 * 4 * 27 + 5 * 7 * 6)
