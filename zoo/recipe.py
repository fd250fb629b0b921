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
        (config, args): the dataclass instance and the namespace with `smoke`, `root`, `workdir`, `fresh`.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a few steps on a small slice (tests)")
    parser.add_argument("--root", default=None, help="exports folder to publish into (default: exports/)")
    parser.add_argument("--workdir", default=None, help="checkpoints and logs (default: runs/<name>[-smoke])")
    parser.add_argument("--fresh", action="store_true", help="ignore an interrupted run's backup and start over")
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


def training_record(config, seconds, images_seen, **extra):
    """The card's `training` field: config, backend, minutes and images/s of a run."""
    import keras

    return {"config": dataclasses.asdict(config), "backend": keras.backend.backend(),
            "minutes": round(seconds / 60, 2), "images_per_s": round(images_seen / max(seconds, 1e-9), 1),
            "machine": f"{os.cpu_count()} CPU cores", **extra}


def recipe_command(name, argv=None):
    """The command that reproduces a run, for the card."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kept = [a for i, a in enumerate(argv)
            if not a.startswith(("--root", "--workdir")) and (i == 0 or argv[i - 1] not in ("--root", "--workdir"))]
    return " ".join(["python", f"recipes/{name}.py", *kept])


def print_metrics(name, metrics):
    print(f"[{name}] held-out metrics:\n" + json.dumps(metrics, indent=2, default=float))
