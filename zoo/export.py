"""Publish trained embedders into the zoo: card.json, .keras, SavedModel, ONNX, golden outputs, int8.

A publish writes everything into a hidden temporary folder next to the entry and swaps it in
by renaming, so a failed publish leaves the previous entry intact. The SavedModel and ONNX
steps need TensorFlow; from another Keras backend they run in a `python -m zoo.export --finish`
subprocess under KERAS_BACKEND=tensorflow, on the `.keras` files the caller saved.

int8 (`quantize`, `int8_gate`) is kept only where it passes the gate on the publishing CPU; the card
records that CPU. `python -m zoo.export --reexport NAME` runs the exporters again on a published entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from zoo.registry import TOWER_INPUTS, Card, exports_dir, folder_sha256, import_custom_layers, verify_files

__all__ = ["publish", "reexport", "quantize", "int8_gate", "INT8_SCHEMES", "INT8_SCHEME_ORDER"]

ONNX_OPSET = 17
# Keras vs SavedModel vs ONNX on the golden inputs, all float32 on TensorFlow.
PARITY_ATOL = 1e-5
# Caller's backend (e.g. JAX) vs the same .keras on TensorFlow: different kernels, so float32 round-off differs.
CROSS_BACKEND_ATOL = 1e-4
# Static QDQ schemes onnxruntime can run on x86 and Arm: (activation type, weight type, 7-bit weights).
# On x86 without VNNI (AVX2, AVX-512 without VNNI) onnxruntime multiplies uint8 x int8 with VPMADDUBSW,
# whose int16 sums of two products saturate (255 * 127 * 2 > 32767): U8S8 answers go wrong there.
# 7-bit weights (255 * 64 * 2 < 32767) or uint8 weights (widened to int16 first) cannot saturate.
# `benchmarks/int8_schemes.py` measures every scheme on every entry.
INT8_SCHEMES = {
    "u8s8": ("QUInt8", "QInt8", False),
    "u8s8_7bit": ("QUInt8", "QInt8", True),
    "u8u8": ("QUInt8", "QUInt8", False),
    "s8s8": ("QInt8", "QInt8", False),
}
# Tried in this order; the first that passes the gate ships. 7-bit U8S8 was the fastest correct scheme on the
# AVX2 machine that chose it (benchmarks/results/int8_schemes.json); U8U8 is the fallback.
INT8_SCHEME_ORDER = ("u8s8_7bit", "u8u8")
# The int8 gate: the protocol's held-out metric (zoo.protocols.GATE_METRICS) drops by at most one point,
# and every golden input's int8 embedding has cosine >= INT8_MIN_COSINE to its fp32 one.
INT8_MAX_DROP = 0.01
INT8_MIN_COSINE = 0.98
CALIBRATION_MAX_IMAGES = 256
CALIBRATION_BATCH = 32
EVALUATE_BATCH = 256
GOLDEN_COUNT = 8
_JOB = "_job"  # inputs of the finishing step inside the temporary folder; removed before hashing
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ROLE = re.compile(r"[A-Za-z0-9_]+")


def publish(name, towers, *, method, dataset, splits, metrics, primary_metric, protocol, recipe, paper, data_license,
            anchor="", threshold=None, training=None, extras=None, golden_inputs=None, int8=True,
            calibration_images=None, extra_files=None, root=None) -> Card:
    """Publish embedders as `<root>/<name>/`, atomically; returns the card written.

    Args:
        name: str. entry name and folder name, e.g. "facenet_triplet".
        towers: keras.Model | dict. the embedder, or role -> embedder (the first an image tower), e.g.
            {"image_encoder": m1, "text_encoder": m2}. Each has one input named "images" (float32 (B, H, W, C),
            pixels 0..255) or "token_ids" (int32 (B, L)) and one L2-normalised (B, D) output.
        method: str. class name of the training method, e.g. "Triplet".
        dataset: str. training dataset.
        splits: dict. split names, e.g. {"train": "lfw/train", "test": "lfw/test"}.
        metrics: dict. held-out metrics computed by the recipe's evaluation of the Keras model.
        primary_metric: str. key of `metrics` that ranks the entry (higher is better).
        protocol: str. "verification", "few_shot", "self_supervised" or "zero_shot".
        recipe: str. command that reproduces the entry.
        paper: str. reference of the method.
        data_license: str. license of the training data.
        anchor: str. literature reference value to compare with.
        threshold: float | None. verification threshold on the Euclidean distance of the embeddings.
        training: dict | None. how it was trained (steps, minutes, backend, seed, ...).
        extras: dict | None. method-specific settings, e.g. tokenizer settings.
        golden_inputs: array | dict | None. fixed inputs of the first tower, or role -> inputs; image towers
            default to 8 seeded random images; token_ids towers need them given.
        int8: bool. quantise the first tower and keep `<role>.int8.onnx` if it passes the int8 gate on this
            CPU (`_int8`: the protocol's held-out metric from `zoo.protocols`, and cosine on the golden inputs).
        calibration_images: array | None. (N, H, W, C) images to calibrate int8 on (<= 256 are used); default:
            a seeded sample of the card's training split (`zoo.protocols.train_images`).
        extra_files: list | None. paths of files copied into the entry under their own names, e.g. vocab.json.
        root: str | Path | None. zoo root (default: see `zoo.registry.exports_dir`).
    """
    import keras

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be a folder name of letters, digits, '_', '-', '.', got {name!r}")
    towers = {"embedder": towers} if isinstance(towers, keras.Model) else dict(towers)
    if not towers:
        raise ValueError("towers must be a keras.Model or a non-empty dict role -> keras.Model")
    specs = {role: _tower_spec(role, model, first=i == 0) for i, (role, model) in enumerate(towers.items())}
    first = next(iter(specs))
    if specs[first]["input"] != "images":
        raise ValueError(f"the first tower ({first!r}) must take 'images'; got {specs[first]['input']!r}")
    if int8 and protocol in _gate_protocols():
        from zoo.protocols import check_gate_splits

        check_gate_splits(splits, ("train", "test") if calibration_images is None else ("test",))
    if calibration_images is not None:
        calibration_images = _calibration_sample(calibration_images, specs[first]["shape"])
    golden = _golden_inputs(golden_inputs, specs)
    embeddings = {role: _keras_embed(model, golden[role]) for role, model in towers.items()}  # role -> (8, D)
    for role, emb in embeddings.items():
        norms = np.linalg.norm(emb, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError(f"tower {role!r} must output L2-normalised embeddings; got norms {norms.round(4)}")
    card = Card(name=name, method=method, dataset=dataset, splits=_plain(splits), input_shape=specs[first]["shape"],
                embedding_dim=int(embeddings[first].shape[1]), threshold=threshold, metrics=_plain(metrics),
                primary_metric=primary_metric, protocol=protocol, anchor=anchor, recipe=recipe, paper=paper,
                data_license=data_license, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                training=_plain(training or {}), towers=specs, extras=_plain(extras or {}))
    on_tensorflow = keras.backend.backend() == "tensorflow"

    root = exports_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        for role, model in towers.items():
            model.save(tmp / specs[role]["keras"])
        _copy_extra_files(extra_files, tmp, card)
        if on_tensorflow:
            card = _finish(tmp, card, towers, golden, int8, calibration_images)
        else:
            card = _finish_in_subprocess(tmp, card, golden, int8, calibration_images)
            with np.load(tmp / "golden.npz") as saved:
                for role, emb in embeddings.items():
                    diff = float(np.abs(saved[f"{role}__embeddings"] - emb).max())
                    if diff > CROSS_BACKEND_ATOL:
                        raise RuntimeError(f"tower {role!r}: the .keras file on TensorFlow differs from the "
                                           f"{keras.backend.backend()} model by {diff:.2e} > {CROSS_BACKEND_ATOL}")
        _swap_in(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def reexport(name, root=None) -> Card:
    """Run every exporter again on a published entry's own `.keras` towers; returns the new card.

    The weights, golden inputs, metrics and the card's other fields stay; the SavedModel, ONNX and int8
    graphs, the int8 gate (measured on this CPU), the golden outputs and every sha256 are recomputed, and
    the entry is swapped in atomically. This is how an entry picks up a change of an exporter (a new int8
    scheme, a new graph pass) without retraining: `python -m zoo.export --reexport NAME`. Needs TensorFlow.

    Args:
        name: str. a published entry.
        root: str | Path | None. zoo root (default: see `zoo.registry.exports_dir`).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"reexport runs the exporters under TensorFlow: set KERAS_BACKEND=tensorflow, "
                           f"got {keras.backend.backend()!r}")
    root = exports_dir(root)
    folder = root / name
    card = Card.from_json(folder)
    verify_files(folder, card)
    import_custom_layers()
    towers = {role: keras.saving.load_model(folder / t["keras"], compile=False, safe_mode=True)
              for role, t in card.towers.items()}
    with np.load(folder / "golden.npz") as saved:
        golden = {role: saved[f"{role}__inputs"] for role in card.towers}
    outputs = _output_names(card)
    extra_files = [folder / p for p in card.files if "/" not in p and p not in outputs]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    card = dataclasses.replace(card, created=now, int8=None, files={}, extras={
        **card.extras, "reexported": {"command": f"python -m zoo.export --reexport {name}",
                                      "first_published": card.extras.get("reexported", {}).get(
                                          "first_published", card.created)}})
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        for role, t in card.towers.items():
            shutil.copy2(folder / t["keras"], tmp / t["keras"])
        _copy_extra_files(extra_files, tmp, card)
        card = _finish(tmp, card, towers, golden, True, None)
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def _output_names(card) -> set:
    """The top-level files and folders the exporters write for `card`."""
    names = {"card.json", "golden.npz", _JOB}
    for role, tower in card.towers.items():
        names |= {tower["onnx"], tower["keras"], tower["saved_model"], f"{role}.int8.onnx"}
    return names


def _tower_spec(role, model, first) -> dict:
    """The card's description of one tower, after checking it follows the export contract."""
    import keras

    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        raise ValueError(f"tower role must be letters, digits and '_' (it names files), got {role!r}")
    if not isinstance(model, keras.Model) or len(model.inputs or []) != 1 or len(model.outputs or []) != 1:
        raise ValueError(f"tower {role!r} must be a functional keras.Model with one input and one output")
    spec, out = model.inputs[0], model.outputs[0]
    shape = tuple(spec.shape[1:])
    rank = {"images": 3, "token_ids": 1}.get(spec.name)
    if TOWER_INPUTS.get(spec.name) != spec.dtype or len(shape) != rank or None in shape:
        raise ValueError(f"tower {role!r}: expected an input named 'images' (float32 (None, H, W, C)) or "
                         f"'token_ids' (int32 (None, L)); got {spec.name!r} {spec.dtype} {tuple(spec.shape)}")
    if len(out.shape) != 2 or out.shape[1] is None:
        raise ValueError(f"tower {role!r}: expected an output of shape (None, D), got {tuple(out.shape)}")
    return {"input": spec.name, "shape": [int(s) for s in shape], "dtype": spec.dtype, "onnx": f"{role}.onnx",
            "keras": f"{role}.keras", "saved_model": "saved_model" if first else f"{role}_saved_model"}


def _golden_inputs(given, specs) -> dict:
    """role -> fixed inputs: the given ones, or 8 seeded random images."""
    first = next(iter(specs))
    given = {} if given is None else dict(given) if isinstance(given, dict) else {first: given}
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ValueError(f"golden_inputs for unknown towers {unknown}; towers: {list(specs)}")
    rng = np.random.default_rng(0)
    golden = {}
    for role, spec in specs.items():
        if role in given:
            x = np.asarray(given[role])
            if x.ndim != len(spec["shape"]) + 1 or list(x.shape[1:]) != spec["shape"] or len(x) == 0:
                raise ValueError(f"golden_inputs[{role!r}] must have shape (N, {', '.join(map(str, spec['shape']))}),"
                                 f" N >= 1; got {x.shape}")
            golden[role] = x.astype(spec["dtype"])
        elif spec["input"] == "images":
            golden[role] = rng.integers(0, 256, (GOLDEN_COUNT, *spec["shape"])).astype(np.float32)
        else:
            raise ValueError(f"golden_inputs[{role!r}] is required: token_ids towers need valid ids "
                             "(e.g. tokenised prompts), whose range only the recipe knows")
    return golden


def _calibration_sample(images, shape) -> np.ndarray:
    """Up to CALIBRATION_MAX_IMAGES images, seeded sample, as float32."""
    images = np.asarray(images)
    if images.ndim != 4 or list(images.shape[1:]) != shape or len(images) == 0:
        raise ValueError(f"calibration_images must have shape (N, {', '.join(map(str, shape))}), N >= 1; "
                         f"got {images.shape}")
    if len(images) > CALIBRATION_MAX_IMAGES:
        rows = np.random.default_rng(0).choice(len(images), CALIBRATION_MAX_IMAGES, replace=False)
        images = images[np.sort(rows)]
    return images.astype(np.float32)


def _keras_embed(model, inputs) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(model(inputs, training=False)), dtype=np.float32)


def _plain(value):
    """`value` as plain JSON data (numpy scalars and arrays become numbers and lists)."""
    def default(obj):
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        raise TypeError(f"card fields must be JSON data; got {type(obj).__name__}: {obj!r}")

    try:
        return json.loads(json.dumps(value, default=default))
    except TypeError as err:
        raise ValueError(str(err)) from None


def _copy_extra_files(paths, tmp, card) -> None:
    reserved = _output_names(card)
    for path in paths or ():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"extra file not found: {path}")
        if path.name in reserved or (tmp / path.name).exists():
            raise ValueError(f"extra file name {path.name!r} clashes with another file of the entry")
        shutil.copy2(path, tmp / path.name)


def _swap_in(tmp: Path, dest: Path) -> None:
    """Replace `dest` by `tmp` with renames; the old entry comes back if the second rename fails."""
    old = dest.with_name(f".old-{dest.name}-{secrets.token_hex(4)}") if dest.exists() else None
    if old:
        dest.rename(old)
    try:
        tmp.rename(dest)
    except BaseException:
        if old:
            old.rename(dest)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _finish_in_subprocess(tmp, card, golden, int8, calibration_images) -> Card:
    """Run `_finish` under TensorFlow in `python -m zoo.export --finish tmp`; returns the card it wrote."""
    job = tmp / _JOB
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"card": card.to_dict(), "int8": bool(int8)}))
    np.savez(job / "golden.npz", **golden)
    if calibration_images is not None:
        np.save(job / "calibration.npy", calibration_images)
    # The child must import what the caller can: the zoo itself.
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               PYTHONPATH=os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path))
    done = subprocess.run([sys.executable, "-m", "zoo.export", "--finish", str(tmp)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the TensorFlow export step failed (exit {done.returncode}):\n{done.stderr[-6000:]}")
    return Card.from_json(tmp / "card.json")


def _finish_job(tmp: Path) -> Card:
    """The subprocess side: load the saved .keras towers under TensorFlow and run `_finish`."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"--finish needs KERAS_BACKEND=tensorflow, got {keras.backend.backend()!r}")
    job = tmp / _JOB
    spec = json.loads((job / "job.json").read_text())
    card = Card.from_json(spec["card"])
    import_custom_layers()
    towers = {role: keras.saving.load_model(tmp / t["keras"], compile=False, safe_mode=True)
              for role, t in card.towers.items()}
    with np.load(job / "golden.npz") as f:
        golden = {role: f[role] for role in card.towers}
    calibration = np.load(job / "calibration.npy") if (job / "calibration.npy").exists() else None
    return _finish(tmp, card, towers, golden, spec["int8"], calibration)


def _finish(tmp, card, towers, golden, int8, calibration_images) -> Card:
    """Under TensorFlow: SavedModel, ONNX, int8, parity check, golden.npz, hashes and card.json, in `tmp`."""
    import onnx
    import tensorflow as tf

    first = next(iter(card.towers))
    onnx_models = {}
    for role, model in towers.items():
        spec = card.towers[role]
        serve = _serving_function(model, spec)
        module = tf.Module()
        module.model, module.serve = model, serve
        tf.saved_model.save(module, str(tmp / spec["saved_model"]), signatures={"serving_default": serve})
        onnx_models[role] = _to_onnx(serve)
        onnx.save(onnx_models[role], tmp / spec["onnx"])
    if int8 and card.protocol in _gate_protocols():
        card = dataclasses.replace(card, int8=_int8(tmp, first, card, golden, calibration_images))
    # The card in the graphs lacks `files`: a file cannot hold its own hash.
    metadata = json.dumps({k: v for k, v in card.to_dict().items() if k != "files"})
    onnx_files = [t["onnx"] for t in card.towers.values()]
    if card.int8 and card.int8["kept"]:
        onnx_files.append(card.int8["file"])
    for relpath in onnx_files:
        proto = onnx.load(tmp / relpath)
        onnx.helper.set_model_props(proto, {"zoo_card": metadata})
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp / relpath)
    golden_out = {}
    for role, model in towers.items():
        golden_out[f"{role}__inputs"] = golden[role]
        golden_out[f"{role}__embeddings"] = _keras_embed(model, golden[role])
        _check_parity(tmp, role, card.towers[role], golden[role], golden_out[f"{role}__embeddings"])
    np.savez(tmp / "golden.npz", **golden_out)
    shutil.rmtree(tmp / _JOB, ignore_errors=True)
    card = dataclasses.replace(card, files=folder_sha256(tmp))
    (tmp / "card.json").write_text(card.to_json(), encoding="utf-8")
    return card


def _serving_function(model, spec):
    """tf.function with the named input signature: inputs -> {"embeddings": (B, D) float32}."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, *spec["shape"]], spec["dtype"], name=spec["input"])])
    def serve(inputs):
        return {"embeddings": tf.cast(model(inputs, training=False), tf.float32)}

    return serve


def _to_onnx(serve):
    """ONNX ModelProto of a serving tf.function (tf2onnx, opset ONNX_OPSET)."""
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=ONNX_OPSET)
    return full_rank_broadcasts(proto)


_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


def full_rank_broadcasts(proto):
    """Give single-value constants of elementwise ops the rank of the other operand: () -> (1, 1, 1, 1).

    The same numbers, so the same outputs; but onnxruntime 1.32's CPU Mul/Add broadcast a () or (1,)
    constant over a (B, 28, 28, 1) tensor through a slow path, many times slower than a (1, 1, 1, 1)
    one, so the in-graph preprocessing `1 - x / 255` cost a large share of a conv4 forward pass.
    """
    from onnx import numpy_helper

    ranks = {name: len(dims) for name, dims in inferred_shapes(proto).items()}
    constants = {t.name: t for t in proto.graph.initializer}
    added = {}
    for node in proto.graph.node:
        if node.op_type not in _ELEMENTWISE or len(node.input) != 2:
            continue
        for i in (0, 1):
            name, other = node.input[i], node.input[1 - i]
            tensor, rank = constants.get(name), ranks.get(other, 0)
            if tensor is None or other in constants or rank <= len(tensor.dims) or np.prod(tensor.dims) != 1:
                continue
            if (name, rank) not in added:
                value = numpy_helper.to_array(tensor).reshape((1,) * rank)
                added[name, rank] = numpy_helper.from_array(value, f"{name}__rank{rank}")
                proto.graph.initializer.append(added[name, rank])
            node.input[i] = added[name, rank].name
    used = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    unused = [t for t in proto.graph.initializer if t.name not in used]
    for tensor in unused:
        proto.graph.initializer.remove(tensor)
    return proto


def inferred_shapes(proto) -> dict:
    """name -> dims of every graph input, intermediate and output whose shape ONNX shape inference finds
    (0 for a symbolic dimension such as the batch)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
            if v.type.tensor_type.HasField("shape")}


def _check_parity(tmp, role, spec, inputs, expected) -> None:
    """Keras vs SavedModel vs ONNX outputs on the golden inputs, within PARITY_ATOL."""
    import onnxruntime as ort
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tmp / spec["saved_model"]))
    saved = loaded.signatures["serving_default"](**{spec["input"]: tf.constant(inputs)})["embeddings"].numpy()
    session = ort.InferenceSession(str(tmp / spec["onnx"]), providers=["CPUExecutionProvider"])
    from_onnx = session.run(["embeddings"], {spec["input"]: inputs})[0]
    for what, got in (("SavedModel", saved), ("ONNX", from_onnx)):
        diff = float(np.abs(got - expected).max())
        if got.shape != expected.shape or diff > PARITY_ATOL:
            raise RuntimeError(f"parity check failed for tower {role!r}: {what} vs Keras max abs diff {diff:.2e} "
                               f"> {PARITY_ATOL} (shapes {got.shape} vs {expected.shape})")


class _Calibration(CalibrationDataReader):
    """Feeds calibration images to onnxruntime's static quantizer in batches."""

    def __init__(self, images, input_name):
        self.batches = iter([{input_name: images[i:i + CALIBRATION_BATCH]}
                             for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.batches, None)


def _onnx_embed_fn(path, input_name, dtype=np.float32):
    """(N, ...) inputs -> (N, D) embeddings of an ONNX file, in batches."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def embed(inputs):
        inputs = np.asarray(inputs, dtype=dtype)
        return np.concatenate([session.run(["embeddings"], {input_name: inputs[i:i + EVALUATE_BATCH]})[0]
                               for i in range(0, len(inputs), EVALUATE_BATCH)])

    return embed


def _gate_protocols():
    from zoo.protocols import GATE_METRICS

    return GATE_METRICS


def quantize(fp32_path, int8_path, images, input_name, scheme=INT8_SCHEME_ORDER[0]) -> None:
    """Static QDQ int8 of an fp32 ONNX image embedder, per-channel weights, calibrated (MinMax) on `images`.

    Args:
        fp32_path: str | Path. the float32 graph.
        int8_path: str | Path. where the int8 graph goes.
        images: array. (N, H, W, C) float32 calibration images (pixels 0..255).
        input_name: str. the graph's input, "images".
        scheme: str. a key of INT8_SCHEMES.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in INT8_SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r}; known: {sorted(INT8_SCHEMES)}")
    activations, weights, seven_bit = INT8_SCHEMES[scheme]
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # ONNX shape inference covers these graphs; the symbolic pass would add a sympy dependency.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(prepared, str(int8_path), _Calibration(images, input_name), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType[activations], weight_type=QuantType[weights], per_channel=True,
                        reduce_range=seven_bit)


def int8_gate(card, folder, int8_path, golden_inputs, data=None) -> dict:
    """Measure an int8 graph of the entry's image tower against its fp32 graph, on this CPU.

    Returns {"fp32", "int8": the protocol's gate metric (`zoo.protocols.gate_metric`) of each graph,
    "golden_min_cosine": the least cosine between their embeddings of `golden_inputs`, "kept": whether
    the drop is <= INT8_MAX_DROP and that cosine >= INT8_MIN_COSINE}.

    Args:
        card: Card. the entry's card.
        folder: Path. the entry's folder with its fp32 graphs (the text tower too, for zero_shot).
        int8_path: Path. the int8 graph of the first tower.
        golden_inputs: array. (N, H, W, C) fixed images of the first tower.
        data: dict | None. the held-out split if already loaded (`zoo.protocols.test_data(card)`).
    """
    from zoo import protocols

    spec = next(iter(card.towers.values()))
    fp32_fn, int8_fn = (_onnx_embed_fn(path, spec["input"]) for path in (folder / spec["onnx"], int8_path))
    embed_text = _text_embed_fn(folder, card) if card.protocol == "zero_shot" else None
    data = protocols.test_data(card) if data is None else data
    fp32 = protocols.gate_metric(card, fp32_fn, data, embed_text)
    int8 = protocols.gate_metric(card, int8_fn, data, embed_text)
    cosine = float(np.min(np.sum(_unit(int8_fn(golden_inputs)) * _unit(fp32_fn(golden_inputs)), axis=1)))
    return {"fp32": fp32, "int8": int8, "golden_min_cosine": cosine,
            "kept": bool(fp32 - int8 <= INT8_MAX_DROP and cosine >= INT8_MIN_COSINE)}


def _int8(tmp, role, card, golden, images=None) -> dict:
    """Quantise the first tower with each scheme of INT8_SCHEME_ORDER until one passes `int8_gate` here; keep
    it as `<role>.int8.onnx`, or ship no int8 file if none passes.

    The record names the CPU it was measured on; `zoo.runtime` re-checks int8 at load on another CPU class.
    """
    from zoo import protocols
    from zoo.runtime import cpu_features, int8_cpu_class

    int8_path = tmp / f"{role}.int8.onnx"
    images = protocols.train_images(card) if images is None else images
    data = protocols.test_data(card)
    tried = []
    for scheme in INT8_SCHEME_ORDER:
        quantize(tmp / card.towers[role]["onnx"], int8_path, images, card.towers[role]["input"], scheme=scheme)
        gate = int8_gate(card, tmp, int8_path, golden[role], data)
        tried.append({"scheme": scheme, **gate})
        if gate["kept"]:
            break
        int8_path.unlink()
    return {**gate, "file": int8_path.name if gate["kept"] else None, "scheme": scheme if gate["kept"] else None,
            "format": _scheme_description(scheme) if gate["kept"] else None, "tried": tried,
            "metric": protocols.GATE_METRICS[card.protocol], "max_drop": INT8_MAX_DROP,
            "min_cosine": INT8_MIN_COSINE, "calibration_images": int(len(images)), "cpu": cpu_features(),
            "validated_on": [int8_cpu_class()] if gate["kept"] else []}


def _scheme_description(scheme) -> str:
    activations, weights, seven_bit = INT8_SCHEMES[scheme]
    names = {"QUInt8": "uint8", "QInt8": "int8"}
    return (f"QDQ, {names[activations]} activations, {'7-bit ' if seven_bit else ''}{names[weights]} weights "
            "per channel, MinMax calibration")


def _unit(x) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _text_embed_fn(folder, card):
    """list[str] -> (N, D) fp32 embeddings of the entry's text tower (ONNX), tokenised as zoo.runtime does."""
    from zoo.runtime import Tokenizer

    role = next(r for r, t in card.towers.items() if t["input"] == "token_ids")
    tokenizer = Tokenizer(card.extras["context_length"])
    embed = _onnx_embed_fn(folder / card.towers[role]["onnx"], "token_ids", dtype=np.int32)
    return lambda texts: embed(tokenizer.encode(texts))


def main(argv=None) -> None:
    """`python -m zoo.export --reexport NAME`: run the exporters again on a published entry (see `reexport`).
    `--finish DIR` is the TensorFlow half of a publish started on another backend (internal)."""
    parser = argparse.ArgumentParser(prog="python -m zoo.export", description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--reexport", nargs="+", metavar="NAME", help="published entries to export again")
    group.add_argument("--finish", metavar="DIR", help="temporary folder prepared by publish()")
    parser.add_argument("--root", default=None, help="zoo root (default: exports/ or $ZOO_EXPORTS)")
    args = parser.parse_args(argv)
    if args.finish:
        _finish_job(Path(args.finish))
        return
    for name in args.reexport:
        card = reexport(name, args.root)
        int8 = card.int8 or {}
        print(f"{name}: re-exported; int8 {'kept' if int8.get('kept') else 'dropped'} ({int8.get('metric')} "
              f"fp32 {int8.get('fp32', float('nan')):.4f}, int8 {int8.get('int8', float('nan')):.4f}, golden cosine "
              f">= {int8.get('golden_min_cosine', float('nan')):.4f}, scheme {int8.get('scheme')}, "
              f"CPU {int8.get('validated_on') or (int8.get('cpu') or {}).get('flags')})", flush=True)


if __name__ == "__main__":
    main()
