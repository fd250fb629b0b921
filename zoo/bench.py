"""Inference benchmark: Keras, compiled TF, SavedModel and onnxruntime (fp32, int8) side by side.

Latency is the median of repeated batch-1 calls; throughput is images per second at batch 256, the
best of twenty calls. The engines take turns round by round, so they are measured side by side under the
same conditions. The ratios are checked against the project's targets and written to JSON. Beside them,
each engine's arithmetic rate at batch 256 (GFLOP/s, from the graph's Conv and MatMul multiply-adds)
is set against the machine's float32 matrix-multiply rate, a practical ceiling for float32 convolutions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from zoo.runtime import cpu_features, int8_cpu_class

# (ratio key, description, target): ratio = speed of the first engine over the second.
TARGETS = (
    ("ort_vs_predict_b1", "ORT fp32 vs keras predict, batch-1 latency", 10.0),
    ("ort_vs_compiled_b1", "ORT fp32 vs compiled tf.function, batch-1 latency", 2.0),
    ("ort_vs_compiled_b256", "ORT fp32 vs compiled tf.function, batch-256 throughput", 1.5),
    ("int8_vs_fp32_b256", "ORT int8 vs ORT fp32, batch-256 throughput", 1.3),
)


SETTLE_SECONDS = 0.2


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved_times(engines, x, rounds, calls):
    """engine -> wall times (s) of `fn(x)`: engines take turns in every round, `calls[engine]` calls each,
    so a slow spell of the machine (another process, a frequency change) hits every engine alike."""
    for fn in engines.values():
        fn(x)
        fn(x)
    times = {engine: [] for engine in engines}
    for _ in range(rounds):
        for engine, fn in engines.items():
            # The engine before may leave its thread pool spinning for a while (onnxruntime and TF both
            # spin-wait after a parallel op); on 2 cores that steals this engine's CPU. Let it settle.
            time.sleep(SETTLE_SECONDS)
            for _ in range(calls.get(engine, 1)):
                times[engine].append(_wall(lambda: fn(x)))
    return times


def _engines(folder: Path, tower: dict, model, int8: bool):
    """name -> callable(images float32 (B, H, W, C)) for every engine available for the entry's image tower."""
    import tensorflow as tf

    compiled = tf.function(lambda x: model(x, training=False), jit_compile=False)
    serving = tf.saved_model.load(str(folder / tower["saved_model"])).signatures["serving_default"]
    engines = {
        "keras_predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "tf_compiled": lambda x: compiled(tf.constant(x)).numpy(),
        "saved_model": lambda x: serving(images=tf.constant(x))["embeddings"].numpy(),
    }
    # onnxruntime as an application runs it: zoo.runtime.OnnxEmbedder (input checks, batches of 64).
    from zoo.runtime import OnnxEmbedder

    engines["ort_fp32"] = OnnxEmbedder(folder).embed
    if int8:
        engines["ort_int8"] = OnnxEmbedder(folder, int8=True).embed
    return engines


def flops_per_image(path) -> float:
    """Floating-point operations of one image through an ONNX graph: 2 x the multiply-adds of its Conv
    and MatMul nodes (everything else is a rounding error for these towers), from shape inference
    at batch 1."""
    import onnx

    from zoo.export import inferred_shapes

    proto = onnx.load(str(path))
    for tensor in proto.graph.input:
        tensor.type.tensor_type.shape.dim[0].dim_value = 1
    shapes = inferred_shapes(proto)
    shapes.update({t.name: list(t.dims) for t in proto.graph.initializer})
    unknown = [node.name for node in proto.graph.node
               if node.op_type in ("Conv", "MatMul") and not all(shapes.get(node.output[0], [0]))]
    if unknown:
        raise ValueError(f"{path}: shape inference at batch 1 left the output shapes of {unknown} unknown")
    multiply_adds = 0
    for node in proto.graph.node:
        if node.op_type == "Conv":  # output (1, C_out, H, W); weight (C_out, C_in / groups, kh, kw)
            multiply_adds += np.prod(shapes[node.output[0]]) * np.prod(shapes[node.input[1]][1:])
        elif node.op_type == "MatMul":  # output (.., M, N); A (.., M, K)
            multiply_adds += np.prod(shapes[node.output[0]]) * shapes[node.input[0]][-1]
    return 2.0 * float(multiply_adds)


def matmul_gflops(side=2048, repeats=20) -> float:
    """This machine's float32 matrix-multiply rate through onnxruntime (one (side, side) MatMul, the MLAS
    kernel its convolutions also run on; best of `repeats`), in GFLOP/s: a practical ceiling for the
    convolution rate of any engine here."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((side, side), dtype=np.float32) for _ in range(2))
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [side, side])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [side, side])],
                              [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    seconds = min(_interleaved_times({"matmul": lambda x: session.run(None, {"a": x})}, a, repeats, {})["matmul"])
    return 2.0 * side**3 / seconds / 1e9


def bench_entry(name, *, repeats=30, batch=256, quick=False) -> dict:
    """Benchmark one zoo entry; returns {"latency_ms_b1", "throughput_b256", "ratios", "gflop_per_image",
    "gflops_b256"}, the timings keyed by engine.

    Args:
        name: str. zoo entry name.
        repeats: int. batch-1 calls per engine, spread over the rounds (median taken).
        batch: int. batch size of the throughput measurement.
        quick: bool. fewer repeats, for smoke tests.
    """
    import keras

    from zoo import registry

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"the benchmark compares TensorFlow engines: set KERAS_BACKEND=tensorflow, "
                         f"got {keras.backend.backend()!r}")
    card = registry.info(name)
    model = registry.load(name)  # the first tower: the image embedder
    tower = next(iter(card.towers.values()))
    h, w, c = card.input_shape
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, h, w, c)).astype(np.float32)  # (B, H, W, C)
    folder = registry.entry_folder(name)
    engines = _engines(folder, tower, model, int8=bool(card.int8 and card.int8["kept"]))
    rounds, repeats = (3, 6) if quick else (10, repeats)
    # Batch 1: the median of rounds x calls timings. keras predict runs a data pipeline per call: one call a round.
    calls = {engine: 1 if engine == "keras_predict" else max(1, repeats // rounds) for engine in engines}
    latency = {engine: 1000.0 * statistics.median(t)
               for engine, t in _interleaved_times(engines, x[:1], rounds, calls).items()}
    # Batch 256: the best of twice as many rounds, the least disturbed measurement of what the engine can do
    # (on a shared virtual machine, single calls vary by +-30%).
    throughput = {engine: len(x) / min(t) for engine, t in _interleaved_times(engines, x, 2 * rounds, {}).items()}
    ratios = {
        "ort_vs_predict_b1": latency["keras_predict"] / latency["ort_fp32"],
        "ort_vs_compiled_b1": latency["tf_compiled"] / latency["ort_fp32"],
        "ort_vs_compiled_b256": throughput["ort_fp32"] / throughput["tf_compiled"],
    }
    if "ort_int8" in throughput:
        ratios["int8_vs_fp32_b256"] = throughput["ort_int8"] / throughput["ort_fp32"]
    flops = flops_per_image(folder / tower["onnx"])
    return {"latency_ms_b1": latency, "throughput_b256": throughput, "ratios": ratios, "gflop_per_image": flops / 1e9,
            # int8 does the same multiply-adds in integers: its figure is fp32-equivalent GFLOP/s.
            "gflops_b256": {engine: flops * ips / 1e9 for engine, ips in throughput.items()}}


def format_table(results: dict, matmul: float | None = None) -> str:
    """Plain-text tables of the timings, of the arithmetic rates and of the ratios against their targets."""
    engines = ("keras_predict", "tf_compiled", "saved_model", "ort_fp32", "ort_int8")
    lines = ["latency at batch 1 (ms, median) / throughput at batch 256 (images/s)", ""]
    header = f"{'entry':<22}" + "".join(f"{e:>22}" for e in engines)
    lines += [header, "-" * len(header)]
    for name, r in results.items():
        cells = []
        for e in engines:
            if e in r["latency_ms_b1"]:
                cells.append(f"{r['latency_ms_b1'][e]:9.2f} / {r['throughput_b256'][e]:8.0f}")
            else:
                cells.append("-")
        lines.append(f"{name:<22}" + "".join(f"{c:>22}" for c in cells))
    if matmul:
        lines += ["", f"compute at batch 256: GFLOP/s (percent of this machine's float32 matrix multiply, "
                      f"onnxruntime MatMul {matmul:.0f} GFLOP/s); int8 counted as the fp32 work it replaces", ""]
        header = f"{'entry':<22}{'GFLOP/image':>12}" + "".join(f"{e:>16}" for e in engines[1:])
        lines += [header, "-" * len(header)]
        for name, r in results.items():
            cells = [f"{r['gflops_b256'][e]:6.0f} ({100 * r['gflops_b256'][e] / matmul:3.0f}%)"
                     if e in r["gflops_b256"] else "-" for e in engines[1:]]
            lines.append(f"{name:<22}{r['gflop_per_image']:12.3f}" + "".join(f"{c:>16}" for c in cells))
    lines += ["", f"{'entry':<22}{'ratio':<56}{'value':>8}{'target':>8}  result"]
    lines.append("-" * 100)
    for name, r in results.items():
        for key, text, target in TARGETS:
            if key in r["ratios"]:
                value = r["ratios"][key]
                verdict = "PASS" if value >= target else "FAIL"
                lines.append(f"{name:<22}{text:<56}{value:7.2f}x{target:7.1f}x  {verdict}")
            else:
                lines.append(f"{name:<22}{text:<56}{'-':>8}{target:7.1f}x  n/a (no int8 export)")
    return "\n".join(lines)


def run(names=None, *, out="benchmarks/results/inference.json", quick=False) -> dict:
    """Benchmark the given entries (default: all), print the tables and write JSON.

    Args:
        names: list[str] | None. entries to run; None runs every published entry.
        out: str | Path. JSON file to write.
        quick: bool. fewer repeats, for smoke tests.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from zoo import registry

    names = list(names) if names else registry.list_models()
    if not names:
        print("no published entries: nothing to benchmark (run a recipe first)")
        return {}
    results = {}
    for name in names:
        print(f"benchmarking {name} ...", flush=True)
        results[name] = bench_entry(name, quick=quick)
    matmul = matmul_gflops(repeats=3 if quick else 20)
    cpu = cpu_features()
    print(f"CPU: {cpu['model']} ({cpu['machine']}, {os.cpu_count()} cores), flags {' '.join(cpu['flags'])}; "
          f"int8 class {int8_cpu_class()}")
    print(format_table(results, matmul))
    payload = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "matmul_gflops": matmul,
                    "cpu": cpu, "int8_class": int8_cpu_class()},
        "targets": {key: target for key, _, target in TARGETS},
        "entries": results,
        "pass": {
            name: {key: r["ratios"][key] >= t for key, _, t in TARGETS if key in r["ratios"]}
            for name, r in results.items()
        },
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    return results
