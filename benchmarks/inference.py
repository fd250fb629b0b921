"""Inference benchmark of the published zoo entries: Keras predict, compiled tf.function,
SavedModel, onnxruntime fp32 and int8, side by side.

    python benchmarks/inference.py                 # every published entry
    python benchmarks/inference.py --entry protonet --quick

Prints the timings and the speed-up ratios against their targets (PASS/FAIL) and writes
benchmarks/results/inference.json. onnxruntime runs through zoo.runtime.OnnxEmbedder, as an
application would (its default threads, batches of 64). The engines take turns round by round, so
a slow spell hits them alike; still, run it on an otherwise idle machine.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the compiled engine is a tf.function
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo import bench  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", action="append", help="entry name (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    args = parser.parse_args(argv)
    bench.run(args.entry, out=args.out, quick=args.quick)


if __name__ == "__main__":
    main()
