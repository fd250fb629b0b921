"""Training throughput of the zoo's methods on the TensorFlow backend, and the cost of Keras' fit().

    python benchmarks/training.py                          # every entry
    python benchmarks/training.py --entry facenet_triplet --quick

For each entry: images/s of one epoch of `fit()` with the entry's recipe configuration (its
model, sampler, augmentation, optimiser and resumable callbacks), after a short warm-up. For
facenet_triplet also a plain `tf.GradientTape` loop in a `tf.function` over the same encoder,
augmentation, loss and optimiser, fed the same batches, and the ratio fit / tape (target
>= 0.9: the method's fit() costs at most 10% over a hand-written loop). Prints a table and
writes benchmarks/results/training.json. Other method families add an entry to ENTRIES.
For models with a view augmentation (`model.augment`), also its share of the step time.

    python benchmarks/training.py --peers [--rounds 3] [--zoo-xla] [--zoo-bf16] [--set-env KEY=VALUE]

The peers' workload (the scripts in $PEERS_SCRIPTS, by default a `shared/bench/peers` folder beside the
checkout: conv4 on 28x28 grey, P x K batches with
K = 4, triplet loss with margin 0.2, Adam, random data; images/s of 30 training steps after a warm-up)
measured side by side: the zoo's `fit()` on TensorFlow and on JAX (the peers' zoo_triplet.py with this
Python), TensorFlow Similarity and pytorch-metric-learning (their scripts, in the environments that
its setup.sh builds under $PEERS_DIR or ~/.cache/zoo-peers; without them this mode
says so and stops). The scripts run unchanged, one process each, for every (mining, B) in {semi-hard,
batch-hard} x {128, 512}, alternating (each implementation in turn, then the next cell) for `--rounds`
rounds. Both TensorFlow libraries run with TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS=1: what
`import zoo` sets before TensorFlow loads, `zoo.prefer_onednn`; zoo_triplet.py imports Keras first, so
the variable is given to the process); zoo_tf_eigen and tfsim_eigen are the two with them off
(TensorFlow's own choice on x86 CPUs without AVX-512 VNNI, BF16 or AMX, where nothing is set: the run asks
TF Similarity's TensorFlow which it picks on this CPU, `tensorflow_default_onednn`). Prints the medians and
the ratios zoo TF / TF Similarity (both on oneDNN: "pass"; TF Similarity as TensorFlow runs it when nothing
is set: "pass_with_tensorflow_defaults") and zoo TF / PML against the 1.2 target (PEERS_TARGET), and writes
benchmarks/results/training_peers.json (or `--out`) with every run, the 1-minute load average beside each,
the CPU model and flags, the library versions and the command. `--set-env` sets a variable in every process
(an implementation's own setting wins); `--zoo-xla` adds the zoo on TensorFlow with XLA on (Keras' "auto"), the choice
`zoo.methods.base.default_jit_compile` turns off on CPUs; `--zoo-bf16` adds it under Keras' mixed_bfloat16
policy (what a recipe's `--precision mixed_bfloat16` trains with; 16-bit compute, so not the peers' float32).
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

FIT_VS_TAPE_TARGET = 0.9
QUICK_STEPS = 4


def from_recipe(script, preset=None):
    """build(steps=None) -> (compiled model, sampler, callbacks, images per step) of a recipe's default config
    (of its `preset`, for a recipe with presets)."""
    def build(steps=None):
        sys.path.insert(0, str(REPO / "recipes"))
        spec = importlib.util.spec_from_file_location(f"{script}_recipe", REPO / "recipes" / f"{script}.py")
        recipe = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(recipe)  # the entries are built from their recipes' configurations
        config = recipe.PRESETS[preset].config() if preset else recipe.Config()
        if steps:
            config = dataclasses.replace(config, steps_per_epoch=steps)
        model, sampler, callbacks = (recipe.build(config, preset) if preset else recipe.build(config))[:3]
        per_step = sum(len(x) for x in keras.tree.flatten(sampler[0][0]))  # e.g. 2 per pair
        return model, sampler, callbacks, per_step
    return build


def first_view_only(build):
    """`build` whose images per step count x_a alone (context prediction reads one image of each sampler pair)."""
    def wrapped(steps=None):
        model, sampler, callbacks, per_step = build(steps)
        return model, sampler, callbacks, per_step // 2
    return wrapped


# (entry name, build(steps=None) -> (compiled model, sampler, callbacks, images per step)); others append theirs.
ENTRIES = [
    ("facenet_triplet", from_recipe("face", "facenet_triplet")),
    ("deepface_softmax", from_recipe("face", "deepface_softmax")),
    ("siamese_contrastive", from_recipe("siamese_contrastive")),
    ("simclr", from_recipe("self_supervised", "simclr")),  # images per step: both views of each pair
    ("barlow_twins", from_recipe("self_supervised", "barlow_twins")),
    ("micle", from_recipe("self_supervised", "micle")),
    # 9 patches per image
    ("context_prediction", first_view_only(from_recipe("self_supervised", "context_prediction"))),
]


def fit_epoch(build, steps=None):
    """A function timing one epoch of fit() with the recipe callbacks; the graph is traced here (3 steps)."""
    from zoo.training import training_callbacks

    model, sampler, callbacks, per_step = build(steps)
    model.fit(sampler, epochs=1, steps_per_epoch=3, shuffle=False, verbose=0)

    def run():
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            model.fit(sampler, epochs=1, shuffle=False, verbose=0, callbacks=training_callbacks(workdir) + callbacks)
            seconds = time.perf_counter() - start
        return {"images_per_s": len(sampler) * per_step / seconds, "steps": len(sampler), "seconds": seconds}

    return run


def facenet_tape_epoch(steps=None):
    """A function timing one epoch of a plain tf.GradientTape loop over facenet_triplet's encoder, augmentation,
    loss and optimiser (a fresh copy of the recipe's), fed the recipe's batches; the graph is traced here (3 steps)."""
    import tensorflow as tf

    from zoo.methods.triplet import MINING
    from zoo.ops import l2_normalize

    model, sampler, _, per_step = from_recipe("face", "facenet_triplet")(steps)
    encoder, augment, optimizer = model.encoder, model.augment, model.optimizer
    triplet = MINING[model.mining]
    optimizer.build(encoder.trainable_variables)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            features = encoder(augment(images, training=True), training=True)  # (B, F)
            loss = triplet(labels, l2_normalize(tf.cast(features, tf.float32)), model.margin, model.squared)
        gradients = tape.gradient(loss, encoder.trainable_variables)
        optimizer.apply_gradients(zip(gradients, encoder.trainable_variables))
        return loss

    for i in range(3):
        train_step(*sampler[i])

    def run():
        start = time.perf_counter()
        for i in range(len(sampler)):
            loss = train_step(*sampler[i])
        float(loss)  # wait for the last step
        seconds = time.perf_counter() - start
        sampler.on_epoch_end()
        return {"images_per_s": len(sampler) * per_step / seconds, "steps": len(sampler), "seconds": seconds}

    return run


def augment_share(build, step_seconds, steps=None):
    """Share of a fit() step spent in the model's view augmentation (`model.augment` on all of a batch's
    images, timed alone in a tf.function over the sampler's batches); None for a model without one."""
    import tensorflow as tf

    model, sampler, _, _ = build(steps)
    if getattr(model, "augment", None) is None:
        return None
    augment = tf.function(lambda views: model.augment(tf.concat(views, axis=0), training=True))
    batches = [keras.tree.flatten(sampler[i][0]) for i in range(len(sampler))]
    augment(batches[0])
    start = time.perf_counter()
    for views in batches:
        out = augment(views)
    float(tf.reduce_sum(out))  # wait for the last batch
    return (time.perf_counter() - start) / len(batches) / step_seconds


def best(runs):
    """The fastest of repeated timings: the one least disturbed by other processes."""
    return max(runs, key=lambda r: r["images_per_s"])


PEERS_TARGET = 1.2  # the zoo's fit() on TensorFlow at least 1.2x each peer
PEER_SCRIPTS = Path(os.environ.get("PEERS_SCRIPTS", REPO.parent / "shared" / "bench" / "peers"))
PEER_CELLS = [(mining, batch) for batch in (128, 512) for mining in ("semi_hard", "batch_hard")]
# (name, script, environment's python (None: this one), backend, the script's name for each mining)
ONEDNN, EIGEN = {"TF_ENABLE_ONEDNN_OPTS": "1"}, {"TF_ENABLE_ONEDNN_OPTS": "0"}
ZOO_NAMES = {"semi_hard": "semi_hard", "batch_hard": "batch_hard"}
# (name, script, environment's python (None: this one), its variables, the script's name for each mining)
PEER_IMPLEMENTATIONS = [
    ("zoo_tf", "zoo_triplet.py", None, {"KERAS_BACKEND": "tensorflow", **ONEDNN}, ZOO_NAMES),
    ("zoo_tf_eigen", "zoo_triplet.py", None, {"KERAS_BACKEND": "tensorflow", **EIGEN}, ZOO_NAMES),
    ("zoo_jax", "zoo_triplet.py", None, {"KERAS_BACKEND": "jax"}, ZOO_NAMES),
    ("tfsim", "tfsim_triplet.py", "tfsim", ONEDNN, {"semi_hard": "semi-hard", "batch_hard": "hard"}),
    ("tfsim_eigen", "tfsim_triplet.py", "tfsim", EIGEN, {"semi_hard": "semi-hard", "batch_hard": "hard"}),
    ("pml", "pml_triplet.py", "pml", {}, {"semi_hard": "semihard", "batch_hard": "hard"}),
]
# Whether TensorFlow turns oneDNN on by itself on this CPU (it does on x86 with AVX-512 VNNI, BF16 or AMX).
TF_DEFAULT_ONEDNN = ("import os; os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None); "
                     "from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())")
PEER_VERSIONS = {  # what each environment reports about itself
    "zoo": "import keras, tensorflow, jax, jaxlib, numpy; print(f'keras {keras.__version__}, tensorflow "
           "{tensorflow.__version__}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, numpy {numpy.__version__}')",
    "tfsim": "import tensorflow, tensorflow_similarity, numpy; print(f'tensorflow {tensorflow.__version__}, "
             "tensorflow_similarity {tensorflow_similarity.__version__}, numpy {numpy.__version__}')",
    "pml": "import torch, pytorch_metric_learning, numpy; print(f'torch {torch.__version__}, "
           "pytorch_metric_learning {pytorch_metric_learning.__version__}, numpy {numpy.__version__}')",
}


XLA_ON = ("import runpy, sys; from zoo.methods import base; base.default_jit_compile = lambda: True; "
          "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")  # the script, with XLA on
BF16_ON = ("import runpy, sys, keras; keras.config.set_dtype_policy('mixed_bfloat16'); "
           "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")  # under mixed_bfloat16
WRAPPERS = {"zoo_tf_xla": XLA_ON, "zoo_tf_bf16": BF16_ON}  # implementations that run the zoo's script wrapped


def peer_environments():
    """{"tfsim": python, "pml": python} of the peers' environments, or None where they are not built."""
    folder = Path(os.environ.get("PEERS_DIR", Path.home() / ".cache" / "zoo-peers"))
    pythons = {name: folder / name / "bin" / "python" for name in ("tfsim", "pml")}
    return pythons if all(p.exists() for p in pythons.values()) else None


def cpu_description():
    """The CPU model, its flags and the core count, from /proc/cpuinfo where there is one."""
    info = {"model": platform.processor() or platform.machine(), "flags": [], "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        elif key.strip() == "flags" and not info["flags"]:
            info["flags"] = value.split()
    return info


def loadavg():
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run_peer(python, script, args, env, timeout=1800, wrapper=None):
    """images/s that one peer script prints (its last figure), and the seconds its process took.

    `wrapper`: code that runs the script (argv[1:]) after a change: XLA_ON (`jit_compile=True`, Keras' "auto" on
    TensorFlow, instead of the zoo's default) or BF16_ON (Keras' mixed_bfloat16 policy).
    """
    start = time.perf_counter()
    done = subprocess.run([str(python), *(["-c", wrapper] if wrapper else []), str(PEER_SCRIPTS / script), *args],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    seconds = time.perf_counter() - start
    found = re.findall(r"([0-9.]+) images/s", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{script} {' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    return float(found[-1]), seconds


def peers_main(args, argv):
    """Side-by-side throughput on the peers' workload; returns the results written to args.out (None: no peers)."""
    pythons = peer_environments()
    if pythons is None or not PEER_SCRIPTS.is_dir():
        print(f"peers' environments or scripts not found ($PEERS_DIR or ~/.cache/zoo-peers; {PEER_SCRIPTS}): "
              f"build them with {PEER_SCRIPTS / 'setup.sh'}")
        return None
    pythons = {**pythons, None: Path(sys.executable)}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for assignment in args.set_env or []:
        key, _, value = assignment.partition("=")
        env[key] = value
    versions = {}
    for name, python in (("zoo", pythons[None]), ("tfsim", pythons["tfsim"]), ("pml", pythons["pml"])):
        done = subprocess.run([str(python), "-c", PEER_VERSIONS[name]], env=env, capture_output=True, text=True)
        versions[name] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    done = subprocess.run([str(pythons["tfsim"]), "-c", TF_DEFAULT_ONEDNN], env=env, capture_output=True, text=True)
    default_onednn = done.stdout.strip().splitlines()[-1:] == ["True"]
    tfsim_default = "tfsim" if default_onednn else "tfsim_eigen"  # TF Similarity as it runs when nothing is set
    cells = [(m, b) for m, b in PEER_CELLS if not args.cell or f"{m}:{b}" in args.cell]
    wrapped = [name for name, wanted in (("zoo_tf_xla", args.zoo_xla), ("zoo_tf_bf16", args.zoo_bf16)) if wanted]
    implementations = PEER_IMPLEMENTATIONS[:1] + [(name, *PEER_IMPLEMENTATIONS[0][1:]) for name in wrapped] \
        + PEER_IMPLEMENTATIONS[1:]
    variables = {name: own for name, _, _, own, _ in implementations}
    runs = {(m, b, name): [] for m, b in cells for name, *_ in implementations}
    print(f"{len(cells)} cells x {len(implementations)} implementations x {args.rounds} rounds; "
          f"1-minute load average {loadavg()[0] if loadavg() else '-'}", flush=True)
    for round_ in range(args.rounds):
        for mining, batch in cells:
            for name, script, python, own, names in implementations:
                run_env = dict(env, **own)
                load_before = loadavg()
                images_per_s, seconds = run_peer(pythons[python], script, [names[mining], str(batch)], run_env,
                                                 wrapper=WRAPPERS.get(name))
                runs[(mining, batch, name)].append({"images_per_s": images_per_s, "process_seconds": seconds,
                                                    "loadavg_before": load_before, "loadavg_after": loadavg()})
                print(f"round {round_ + 1} {mining} B={batch} {name}: {images_per_s:.0f} images/s "
                      f"(load {f'{load_before[0]:.2f}' if load_before else '-'})", flush=True)
    names = [name for name, *_ in implementations]
    results = {
        "command": "python " + " ".join([Path(__file__).relative_to(REPO).as_posix(), *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": cpu_description(), "platform": platform.platform(),
        "python": platform.python_version(), "versions": versions,
        "environment": {key: env.get(key) for key in ("TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS", "OMP_NUM_THREADS")},
        "variables": variables, "tensorflow_default_onednn": default_onednn, "tfsim_as_by_default": tfsim_default,
        "set_env": args.set_env or [], "rounds": args.rounds, "target": PEERS_TARGET,
        "order": "per round, per cell: " + ", ".join(names), "cells": [],
    }
    print(f"\n{'mining':<12}{'B':>5}" + "".join(f"{n:>13}" for n in names) + f"{'TF/TFSim':>10}{'TF/PML':>9}"
          f"{'JAX/TFSim':>11}{'JAX/PML':>9}{'TF/TFSim-eigen':>16}  target {PEERS_TARGET}")
    best_line = [f"best of {args.rounds} rounds (the run least slowed by other load, or by a tf.data wait at the "
                 "end of a Keras fit(): TF Similarity's fit() has it too):"]
    for mining, batch in cells:
        medians = {n: statistics.median(r["images_per_s"] for r in runs[(mining, batch, n)]) for n in names}
        best = {n: max(r["images_per_s"] for r in runs[(mining, batch, n)]) for n in names}
        ratios = {f"{a}/{b}": medians[a] / medians[b] for a in names if a.startswith("zoo")
                  for b in names if not b.startswith("zoo")}
        passed = ratios["zoo_tf/tfsim"] >= PEERS_TARGET and ratios["zoo_tf/pml"] >= PEERS_TARGET
        # each library as it runs when nothing is set: TF Similarity without oneDNN where TensorFlow leaves it off
        passed_defaults = (ratios[f"zoo_tf/{tfsim_default}"] >= PEERS_TARGET and ratios["zoo_tf/pml"] >= PEERS_TARGET
                           if tfsim_default in names else None)
        loads = [r["loadavg_before"][0] for n in names for r in runs[(mining, batch, n)] if r["loadavg_before"]]
        results["cells"].append({"mining": mining, "batch": batch, "median_images_per_s": medians, "ratios": ratios,
                                 "best_images_per_s": best,
                                 "best_ratios": {f"zoo_tf/{b}": best["zoo_tf"] / best[b] for b in ("tfsim", "pml")},
                                 "pass": passed, "pass_with_tensorflow_defaults": passed_defaults,
                                 "loadavg_1min_median": statistics.median(loads) if loads else None,
                                 "runs": {n: runs[(mining, batch, n)] for n in names}})
        print(f"{mining:<12}{batch:>5}" + "".join(f"{medians[n]:>13.0f}" for n in names)
              + f"{ratios['zoo_tf/tfsim']:>10.2f}{ratios['zoo_tf/pml']:>9.2f}{ratios['zoo_jax/tfsim']:>11.2f}"
              f"{ratios['zoo_jax/pml']:>9.2f}{ratios.get('zoo_tf/tfsim_eigen', float('nan')):>16.2f}"
              f"  {'PASS' if passed else 'below'}", flush=True)
        best_line.append(f"{mining:<12}{batch:>5}" + "".join(f"{best[n]:>13.0f}" for n in names)
                         + f"{best['zoo_tf'] / best['tfsim']:>10.2f}{best['zoo_tf'] / best['pml']:>9.2f}")
    print("\n".join(best_line))
    results["all_pass"] = all(c["pass"] for c in results["cells"])
    results["all_pass_with_tensorflow_defaults"] = all(c["pass_with_tensorflow_defaults"] for c in results["cells"])
    print(f"medians of {args.rounds} rounds; load averages {loadavg()} at the end; {results['machine']['model']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", action="append", help="entry name (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps instead of an epoch (smoke test)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per entry; the fastest is kept")
    parser.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/training.json, "
                        "or training_peers.json with --peers)")
    parser.add_argument("--peers", action="store_true", help="the peers' workload beside TF Similarity and PML")
    parser.add_argument("--rounds", type=int, default=3, help="--peers: rounds of alternating runs (medians)")
    parser.add_argument("--cell", action="append", help="--peers: only this MINING:B (repeatable), e.g. semi_hard:512")
    parser.add_argument("--zoo-xla", action="store_true", help="--peers: also the zoo on TensorFlow with XLA on "
                        "(jit_compile=True, Keras' \"auto\"), beside its default")
    parser.add_argument("--zoo-bf16", action="store_true", help="--peers: also the zoo on TensorFlow under Keras' "
                        "mixed_bfloat16 policy (a recipe's --precision mixed_bfloat16)")
    parser.add_argument("--set-env", action="append", metavar="KEY=VALUE",
                        help="--peers: an environment variable for every process (repeatable)")
    args = parser.parse_args(argv)
    if args.peers:
        args.out = args.out or str(REPO / "benchmarks" / "results" / "training_peers.json")
        return peers_main(args, argv)
    args.out = args.out or str(REPO / "benchmarks" / "results" / "training.json")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"the training benchmark runs on the TensorFlow backend, got {keras.backend.backend()!r}")
    known = dict(ENTRIES)
    names = args.entry or list(known)
    for name in names:
        if name not in known:
            raise KeyError(f"unknown entry {name!r}; expected one of {list(known)}")
    steps = QUICK_STEPS if args.quick else None

    results = {"backend": "tensorflow", "machine": f"{os.cpu_count()} CPU cores", "quick": args.quick,
               "repeats": args.repeats, "entries": {}}
    print(f"{'entry':<24}{'fit() images/s':>16}{'steps':>8}{'seconds':>10}{'augment share':>16}")
    for name in names:
        fit = fit_epoch(known[name], steps)
        if name == "facenet_triplet":  # alternate fit and tape epochs, so both see the same machine load
            tape = facenet_tape_epoch(steps)
            fit_runs, tape_runs = zip(*[(fit(), tape()) for _ in range(args.repeats)])
            r, t = best(fit_runs), best(tape_runs)
            ratio = r["images_per_s"] / t["images_per_s"]
            results["facenet_triplet_fit_vs_tape"] = {
                "fit_images_per_s": r["images_per_s"], "tape_images_per_s": t["images_per_s"], "ratio": ratio,
                "target": FIT_VS_TAPE_TARGET, "pass": ratio >= FIT_VS_TAPE_TARGET}
        else:
            r = best([fit() for _ in range(args.repeats)])
        r["augment_share"] = augment_share(known[name], r["seconds"] / r["steps"], steps)
        results["entries"][name] = r
        share = "-" if r["augment_share"] is None else f"{r['augment_share']:.1%}"
        print(f"{name:<24}{r['images_per_s']:>16.1f}{r['steps']:>8}{r['seconds']:>10.1f}{share:>16}", flush=True)
    if "facenet_triplet_fit_vs_tape" in results:
        v = results["facenet_triplet_fit_vs_tape"]
        print(f"facenet_triplet: fit() {v['fit_images_per_s']:.1f} images/s, GradientTape loop "
              f"{v['tape_images_per_s']:.1f} images/s, ratio {v['ratio']:.3f} "
              f"({'PASS' if v['pass'] else 'FAIL'}, target >= {FIT_VS_TAPE_TARGET})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
