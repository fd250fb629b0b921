"""Inference benchmark: Keras, compiled TF, SavedModel and onnxruntime (fp32, int8) side by side.

Latency is the median of repeated batch-1 calls; throughput is images per second at batch 256, the
best of twenty calls. The engines take turns call by call, so they are measured side by side under the
same conditions. The ratios are checked against the project's targets and written to JSON.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

# (ratio key, description, target): ratio = speed of the first engine over the second.
TARGETS = (
    ("ort_vs_predict_b1", "ORT fp32 vs keras predict, batch-1 latency", 10.0),
    ("ort_vs_compiled_b1", "ORT fp32 vs compiled tf.function, batch-1 latency", 2.0),
    ("ort_vs_compiled_b256", "ORT fp32 vs compiled tf.function, batch-256 throughput", 1.5),
    ("int8_vs_fp32_b256", "ORT int8 vs ORT fp32, batch-256 throughput", 1.3),
)


SETTLE_SECONDS = 0.2


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
                start = time.perf_counter()
                fn(x)
                times[engine].append(time.perf_counter() - start)
    return times


def _engines(folder: Path, tower: dict, model):
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

    int8 = tower["onnx"][: -len(".onnx")] + ".int8.onnx"
    for key, filename in (("ort_fp32", tower["onnx"]), ("ort_int8", int8)):
        if (folder / filename).is_file():
            engines[key] = OnnxEmbedder(folder, int8=key == "ort_int8").embed
    return engines


def bench_entry(name, *, repeats=30, batch=256, quick=False) -> dict:
    """Benchmark one zoo entry; returns {"latency_ms_b1": {...}, "throughput_b256": {...}, "ratios": {...}}.

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
    engines = _engines(registry.exports_dir() / name, tower, model)
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
    return {"latency_ms_b1": latency, "throughput_b256": throughput, "ratios": ratios}


def format_table(results: dict) -> str:
    """Plain-text tables of the timings and of the ratios against their targets."""
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
    print(format_table(results))
    payload = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
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
