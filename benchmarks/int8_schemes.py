"""Which int8 scheme is right on this CPU, and how fast: every scheme of zoo.export.INT8_SCHEMES on every entry.

    python benchmarks/int8_schemes.py                        # every published entry, every scheme
    python benchmarks/int8_schemes.py --entry clip --scheme u8s8 --scheme u8s8_7bit

For each entry's image tower and each scheme: quantise the published fp32 ONNX graph (calibrated on a seeded
sample of the entry's training split, as publishing does), then measure, on this machine,
- the int8 gate: the protocol's held-out metric (zoo.protocols) of fp32 and int8, and the least cosine
  between int8 and fp32 embeddings of the golden inputs, with PASS where both hold;
- speed: batch-1 latency and batch-256 throughput of int8 over fp32 (onnxruntime, default threads),
  the engines taking turns round by round.
Prints a table headed by the CPU's features and writes benchmarks/results/int8_schemes.json.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from zoo import protocols, registry
from zoo.export import INT8_MAX_DROP, INT8_MIN_COSINE, INT8_SCHEME_ORDER, INT8_SCHEMES, int8_gate, quantize
from zoo.runtime import cpu_features, int8_cpu_class


def speed_ratios(fp32_path, int8_path, shape, rounds, settle=0.2) -> dict:
    """int8 over fp32 speed: batch-1 latency (median) and batch-256 throughput (best), taking turns."""
    import onnxruntime as ort

    from zoo.bench import _interleaved_times

    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for k, p in (("fp32", fp32_path), ("int8", int8_path))}
    engines = {k: (lambda x, s=s: s.run(None, {"images": x})) for k, s in sessions.items()}
    rng = np.random.default_rng(0)
    ratios = {}
    for batch, calls, pick in ((1, 3, statistics.median), (256, 1, min)):
        x = rng.uniform(0, 255, (batch, *shape)).astype(np.float32)
        times = _interleaved_times(engines, x, rounds, {k: calls for k in engines})
        ratios[f"b{batch}"] = pick(times["fp32"]) / pick(times["int8"])
    return ratios


def measure(name, schemes, rounds) -> dict:
    card = registry.info(name)
    folder = registry.exports_dir() / name
    role, spec = next(iter(card.towers.items()))
    with np.load(folder / "golden.npz") as golden:
        golden_inputs = golden[f"{role}__inputs"]
    images, data = protocols.train_images(card), protocols.test_data(card)
    rows, fp32 = {}, None
    with tempfile.TemporaryDirectory() as scratch:
        for scheme in schemes:
            path = Path(scratch) / f"{scheme}.onnx"
            quantize(folder / spec["onnx"], path, images, spec["input"], scheme=scheme)
            row = int8_gate(card, folder, path, golden_inputs, data, fp32=fp32)
            fp32 = row["fp32"]  # the fp32 graph's metric, measured once per entry
            row.update(speed_ratios(folder / spec["onnx"], path, card.input_shape, rounds))
            rows[scheme] = row
            print(f"{name:20s} {scheme:10s} fp32 {row['fp32']:.4f} int8 {row['int8']:.4f} "
                  f"drop {row['fp32'] - row['int8']:+.4f} golden cos {row['golden_min_cosine']:.4f} "
                  f"{'PASS' if row['kept'] else 'FAIL'}  int8/fp32 speed b1 {row['b1']:.2f}x b256 {row['b256']:.2f}x",
                  flush=True)
    return {"metric": protocols.for_card(card).gate, "schemes": rows}


def format_table(results, schemes) -> str:
    lines = ["| entry | gate metric | fp32 | " + " | ".join(f"{s}: int8, golden cos, b1, b256" for s in schemes) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in schemes) + " |"]
    for name, r in results.items():
        fp32 = next(iter(r["schemes"].values()))["fp32"]
        cells = [f"{'PASS' if c['kept'] else 'FAIL'} {c['int8']:.4f}, {c['golden_min_cosine']:.3f}, "
                 f"{c['b1']:.2f}x, {c['b256']:.2f}x" for c in r["schemes"].values()]
        lines.append(f"| {name} | {r['metric']} | {fp32:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", action="append", help="entry name (repeatable); default: all")
    parser.add_argument("--scheme", action="append", choices=sorted(INT8_SCHEMES), help="default: all")
    parser.add_argument("--rounds", type=int, default=10, help="timing rounds per batch size")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "int8_schemes.json"))
    args = parser.parse_args(argv)
    schemes = args.scheme or list(INT8_SCHEMES)
    cpu = cpu_features()
    print(f"CPU: {cpu['model']} ({cpu['machine']}), flags {' '.join(cpu['flags'])}; int8 class {int8_cpu_class()}")
    print(f"gate: drop <= {INT8_MAX_DROP}, golden cosine >= {INT8_MIN_COSINE}; "
          f"publishing tries {', '.join(INT8_SCHEME_ORDER)} in turn")
    results = {name: measure(name, schemes, args.rounds) for name in (args.entry or registry.list_models())}
    print(format_table(results, schemes))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.partial")
    tmp.write_text(json.dumps({"cpu": cpu, "int8_class": int8_cpu_class(), "publishing_order": list(INT8_SCHEME_ORDER),
                               "results": results}, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    main()
