"""int8 exporter: a static QDQ int8 graph of the first (image) tower, shipped only where it passes the gate.

The gate, measured on the publishing CPU: the protocol's held-out metric (`zoo.protocols.gate_metric`) of the
int8 graph within INT8_MAX_DROP of the fp32 graph's, and cosine >= INT8_MIN_COSINE between their embeddings
of every golden input. The card's `int8` records both, the scheme, and the CPU it was measured on; on
another CPU class `zoo.runtime.OnnxEmbedder(int8=True)` checks again at load.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

ORDER = 30
KEY = None  # one file for the entry, named in card.int8["file"], not one per tower

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
INT8_MAX_DROP = 0.01
INT8_MIN_COSINE = 0.98
CALIBRATION_BATCH = 32
EVALUATE_BATCH = 256


def export(folder, card, towers, golden, context):
    """Quantise the first tower with each scheme of INT8_SCHEME_ORDER until one passes `int8_gate` here; keep
    it as `<role>.int8.onnx`, or ship no int8 file if none passes. Skipped when `context["int8"]` is false."""
    import dataclasses

    from zoo import protocols
    from zoo.runtime.cpu import cpu_features, int8_cpu_class

    protocol = protocols.for_card(card)
    if not context.get("int8") or protocol.gate is None:
        return card
    role, spec = next(iter(card.towers.items()))
    int8_path = folder / f"{role}.int8.onnx"
    images = context.get("calibration_images")
    images = protocols.train_images(card) if images is None else images
    data = protocols.test_data(card)
    tried, fp32 = [], None
    for scheme in INT8_SCHEME_ORDER:
        quantize(folder / spec["onnx"], int8_path, images, spec["input"], scheme=scheme)
        gate = int8_gate(card, folder, int8_path, golden[role], data, fp32=fp32)
        fp32 = gate["fp32"]  # the fp32 graph's metric, measured once
        tried.append({"scheme": scheme, **gate})
        if gate["kept"]:
            break
        int8_path.unlink()
    kept = gate["kept"]
    record = {**gate, "file": int8_path.name if kept else None, "scheme": scheme if kept else None,
              "format": describe(scheme) if kept else None, "tried": tried,
              "metric": protocol.gate, "max_drop": INT8_MAX_DROP,
              "min_cosine": INT8_MIN_COSINE, "calibration_images": int(len(images)), "cpu": cpu_features(),
              "validated_on": [int8_cpu_class()] if kept else []}
    return dataclasses.replace(card, int8=record)


def quantize(fp32_path, int8_path, images, input_name, scheme=INT8_SCHEME_ORDER[0]) -> None:
    """Static QDQ int8 of an fp32 ONNX image embedder, per-channel weights, calibrated (MinMax) on `images`.

    Args:
        fp32_path: str | Path. the float32 graph.
        int8_path: str | Path. where the int8 graph goes.
        images: array. (N, H, W, C) float32 calibration images (pixels 0..255).
        input_name: str. the graph's input, "images".
        scheme: str. a key of INT8_SCHEMES.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in INT8_SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r}; known: {sorted(INT8_SCHEMES)}")
    activations, weights, seven_bit = INT8_SCHEMES[scheme]

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: np.asarray(images[i:i + CALIBRATION_BATCH], np.float32)}
                                 for i in range(0, len(images), CALIBRATION_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # ONNX shape inference covers these graphs; the symbolic pass would add a sympy dependency.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(prepared, str(int8_path), Calibration(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType[activations], weight_type=QuantType[weights], per_channel=True,
                        reduce_range=seven_bit)


def int8_gate(card, folder, int8_path, golden_inputs, data=None, fp32=None) -> dict:
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
        fp32: float | None. the fp32 graph's gate metric if already measured (another scheme's gate).
    """
    from zoo import protocols
    from zoo.runtime.kernels import l2_normalize

    spec = next(iter(card.towers.values()))
    fp32_fn, int8_fn = (onnx_embed_fn(path, spec["input"]) for path in (folder / spec["onnx"], int8_path))
    embed_text = text_embed_fn(folder, card) if protocols.for_card(card).needs_text else None
    data = protocols.test_data(card) if data is None else data
    fp32 = protocols.gate_metric(card, fp32_fn, data, embed_text) if fp32 is None else fp32
    int8 = protocols.gate_metric(card, int8_fn, data, embed_text)
    cosine = float(np.min(np.sum(l2_normalize(int8_fn(golden_inputs)) * l2_normalize(fp32_fn(golden_inputs)), axis=1)))
    return {"fp32": fp32, "int8": int8, "golden_min_cosine": cosine,
            "kept": bool(fp32 - int8 <= INT8_MAX_DROP and cosine >= INT8_MIN_COSINE)}


def describe(scheme) -> str:
    activations, weights, seven_bit = INT8_SCHEMES[scheme]
    names = {"QUInt8": "uint8", "QInt8": "int8"}
    return (f"QDQ, {names[activations]} activations, {'7-bit ' if seven_bit else ''}{names[weights]} weights "
            "per channel, MinMax calibration")


def onnx_embed_fn(path, input_name, dtype=np.float32):
    """(N, ...) inputs -> (N, D) embeddings of an ONNX file, in batches of EVALUATE_BATCH, on the CPU, through the
    runtime's session and runner (`zoo.runtime.embedder`); the inputs are fed as they are (no contract).

    Args:
        path: str | Path. the ONNX graph.
        input_name: str. its input, "images" or "token_ids".
        dtype: numpy dtype. what the inputs are cast to.
    """
    from zoo.runtime.embedder import run_batches, session

    graph = session(Path(path).read_bytes(), ["CPUExecutionProvider"])
    return lambda inputs: run_batches(graph, np.asarray(inputs, dtype=dtype), EVALUATE_BATCH, input_name, "embeddings")


def text_embed_fn(folder, card):
    """list[str] -> (N, D) fp32 embeddings of the entry's text tower (ONNX), tokenised as zoo.runtime does.

    Args:
        folder: Path. the entry's folder.
        card: Card. its card (towers, extras["context_length"]).
    """
    from zoo.runtime.clip import Tokenizer

    role = next(r for r, t in card.towers.items() if t["input"] == "token_ids")
    tokenizer = Tokenizer(card.extras["context_length"])
    embed = onnx_embed_fn(folder / card.towers[role]["onnx"], "token_ids", dtype=np.int32)
    return lambda texts: embed(tokenizer.encode(texts))
