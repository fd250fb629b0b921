"""Cost of triplet mining: each mining loss's forward+backward against batch-hard and a conv4 step.

    KERAS_BACKEND=jax python benchmarks/mining.py           # or tensorflow (the default)
    python benchmarks/mining.py --quick                     # fewer repeats (smoke test)

For B in 128, 256, 512 (P x K labels with K = 4, 64-d L2-normalised embeddings), times the
gradient of each loss with respect to the embeddings, compiled (XLA tf.function on TensorFlow,
jax.jit on JAX), as the median of repeated calls after warm-up (compilation excluded), the
losses called in turn so that load from elsewhere weighs on all of them alike; and one
conv4 training step (28x28x1 images, batch-hard loss, Adam) on a batch of the same size. Prints
a table, checks the design target (semi-hard at most 3x batch-hard at B = 512) and writes
benchmarks/results/mining.json. Timings on a shared machine are noisy: compare within one run.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from zoo import backbones, losses  # noqa: E402

BATCH_SIZES = (128, 256, 512)
K = 4  # images per class in a P x K batch
DIM = 64
TARGET_BATCH, TARGET_RATIO = 512, 3.0  # the design: semi-hard <= 3x batch-hard at B = 512
LOSSES = {
    "semi_hard": losses.triplet_semi_hard,
    "batch_hard": losses.triplet_batch_hard,
    "batch_all": losses.triplet_batch_all,
    "hard_cluster": losses.hard_cluster,
}


def compiled_gradient(loss):
    """Compiled function (labels, embeddings) -> d loss / d embeddings, as numpy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def gradient(labels, embeddings):
            with tf.GradientTape() as tape:
                tape.watch(embeddings)
                value = loss(labels, embeddings)
            return tape.gradient(value, embeddings)

        return lambda labels, embeddings: gradient(labels, embeddings).numpy()
    if backend == "jax":
        import jax

        gradient = jax.jit(jax.grad(lambda embeddings, labels: loss(labels, embeddings)))
        return lambda labels, embeddings: np.asarray(gradient(embeddings, labels))
    raise ValueError(f"mining benchmark supports KERAS_BACKEND tensorflow or jax, got {backend!r}")


def median_ms(fns, repeats, warmup=3):
    """Median wall time in milliseconds of each of `fns` (name -> callable), called in turn.

    Round-robin, so that load from elsewhere on the machine weighs on every function alike;
    the first `warmup` rounds (compilation) are excluded.
    """
    times = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


def conv4_step(batch_size):
    """A function running one compiled conv4 training step (batch-hard loss) on a fixed batch."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(batch_size, 28, 28, 1)).astype(np.float32)
    labels = np.repeat(np.arange(batch_size // K), K).astype(np.int32)
    model = backbones.conv4(input_shape=(28, 28, 1))
    model.compile(
        optimizer="adam",
        # Keras hands y_true over as floats; the loss wants integer class ids.
        loss=lambda y_true, y_pred: losses.triplet_batch_hard(ops.cast(y_true, "int32"), y_pred),
    )
    return lambda: model.train_on_batch(images, labels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mining.json"))
    args = parser.parse_args(argv)
    repeats, step_repeats = (3, 3) if args.quick else (50, 10)
    backend = keras.backend.backend()
    gradients = {name: compiled_gradient(loss) for name, loss in LOSSES.items()}

    results = {}
    for batch_size in BATCH_SIZES:
        rng = np.random.default_rng(batch_size)
        labels = rng.permutation(np.repeat(np.arange(batch_size // K), K)).astype(np.int32)
        embeddings = rng.normal(size=(batch_size, DIM)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        step_ms = median_ms({"conv4": conv4_step(batch_size)}, step_repeats)["conv4"]
        calls = {name: lambda g=g: g(labels, embeddings) for name, g in gradients.items()}
        times = median_ms(calls, repeats)
        results[batch_size] = {
            "conv4_step_ms": step_ms,
            "losses": {
                name: {
                    "ms": ms,
                    "vs_batch_hard": ms / times["batch_hard"],
                    "vs_conv4_step": ms / step_ms,
                }
                for name, ms in times.items()
            },
        }

    print(
        f"triplet mining, forward+backward, backend={backend}, "
        f"median of {repeats} (conv4 step: {step_repeats})"
    )
    print(f"{'B':>5} {'loss':<13} {'ms':>9} {'x batch-hard':>13} {'x conv4 step':>13}")
    for batch_size, row in results.items():
        step = row["conv4_step_ms"]
        print(f"{batch_size:>5} {'conv4 step':<13} {step:>9.3f} {'':>13} {1.0:>13.3f}")
        for name, r in row["losses"].items():
            print(
                f"{'':>5} {name:<13} {r['ms']:>9.3f} {r['vs_batch_hard']:>13.2f} "
                f"{r['vs_conv4_step']:>13.4f}"
            )
    ratio = results[TARGET_BATCH]["losses"]["semi_hard"]["vs_batch_hard"]
    met = ratio <= TARGET_RATIO
    print(
        f"target: semi-hard <= {TARGET_RATIO:g}x batch-hard at B={TARGET_BATCH}: "
        f"measured {ratio:.2f}x -> {'PASS' if met else 'FAIL'}"
    )

    report = {
        "backend": backend,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "quick": args.quick,
        "repeats": repeats,
        "conv4_step_repeats": step_repeats,
        "embedding_dim": DIM,
        "k_per_class": K,
        "results": {str(b): row for b, row in results.items()},
        "target": {
            "batch_size": TARGET_BATCH,
            "max_semi_hard_vs_batch_hard": TARGET_RATIO,
            "measured": ratio,
            "met": met,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
