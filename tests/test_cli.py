"""`zoo` command line on a temporary zoo root (ZOO_EXPORTS), checked against zoo.runtime."""

import json

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.cli import main
from zoo.runtime import OnnxEmbedder

H, W, C = 8, 8, 3
THRESHOLD = 0.9


@pytest.fixture(scope="module")
def root(tiny_entry):
    """The session's zoo root (tests/conftest.py): the one entry "tiny", 8x8x3 -> 4, threshold 0.9, accuracy 0.75."""
    return tiny_entry.root


@pytest.fixture
def zoo_env(root, monkeypatch):
    monkeypatch.setenv("ZOO_EXPORTS", str(root))
    return OnnxEmbedder(root / "tiny")


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, C), dtype=np.uint8)


def test_list_prints_aligned_columns_and_info(zoo_env, root, capsys):
    assert main(["list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    columns = ["name", "method", "input", "D", "primary metric", "int8", "dataset", "source"]
    assert header.split() == ["name", "method", "input", "D", "primary", "metric", "int8", "dataset", "source"]
    assert row.split() == ["tiny", "Triplet", "8x8x3", "4", "accuracy", "0.750", "no", "synthetic", "root"]
    # Each column starts where its heading does (D is right-aligned under its heading).
    for heading, cell in zip(columns, ["tiny", "Triplet", "8x8x3", None, "accuracy 0.750", "no", "synthetic", "root"]):
        if cell:
            assert row.index(cell) == header.index(heading), heading
    assert main(["info", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads((root / "tiny" / "card.json").read_text())
    assert err == f"tiny: source root, {root / 'tiny'}\n"  # where it came from, off stdout
    assert main(["info", "tin"]) == 1
    assert "no zoo entry 'tin'" in capsys.readouterr().err


def test_list_empty_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path))
    assert main(["list"]) == 0
    assert "no published entries" in capsys.readouterr().out


def test_embed_files_of_any_size_and_arrays_in_argument_order(zoo_env, tmp_path):
    batch, single = _images(3, 1), _images(1, 2)[0]
    big = np.random.default_rng(3).integers(0, 256, (21, 13, 3), dtype=np.uint8)
    np.save(tmp_path / "batch.npy", batch)
    np.savez(tmp_path / "single.npz", images=single)
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(single).save(tmp_path / "same.png")
    out = tmp_path / "emb.npy"
    files = [str(tmp_path / f) for f in ("big.png", "batch.npy", "single.npz", "same.png")]
    assert main(["embed", "tiny", *files, "--out", str(out)]) == 0
    expected = zoo_env.embed([big, *batch, single, single])  # the runtime's contract, image by image
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
    # The contract: pad the 21x13 picture to a square with the background, then Pillow's BOX to 8x8.
    padded = np.full((21, 21, 3), 255, np.uint8)
    padded[:, 4:17] = big
    boxed = np.asarray(Image.fromarray(padded).resize((W, H), Image.BOX))
    np.testing.assert_allclose(np.load(out)[0], zoo_env.embed(boxed)[0], atol=1e-6)


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_files_get_one_line_naming_them(zoo_env, tmp_path, capsys):
    out = str(tmp_path / "e.npy")
    (tmp_path / "text.jpg").write_text("not a picture")
    assert main(["embed", "tiny", str(tmp_path / "text.jpg"), "--out", out]) == 1
    _one_line_error(capsys, "text.jpg", "not an image file")
    jpeg = tmp_path / "whole.jpg"
    Image.fromarray(_images(1, 7)[0]).resize((64, 64)).save(jpeg, quality=90)
    (tmp_path / "cut.jpg").write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    assert main(["embed", "tiny", str(tmp_path / "cut.jpg"), "--out", out]) == 1
    _one_line_error(capsys, "cut.jpg", "truncated")
    assert main(["embed", "tiny", str(tmp_path / "missing.png"), "--out", out]) == 1
    _one_line_error(capsys, "missing.png")
    np.save(tmp_path / "five.npy", np.zeros((1, 2, 8, 8, 3)))
    assert main(["embed", "tiny", str(tmp_path / "five.npy"), "--out", out]) == 1
    _one_line_error(capsys, "expected images as (B, H, W, C)")
    (tmp_path / "empty").mkdir()
    assert main(["search", "tiny", str(jpeg), "--gallery", str(tmp_path / "empty")]) == 1
    _one_line_error(capsys, "empty", "no image files")
    assert main(["classify", "tiny", str(jpeg), "--support", str(tmp_path / "empty")]) == 1
    _one_line_error(capsys, "no class subfolders")
    assert main(["embed", "nope", str(jpeg), "--out", out]) == 1
    _one_line_error(capsys, "no zoo entry 'nope'")
    assert not (tmp_path / "e.npy").exists()


def test_verify_json_and_text(zoo_env, tmp_path, capsys):
    a, b = _images(1, 4)[0], _images(1, 5)[0]
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    assert main(["verify", "tiny", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    same, distances = zoo_env.verify(a, b)
    assert result == {"same": bool(same[0]), "distance": pytest.approx(float(distances[0]), abs=1e-6),
                      "threshold": THRESHOLD}
    assert main(["verify", "tiny", str(tmp_path / "a.png"), str(tmp_path / "a.png")]) == 0
    assert capsys.readouterr().out.strip() == f"same: distance 0.0000 (threshold {THRESHOLD:.4f})"


def _class_folders(root, classes, per_class, seed):
    """DIR/<class>/<i>.png: each class a colour with noise, so classes are apart and members close."""
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(classes):
        (root / colour).mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((H, W, C)) + 200 * np.eye(3)[c]
            Image.fromarray(np.clip(base + rng.normal(0, 8, (H, W, C)), 0, 255).astype(np.uint8)).save(
                root / colour / f"{i}.png")


def test_classify_support_folder_against_the_runtime(zoo_env, tmp_path, capsys):
    from zoo.runtime import few_shot_classify, read_image

    _class_folders(tmp_path / "support", ["red", "green", "blue"], 3, seed=0)
    _class_folders(tmp_path / "queries", ["red", "green", "blue"], 2, seed=1)
    queries = sorted(str(p) for p in (tmp_path / "queries").rglob("*.png"))
    assert main(["classify", "tiny", *queries, "--support", str(tmp_path / "support"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    support = sorted((tmp_path / "support").rglob("*.png"))
    expected = few_shot_classify(zoo_env, [read_image(p) for p in support], [p.parent.name for p in support],
                                 [read_image(q) for q in queries])
    assert [r["class"] for r in results] == list(expected)
    assert [r["class"] for r in results] == [Path(q).parent.name for q in queries]
    for r in results:
        assert r["query"] in queries and 0 < r["confidence"] <= 1
        assert min(r["distances"], key=r["distances"].get) == r["class"]


def test_search_gallery_folder_json(zoo_env, tmp_path, capsys):
    gallery = _images(6, 6)
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i, image in enumerate(gallery):
        Image.fromarray(image).save(folder / f"g{i}.png")
    queries = [str(folder / "g2.png"), str(folder / "g4.png")]
    assert main(["search", "tiny", *queries, "--gallery", str(folder), "-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    indices, distances = zoo_env.search(gallery[[2, 4]], gallery, k=3)
    for result, query, row, dist in zip(results, queries, indices, distances):
        assert result["query"] == query
        assert [n["path"] for n in result["neighbours"]] == [str(folder / f"g{i}.png") for i in row]
        np.testing.assert_allclose([n["distance"] for n in result["neighbours"]], dist, atol=1e-5)
        assert result["neighbours"][0]["path"] == query  # each image is its own nearest neighbour
    assert main(["search", "tiny", queries[0], "--gallery", str(folder), "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{queries[0]}:" and out[1].startswith(f"   1. {queries[0]}  distance 0.0000")


def test_index_then_search_with_it(zoo_env, tmp_path, capsys):
    pytest.importorskip("faiss")
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i, image in enumerate(_images(12, 8)):
        Image.fromarray(image).save(folder / f"g{i:02d}.png")
    files = sorted(str(p) for p in folder.iterdir())
    results = {}
    for kind in ("flat", "hnsw"):
        assert main(["index", "tiny", str(folder), "--out", str(tmp_path / kind), "--kind", kind]) == 0
        capsys.readouterr()
        assert main(["search", "tiny", *files, "--index", str(tmp_path / kind), "-k", "3", "--json"]) == 0
        results[kind] = json.loads(capsys.readouterr().out)
        assert [r["neighbours"][0]["path"] for r in results[kind]] == files  # each image finds itself first
    assert main(["search", "tiny", *files, "--gallery", str(folder), "-k", "3", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)
    for flat, numpy_ in zip(results["flat"], exact):  # the flat index ranks as the exact numpy search
        assert [n["path"] for n in flat["neighbours"]] == [n["path"] for n in numpy_["neighbours"]]
        # atol: a self-distance is the square root of float32 round-off (~1e-7) in either way of computing it.
        np.testing.assert_allclose([n["distance"] for n in flat["neighbours"]],
                                   [n["distance"] for n in numpy_["neighbours"]], atol=1e-3)
    card = json.loads((tmp_path / "flat" / "index.json").read_text())
    card["entry"]["sha256"] = "0" * 64
    (tmp_path / "flat" / "index.json").write_text(json.dumps(card))
    assert main(["search", "tiny", files[0], "--index", str(tmp_path / "flat")]) == 1
    assert "was built with entry 'tiny'" in capsys.readouterr().err


def test_report_empty_root_and_failed_entry(zoo_env, root, tmp_path, monkeypatch, capsys):
    # The card's test split "synthetic/test" is no bundled dataset: the entry fails, the report still gets written.
    assert main(["report", "--quick", "--out", str(tmp_path / "report")]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "unknown dataset 'synthetic'" in out
    assert "tiny" in (tmp_path / "report" / "index.html").read_text()
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path / "empty"))
    assert main(["report", "--out", str(tmp_path / "report2")]) == 0
    assert "no published entries" in capsys.readouterr().out


@pytest.mark.slow
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
