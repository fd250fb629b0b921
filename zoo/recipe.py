"""What every recipe shares: a Config from the command line, resumable fit(), timing, embedding in batches."""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def parse_config(config_cls, smoke_overrides, argv=None, description=None):
    """Build a recipe's Config from its defaults, `--smoke` and `--field value` overrides.

    Args:
        config_cls: type. A dataclass whose fields are the recipe's hyper-parameters.
        smoke_overrides: dict. Field values for `--smoke` (a run of seconds on a small slice, for tests).
        argv: list of str or None. Command line (default sys.argv[1:]).
        description: str or None. Shown by --help.

    Returns:
        (config, args): the dataclass instance and the namespace with `smoke`, `root`, `workdir`, `fresh`,
        `train_only` and `trained`.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a few steps on a small slice (tests)")
    parser.add_argument("--root", default=None, help="exports folder to publish into (default: exports/)")
    parser.add_argument("--workdir", default=None, help="checkpoints and logs (default: runs/<name>[-smoke])")
    parser.add_argument("--fresh", action="store_true", help="ignore an interrupted run's backup and start over")
    parser.add_argument("--train-only", action="store_true",
                        help="train, save the weights into the workdir and stop (e.g. on a GPU machine without "
                             "TensorFlow); publish later with --trained")
    parser.add_argument("--trained", default=None, metavar="DIR",
                        help="skip training: load the weights a --train-only run saved in DIR, then evaluate "
                             "and publish")
    for field in dataclasses.fields(config_cls):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None,
                            type=_parser_type(field.default), help=f"default {field.default!r}")
    args = parser.parse_args(argv)
    values = dict(smoke_overrides) if args.smoke else {}
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
                   if getattr(args, f.name) is not None})
    config = config_cls(**values)
    name = getattr(config, "name", config_cls.__module__)
    if args.workdir is None:
        args.workdir = str(REPO / "runs" / (name + ("-smoke" if args.smoke else "")))
    if args.root is None and args.smoke:
        args.root = str(REPO / "runs" / "smoke-exports")
    return config, args


def _parser_type(default):
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes")
    return type(default) if isinstance(default, (int, float, str)) else str


def training_callbacks(workdir, fresh=False):
    """Keras callbacks of a resumable run: BackupAndRestore (resume after a kill) and a CSV log.

    Args:
        workdir: str. Folder of the run; `backup/` inside it is removed when training completes.
        fresh: bool. Delete an earlier interrupted run's backup first.
    """
    import keras
    import shutil

    workdir = Path(workdir)
    if fresh and (workdir / "backup").exists():
        shutil.rmtree(workdir / "backup")
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(str(workdir / "backup"), save_freq="epoch", delete_checkpoint=True),
        keras.callbacks.CSVLogger(str(workdir / "log.csv"), append=True),
    ]


class Stopwatch:
    """Wall-clock seconds of a block: `with Stopwatch() as t: ...; t.seconds`."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def embed(model, images, batch_size=256):
    """(N, ...) inputs -> (N, D) float32 numpy embeddings of a Keras model, in batches."""
    outputs = [np.asarray(model.predict_on_batch(images[i:i + batch_size]), dtype=np.float32)
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, model.output_shape[-1]), np.float32)


def machine_description():
    """'1 NVIDIA H200 GPU' when the Keras backend trains on a GPU, else 'N CPU cores'."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            return f"1 {device.device_kind} GPU"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"1 {torch.cuda.get_device_name()} GPU"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"{len(gpus)} GPU"
    return f"{os.cpu_count()} CPU cores"


def training_record(config, seconds, images_seen, *, backend=None, machine=None, **extra):
    """The card's `training` field: config, backend, machine, minutes and images/s of a run.

    `backend` and `machine` default to this process's; a run restored with --trained passes the
    training run's (`TrainingRun.backend`, `TrainingRun.machine`).
    """
    import keras

    return {"config": dataclasses.asdict(config), "backend": backend or keras.backend.backend(),
            "minutes": round(seconds / 60, 2), "images_per_s": round(images_seen / max(seconds, 1e-9), 1),
            "machine": machine or machine_description(), **extra}


@dataclasses.dataclass
class TrainingRun:
    """What `fit_or_restore` reports: wall-clock seconds and epochs of fit(), and where it ran."""

    seconds: float
    epochs: int
    backend: str
    machine: str


TRAINED_WEIGHTS, TRAINED_RECORD = "trained.weights.h5", "trained.json"


def fit_or_restore(model, config, args, fit):
    """Train `model` with `fit()`, or restore the weights of an earlier `--train-only` run.

    After training, the weights and a record (config, seconds, epochs, backend, machine, sha256 of
    the weights) are written atomically into `args.workdir`; with `--train-only` the process then
    exits, and `--trained DIR` later loads them, checked against the record, in place of training.
    This splits a run across machines: train on a GPU machine (any backend), publish where
    TensorFlow is installed.

    Args:
        model: keras.Model. Built, so that its weights can be loaded.
        config: dataclass. The recipe's config; a restored run must have been trained with the same.
        args: namespace from `parse_config`.
        fit: callable () -> keras History. Runs model.fit.

    Returns:
        TrainingRun.
    """
    import hashlib

    import keras

    if args.trained:
        folder = Path(args.trained)
        weights, record_path = folder / TRAINED_WEIGHTS, folder / TRAINED_RECORD
        if not weights.is_file() or not record_path.is_file():
            raise FileNotFoundError(f"--trained {folder}: expected {TRAINED_WEIGHTS} and {TRAINED_RECORD} there, "
                                    "as written by a --train-only run")
        record = json.loads(record_path.read_text())
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != record["sha256"]:
            raise ValueError(f"{weights}: sha256 {digest} does not match {record['sha256']} in {record_path}")
        if record["config"] != dataclasses.asdict(config):
            raise ValueError(f"--trained {folder} was trained with config {record['config']}, "
                             f"not this run's {dataclasses.asdict(config)}: pass the same options")
        model.load_weights(str(weights))
        print(f"[{config.name}] restored the weights trained in {record['seconds'] / 60:.2f} min on "
              f"{record['machine']} ({record['backend']}) from {folder}")
        return TrainingRun(record["seconds"], record["epochs"], record["backend"], record["machine"])

    with Stopwatch() as clock:
        history = fit()
    run = TrainingRun(clock.seconds, len(history.epoch), keras.backend.backend(), machine_description())
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / ("partial-" + TRAINED_WEIGHTS)
    model.save_weights(str(partial))
    record = {"config": dataclasses.asdict(config), "seconds": run.seconds, "epochs": run.epochs,
              "backend": run.backend, "machine": run.machine,
              "sha256": hashlib.sha256(partial.read_bytes()).hexdigest()}
    os.replace(partial, workdir / TRAINED_WEIGHTS)
    (workdir / ("partial-" + TRAINED_RECORD)).write_text(json.dumps(record, indent=2))
    os.replace(workdir / ("partial-" + TRAINED_RECORD), workdir / TRAINED_RECORD)
    if args.train_only:
        print(f"[{config.name}] trained in {run.seconds / 60:.2f} min on {run.machine}; weights in {workdir}. "
              f"Publish with: {recipe_command(config.name)} --trained {workdir}")
        sys.exit(0)
    return run


def recipe_command(name, argv=None):
    """The command that reproduces a run, for the card (where it was published from is left out)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with_value = ("--root", "--workdir", "--trained")
    kept = [a for i, a in enumerate(argv)
            if not a.startswith(with_value + ("--train-only",)) and (i == 0 or argv[i - 1] not in with_value)]
    return " ".join(["python", f"recipes/{name}.py", *kept])


def print_metrics(name, metrics):
    print(f"[{name}] held-out metrics:\n" + json.dumps(metrics, indent=2, default=float))
