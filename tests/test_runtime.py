"""zoo.runtime: onnxruntime embedders against Keras outputs and naive numpy references.

Runtime self-containment is checked two ways instead of building a venv with only numpy and
onnxruntime (too slow for the suite): importing zoo.runtime in a fresh interpreter loads
neither keras nor tensorflow, and the module's own import statements name only the standard
library, numpy and onnxruntime (plus Pillow, faiss, fsspec and huggingface_hub, imported lazily).
"""

import ast
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import zoo.runtime
from zoo.runtime import OnnxCLIP, OnnxEmbedder, Tokenizer, few_shot_classify

H, W, C, D = 8, 8, 3, 4
CONTEXT = 12
LOGIT_SCALE = 10.0
THRESHOLD = 0.9


def _image_tower(seed, name="embedder"):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    images = keras.Input((H, W, C), name="images")
    x = layers.Rescaling(1.0 / 255.0)(images)
    x = layers.Conv2D(3, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(D)(x)
    return keras.Model(images, layers.UnitNormalization()(x), name=name)


def _text_tower(seed):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    tokens = keras.Input((CONTEXT,), dtype="int32", name="token_ids")
    x = layers.Embedding(Tokenizer.vocab_size, 8)(tokens)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(D)(x)
    return keras.Model(tokens, layers.UnitNormalization()(x), name="text_encoder")


_CARD = dict(
    dataset="synthetic",
    splits={"train": "synthetic/train", "test": "synthetic/test"},
    primary_metric="accuracy",
    recipe="pytest",
    paper="none",
    data_license="none",
)
# The runtime's int8 guard is tested on a published entry's copy.
_COMMON = dict(metrics={"accuracy": 0.5}, int8=False)


@pytest.fixture(scope="session")
def zoo_root(tiny_entry, tmp_path_factory):
    """A zoo root with a tiny image embedder ("tiny": a copy of the session's, tests/conftest.py, 8x8x3 -> 4 with
    threshold 0.9) and a tiny two-tower CLIP ("tiny_clip")."""
    from zoo.export import publish

    root = tmp_path_factory.mktemp("exports")
    shutil.copytree(tiny_entry.folder, root / "tiny")
    embedder = tiny_entry.model
    image, text = _image_tower(1, "image_encoder"), _text_tower(2)
    extras = {"context_length": CONTEXT, "logit_scale": LOGIT_SCALE, "tokenizer": "byte"}
    publish("tiny_clip", {"image_encoder": image, "text_encoder": text},
            card={**_CARD, "method": "CLIP", "protocol": "zero_shot", "extras": extras}, root=root,
            golden_inputs={"text_encoder": Tokenizer(CONTEXT).encode(["a cat", ""])}, **_COMMON)
    return {"root": root, "embedder": embedder, "image": image, "text": text}


@pytest.fixture(scope="session")
def tiny(zoo_root):
    return OnnxEmbedder(zoo_root["root"] / "tiny")


def _images(n, seed=0, shape=(H, W, C)):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _linear_onnx(path, shape, dim, card=None, seed=0):
    """Hand-built ONNX `images` -> normalize(flatten(images) @ W); returns W, the numpy reference."""
    size = int(np.prod(shape))
    weights = np.random.default_rng(seed).normal(size=(size, dim)).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["images", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
        helper.make_node("ReduceL2", ["y"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Div", ["y", "norm"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(np.array([-1, size], np.int64), "shape"), numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if card is not None:
        helper.set_model_props(model, {"zoo_card": json.dumps(card)})
    onnx.save(model, str(path))
    return weights


# --- self-containment -----------------------------------------------------------------------


def test_import_loads_neither_keras_nor_tensorflow():
    code = ("import sys, zoo.runtime; loaded = [m for m in ('keras', 'tensorflow', 'jax', 'zoo.registry') "
            "if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_package_imports_only_stdlib_numpy_onnxruntime():
    """Every module of zoo.runtime (not the developer script in mtcnn/) imports the standard library, numpy,
    onnxruntime and its own modules at the top; Pillow (decoding files), faiss (gallery index), fsspec and
    huggingface_hub (pulling an entry from a URL) only lazily. Writing ONNX graphs (onnx) is export's job."""
    for path in sorted(Path(zoo.runtime.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        top_level, lazy = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [(node.module or "").split(".")[0]]  # relative: the package itself
            else:
                continue
            (top_level if node in tree.body else lazy).update(names)
        allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}
        assert top_level <= allowed, (path.name, top_level - allowed)
        assert lazy <= allowed | {"PIL", "faiss", "fsspec", "huggingface_hub"}, (path.name, lazy - allowed)


# --- embed ----------------------------------------------------------------------------------


def test_embed_matches_keras_and_golden(zoo_root, tiny):
    x = _images(10)
    expected = zoo_root["embedder"].predict(x.astype(np.float32), verbose=0)
    out = tiny.embed(x)
    assert out.dtype == np.float32 and out.shape == (10, D)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    golden = np.load(zoo_root["root"] / "tiny" / "golden.npz")
    np.testing.assert_allclose(tiny.embed(golden["embedder__inputs"]), golden["embedder__embeddings"], atol=1e-5)
    assert tiny.input_shape == (H, W, C) and tiny.embedding_dim == D and tiny.threshold == THRESHOLD


def test_layouts_single_image_uint8_and_float(tiny):
    x = _images(3)
    batch = tiny.embed(x)
    np.testing.assert_array_equal(tiny.embed(x[1]), batch[1:2])  # one HWC image -> (1, D)
    np.testing.assert_array_equal(tiny.embed(x.astype(np.float64)), batch)
    np.testing.assert_array_equal(tiny.embed(x.tolist()), batch)


def test_grey_layouts_against_numpy(tmp_path):
    weights = _linear_onnx(tmp_path / "grey.onnx", (5, 6, 1), 3)
    e = OnnxEmbedder(tmp_path / "grey.onnx")
    assert e.input_shape == (5, 6, 1) and e.embedding_dim == 3 and e.card == {} and e.threshold is None
    x = np.random.default_rng(1).integers(0, 256, (4, 5, 6), dtype=np.uint8)
    expected = _normalize(x.reshape(4, -1).astype(np.float64) @ weights)
    np.testing.assert_allclose(e.embed(x), expected, atol=1e-5)  # (B, H, W)
    np.testing.assert_allclose(e.embed(x[..., None]), expected, atol=1e-5)  # (B, H, W, 1)
    np.testing.assert_allclose(e.embed(x[2]), expected[2:3], atol=1e-5)  # (H, W)
    np.testing.assert_allclose(e.embed(x[2, ..., None]), expected[2:3], atol=1e-5)  # (H, W, 1)


def test_batching_equals_unbatched(zoo_root):
    x = _images(11, seed=3)
    whole = OnnxEmbedder(zoo_root["root"] / "tiny", batch_size=64).embed(x)
    np.testing.assert_allclose(OnnxEmbedder(zoo_root["root"] / "tiny", batch_size=3).embed(x), whole, atol=1e-6)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 9, 8, 5)), "image 0: expected an image (H, W), (H, W, C) with C in 1..4"),
        ([np.zeros((9, 8, 3)), np.zeros((4, 0, 3))], "image 1: expected an image"),
        (np.zeros((1, 2, 8, 8, 3)), "expected images as (B, H, W, C)"),
        (np.zeros(8), "expected images as (B, H, W, C)"),
        ([], "expected at least one image"),
        (np.zeros((0, 8, 8, 3)), "expected at least one image"),
        (np.full((2, 8, 8, 3), np.nan), "NaN or Inf"),
        (np.full((2, 8, 8, 3), np.inf), "NaN or Inf"),
        (np.zeros((2, 8, 8, 3), bool), "uint8 or float"),
        (np.zeros((2, 8, 8, 3), complex), "uint8 or float"),
        (np.full((2, 8, 8, 3), "a"), "uint8 or float"),
        (np.empty((2, 8, 8, 3), object), "uint8 or float"),
    ],
)
def test_bad_images_raise_clear_errors(tiny, images, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny.embed(images)


def test_thread_safe(tiny):
    batches = [_images(5, seed=s) for s in range(12)]
    sequential = [tiny.embed(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(tiny.embed, batches))
    for a, b in zip(parallel, sequential):
        np.testing.assert_array_equal(a, b)


# --- loading and integrity ------------------------------------------------------------------


def test_tampered_or_missing_files(zoo_root, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(zoo_root["root"] / "tiny", folder)
    onnx_path = folder / "embedder.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-1] ^= 1
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        OnnxEmbedder(folder)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        OnnxEmbedder(onnx_path)  # a file inside an export folder is checked against its card
    onnx_path.unlink()
    with pytest.raises(FileNotFoundError, match="embedder.onnx"):
        OnnxEmbedder(folder)
    with pytest.raises(ValueError, match="ships no int8 graph"):
        OnnxEmbedder(zoo_root["root"] / "tiny", int8=True)  # not published for this entry
    (folder / "card.json").unlink()
    with pytest.raises(FileNotFoundError, match="card.json"):
        OnnxEmbedder(folder)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        OnnxEmbedder(tmp_path / "nowhere")


def test_bare_onnx_reads_card_from_metadata(zoo_root, tiny, tmp_path):
    copy = tmp_path / "model.onnx"
    shutil.copy(zoo_root["root"] / "tiny" / "embedder.onnx", copy)
    e = OnnxEmbedder(copy)
    assert e.card["name"] == "tiny" and e.threshold == THRESHOLD and e.input_shape == (H, W, C)
    x = _images(2)
    np.testing.assert_array_equal(e.embed(x), tiny.embed(x))


# --- verify, search, few-shot ---------------------------------------------------------------


def test_verify_against_numpy(zoo_root, tiny):
    a, b = _images(6, seed=4), _images(6, seed=5)
    b[:3] = a[:3]  # three identical pairs: distance 0, same
    keras_model = zoo_root["embedder"]
    ea = keras_model.predict(a.astype(np.float32), verbose=0)
    eb = keras_model.predict(b.astype(np.float32), verbose=0)
    expected = np.array([np.sqrt(np.sum((ea[i] - eb[i]) ** 2)) for i in range(6)])
    same, distances = tiny.verify(a, b)
    np.testing.assert_allclose(distances, expected, atol=1e-5)
    np.testing.assert_array_equal(same, expected <= THRESHOLD)
    assert same[:3].all()
    # Embeddings computed first (e.g. of files) take the same decision.
    same_e, distances_e = tiny.verify(tiny.embed(a), tiny.embed(b), embedded=True)
    np.testing.assert_array_equal(same_e, same)
    np.testing.assert_array_equal(distances_e, distances)
    with pytest.raises(ValueError, match="as many images"):
        tiny.verify(a, b[:2])


def test_verify_needs_a_threshold(tmp_path):
    _linear_onnx(tmp_path / "m.onnx", (2, 2, 1), 3, card={"name": "m", "input_shape": [2, 2, 1]})
    e = OnnxEmbedder(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="threshold"):
        e.verify(np.zeros((1, 2, 2)), np.ones((1, 2, 2)))


def test_search_against_numpy(zoo_root, tiny):
    queries, gallery = _images(3, seed=6), _images(9, seed=7)
    gallery[4] = queries[0]
    keras_model = zoo_root["embedder"]
    q = keras_model.predict(queries.astype(np.float32), verbose=0).astype(np.float64)
    g = keras_model.predict(gallery.astype(np.float32), verbose=0).astype(np.float64)
    k = 4
    indices, distances = tiny.search(queries, gallery, k=k)
    assert indices.shape == distances.shape == (3, k)
    for i in range(3):
        d = [np.sqrt(np.sum((q[i] - g[j]) ** 2)) for j in range(len(g))]
        order = sorted(range(len(g)), key=lambda j: d[j])[:k]
        np.testing.assert_array_equal(indices[i], order)
        np.testing.assert_allclose(distances[i], [d[j] for j in order], atol=1e-3)
    assert indices[0, 0] == 4
    # A (N, D) float gallery is taken as precomputed embeddings.
    idx_emb, _ = tiny.search(queries, tiny.embed(gallery), k=k)
    np.testing.assert_array_equal(idx_emb, indices)
    for bad_k in (0, 10):
        with pytest.raises(ValueError, match="k"):
            tiny.search(queries, gallery, k=bad_k)


def test_few_shot_classify_against_loop(tmp_path):
    weights = _linear_onnx(tmp_path / "fs.onnx", (3, 3, 1), 5, seed=2)
    e = OnnxEmbedder(tmp_path / "fs.onnx")
    rng = np.random.default_rng(8)
    support = rng.integers(0, 256, (12, 3, 3)).astype(np.float32)
    labels = np.array(["a", "b", "c"] * 4)
    queries = rng.integers(0, 256, (7, 3, 3)).astype(np.float32)
    s = _normalize(support.reshape(12, -1).astype(np.float64) @ weights)
    qe = _normalize(queries.reshape(7, -1).astype(np.float64) @ weights)
    expected = []
    for row in qe:
        best = None
        for cls in ("a", "b", "c"):
            proto = s[labels == cls].mean(axis=0)
            dist = np.sum((row - proto) ** 2)
            if best is None or dist < best[0]:
                best = (dist, cls)
        expected.append(best[1])
    np.testing.assert_array_equal(few_shot_classify(e, support, labels, queries), expected)
    # Queries equal to the support images of a single-example class are labelled with it.
    np.testing.assert_array_equal(few_shot_classify(e, support[:3], labels[:3], support[:3]), labels[:3])
    with pytest.raises(ValueError, match="one label per support image"):
        few_shot_classify(e, support, labels[:5], queries)


def test_kernels_against_loops():
    from zoo.runtime import kernels

    rng = np.random.default_rng(11)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    x[2] = 0.0
    unit = kernels.l2_normalize(x)
    assert unit.dtype == np.float32 and not unit[2].any()  # a zero row stays zero, not NaN
    for i in (0, 1, 3, 4):
        np.testing.assert_allclose(unit[i], x[i] / np.sqrt(np.sum(x[i].astype(np.float64) ** 2)), rtol=1e-6)
    support, queries = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    labels = np.array(["b", "a", "b", "c", "a", "c", "c"])
    classes, predictions, probabilities, distances = kernels.nearest_prototypes(support, labels, queries)
    assert list(classes) == ["a", "b", "c"]
    for q, row in enumerate(queries):
        d2 = [np.sum((row - support[labels == c].mean(axis=0)) ** 2) for c in classes]
        assert predictions[q] == int(np.argmin(d2))
        np.testing.assert_allclose(distances[q], np.sqrt(d2), rtol=1e-9)
        np.testing.assert_allclose(probabilities[q], np.exp(-np.array(d2)) / np.sum(np.exp(-np.array(d2))), rtol=1e-9)
    same, d = kernels.verify_embeddings(support[:3], support[3:6], threshold=1.0)
    a, b = (support[i:i + 3] / np.linalg.norm(support[i:i + 3], axis=1, keepdims=True) for i in (0, 3))
    expected = [np.sqrt(np.sum((a[i] - b[i]) ** 2)) for i in range(3)]
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    np.testing.assert_array_equal(same, np.array(expected) <= 1.0)


def test_prompt_ensemble_normalises_each_prompt_then_the_mean():
    """The runtime's prompt ensemble against a loop, and equal to the protocols' (the held-out zero-shot metrics)."""
    from zoo import protocols
    from zoo.runtime.kernels import prompt_ensemble

    rng = np.random.default_rng(12)
    table = {}  # a fake text tower: unnormalised random rows, one per prompt

    def embed_text(prompts):
        return np.stack([table.setdefault(p, rng.normal(size=4).astype(np.float32) * rng.uniform(0.5, 3))
                         for p in prompts])

    classes, templates = ["cat", ["dog", "puppy"]], ("a {}", "{} photo")
    got = prompt_ensemble(embed_text, classes, templates)
    for row, names in zip(got, [["cat"], ["dog", "puppy"]]):
        prompts = [embed_text([t.format(n)])[0] for n in names for t in templates]
        mean = np.mean([p / np.linalg.norm(p) for p in prompts], axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_array_equal(got, protocols.prompt_ensemble(embed_text, classes, templates))
    with pytest.raises(ValueError, match="templates"):
        prompt_ensemble(embed_text, classes, ("no placeholder",))


# --- tokenizer and CLIP ---------------------------------------------------------------------


def test_tokenizer_known_answers():
    tok = Tokenizer(6)
    out = tok.encode(["Ab", "", "É", "abcdefgh"])
    assert out.dtype == np.int32 and out.shape == (4, 6)
    np.testing.assert_array_equal(out[0], [ord("a") + 2, ord("b") + 2, 1, 0, 0, 0])
    np.testing.assert_array_equal(out[1], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[2], [0xC3 + 2, 0xA9 + 2, 1, 0, 0, 0])  # "é" in UTF-8
    np.testing.assert_array_equal(out[3], [ord(ch) + 2 for ch in "abcde"] + [1])  # truncated, end kept
    assert out.max() < Tokenizer.vocab_size
    assert tok.encode([]).shape == (0, 6)
    with pytest.raises(ValueError, match="list of strings"):
        tok.encode("a photo")
    with pytest.raises(ValueError, match="list of strings"):
        tok.encode(["ok", 3])
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer(1)


def test_clip_encoders_and_zero_shot_against_numpy(zoo_root):
    clip = OnnxCLIP(zoo_root["root"] / "tiny_clip")
    texts = ["a cat", "a dog", "Ünïcode ✓"]
    tokens = Tokenizer(CONTEXT).encode(texts)
    np.testing.assert_allclose(clip.encode_text(texts), zoo_root["text"].predict(tokens, verbose=0), atol=1e-5)
    images = _images(5, seed=9)
    image_emb = zoo_root["image"].predict(images.astype(np.float32), verbose=0).astype(np.float64)
    np.testing.assert_allclose(clip.encode_image(images), image_emb, atol=1e-5)

    classes, templates = ["cat", "dog", "fish"], ("a photo of {}.", "a drawing of a {}")
    text_emb = np.stack([
        _normalize(np.mean([zoo_root["text"].predict(Tokenizer(CONTEXT).encode([t.format(c)]), verbose=0)[0]
                            for t in templates], axis=0)[None])[0]
        for c in classes
    ])
    logits = LOGIT_SCALE * image_emb @ text_emb.T
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predictions, probabilities = clip.zero_shot(images, classes, templates)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    np.testing.assert_array_equal(predictions, expected.argmax(axis=1))
    with pytest.raises(ValueError, match="templates"):
        clip.zero_shot(images, classes, ("no placeholder",))


def test_clip_class_given_by_several_names_averages_all_their_prompts(zoo_root):
    clip = OnnxCLIP(zoo_root["root"] / "tiny_clip")
    templates = ("a photo of {}.", "a drawing of a {}")
    got = clip.class_embeddings(["cat", ["dog", "puppy", "hound"]], templates)
    prompts = {name: clip.encode_text([t.format(name) for t in templates]) for name in ("cat", "dog", "puppy", "hound")}
    dog = np.concatenate([prompts["dog"], prompts["puppy"], prompts["hound"]]).mean(axis=0)
    np.testing.assert_allclose(got[0], _normalize(prompts["cat"].mean(axis=0)[None])[0], atol=1e-6)
    np.testing.assert_allclose(got[1], _normalize(dog[None])[0], atol=1e-6)
    with pytest.raises(ValueError, match="non-empty list"):
        clip.class_embeddings(["cat", []], templates)


def test_zero_shot_head_is_one_onnx_graph(zoo_root, tmp_path):
    import onnxruntime as ort

    from zoo.export.zero_shot_head import zero_shot_head

    clip = OnnxCLIP(zoo_root["root"] / "tiny_clip")
    classes, templates = ["cat", "dog", "fish", "bird"], ("a photo of {}.", "{}")
    path = zero_shot_head(clip, classes, templates, tmp_path / "head.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = _images(6, seed=10).astype(np.float32)
    logits, probabilities = session.run(["logits", "probabilities"], {"images": images})
    cosines = clip.encode_image(images) @ clip.class_embeddings(classes, templates).T
    np.testing.assert_allclose(logits, cosines, atol=1e-5)
    np.testing.assert_allclose(probabilities, clip.zero_shot(images, classes, templates)[1], atol=1e-5)
    assert json.loads(session.get_modelmeta().custom_metadata_map["zoo_classes"]) == classes


def test_zero_shot_head_replaces_only_a_head_it_wrote(zoo_root, tmp_path):
    from zoo.export.zero_shot_head import zero_shot_head

    clip = OnnxCLIP(zoo_root["root"] / "tiny_clip")
    head = zero_shot_head(clip, ["cat", "dog"], ("{}",), tmp_path / "head.onnx")
    with pytest.raises(FileExistsError, match="overwrite"):
        zero_shot_head(clip, ["cat", "fish"], ("{}",), head)  # refused without overwrite
    zero_shot_head(clip, ["cat", "fish"], ("{}",), head, overwrite=True)
    assert json.loads({p.key: p.value for p in onnx.load(str(head)).metadata_props}["zoo_classes"]) == ["cat", "fish"]
    for name, content in (("notes.txt", b"a user's notes"), ("tower.onnx", (zoo_root["root"] / "tiny_clip" /
                                                                           "image_encoder.onnx").read_bytes())):
        other = tmp_path / name
        other.write_bytes(content)
        with pytest.raises(FileExistsError, match="not a zero-shot head"):
            zero_shot_head(clip, ["cat", "dog"], ("{}",), other, overwrite=True)
        assert other.read_bytes() == content


def test_clip_folder_needs_text_tower(zoo_root):
    with pytest.raises(ValueError, match="token_ids"):
        OnnxCLIP(zoo_root["root"] / "tiny")


# --- int8 on a CPU the card did not validate ------------------------------------------------


def _doctored_copy(tmp_path, validated_on, wrong_int8):
    """A copy of a published entry with int8, its card claiming `validated_on`; with `wrong_int8`, its int8
    file replaced by a graph that disagrees with fp32 (half the largest weight's columns negated), as
    saturating kernels would make it. The card's sha256 is updated, so only the int8 guard can notice."""
    from onnx import numpy_helper

    from zoo import registry

    name = next(n for n in registry.list_models() if (registry.info(n).int8 or {}).get("kept"))
    folder = tmp_path / name
    shutil.copytree(registry.exports_dir() / name, folder)
    card = json.loads((folder / "card.json").read_text())
    card["int8"]["validated_on"] = validated_on
    if wrong_int8:
        proto = onnx.load(str(folder / next(iter(card["towers"].values()))["onnx"]))
        weights = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
        value = numpy_helper.to_array(weights).copy()
        value[..., ::2] *= -1
        weights.CopyFrom(numpy_helper.from_array(value, weights.name))
        onnx.save(proto, str(folder / card["int8"]["file"]))
        card["files"][card["int8"]["file"]] = registry.file_sha256(folder / card["int8"]["file"])
    (folder / "card.json").write_text(json.dumps(card))
    with np.load(folder / "golden.npz") as golden:
        role = next(iter(card["towers"]))
        return folder, golden[f"{role}__inputs"], golden[f"{role}__embeddings"]


def test_int8_on_an_unvalidated_cpu_that_disagrees_falls_back_to_fp32_with_a_warning(tmp_path):
    folder, inputs, fp32 = _doctored_copy(tmp_path, ["x86_64:a-cpu-never-seen"], wrong_int8=True)
    with pytest.warns(RuntimeWarning, match="disagrees with fp32 .* running the fp32 graph instead"):
        embedder = OnnxEmbedder(folder, int8=True)
    assert embedder.int8 is False and embedder.int8_check["golden_min_cosine"] < 0.98
    assert embedder.int8_check["cpu_class"] == zoo.runtime.int8_cpu_class()
    np.testing.assert_allclose(embedder.embed(inputs), fp32, rtol=0, atol=1e-5)  # the fp32 answers


def test_int8_on_an_unvalidated_cpu_that_agrees_runs_int8(tmp_path):
    folder, inputs, fp32 = _doctored_copy(tmp_path, ["x86_64:a-cpu-never-seen"], wrong_int8=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder = OnnxEmbedder(folder, int8=True)
    assert embedder.int8 is True and embedder.int8_check["golden_min_cosine"] >= 0.98
    assert not np.array_equal(embedder.embed(inputs), fp32)  # the int8 graph runs, not fp32


def test_int8_on_a_validated_cpu_class_is_not_rechecked(tmp_path):
    folder, inputs, fp32 = _doctored_copy(tmp_path, [zoo.runtime.int8_cpu_class()], wrong_int8=True)
    embedder = OnnxEmbedder(folder, int8=True)  # the card vouches for this CPU class
    assert embedder.int8 is True and embedder.int8_check is None


def test_cpu_class_names_the_int8_kernel_flags():
    features = {"machine": "x86_64", "model": "x", "flags": ["avx", "avx2", "avx512_vnni", "avx512bw", "fma"]}
    assert zoo.runtime.int8_cpu_class(features) == "x86_64:avx2+avx512_vnni+avx512bw"
    assert zoo.runtime.int8_cpu_class({"machine": "arm64", "flags": []}) == "arm64:none"
    mine = zoo.runtime.cpu_features()
    assert mine["machine"] and set(mine["flags"]) <= set(zoo.runtime.RECORDED_FEATURES)
