"""The training engine of every recipe: a Config from the command line (`parse_config`, with presets), the one
training path (`train`: resumable fit(), --train-only / --trained, --devices, --precision), timing, embedding
in batches, the cosine-decay compile, and publishing a run (`publish_run`: the protocol on the held-out part,
the card, the export)."""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Preset:
    """One named configuration of a recipe, as data (keras-hub's presets): a recipe with presets takes
    `--preset NAME`, and the card's `recipe` command names it, so the command replays the entry.

    Args:
        config: type. the dataclass of the preset's hyper-parameters (its defaults are the preset's).
        smoke: dict. field values for `--smoke`.
        card: dict. the card fields the preset publishes with (method, protocol, dataset, paper, ...).
        build: callable | None. what the recipe calls to build the preset's model (recipe-specific).
        summary: str. one line for `--help`.
    """

    config: type
    smoke: dict
    card: dict
    build: object = None
    summary: str = ""


def parse_config(config_cls, smoke_overrides=None, argv=None, description=None):
    """Build a recipe's Config from its defaults, `--smoke` and `--field value` overrides.

    Args:
        config_cls: type | dict. A dataclass whose fields are the recipe's hyper-parameters, or a recipe's
            presets, name -> `Preset`: then `--preset NAME` picks the dataclass and its smoke overrides, and
            `args.preset` is the name.
        smoke_overrides: dict | None. Field values for `--smoke` (a run of seconds on a small slice, for tests);
            with presets, the preset's.
        argv: list of str or None. Command line (default sys.argv[1:]).
        description: str or None. Shown by --help.

    Returns:
        (config, args): the dataclass instance and the namespace with `preset` (with presets), `smoke`, `root`,
        `workdir`, `fresh`,
        `train_only`, `trained`, `data`, `init`, `test_fraction`, `parent` (`parent_entry(init)` or None),
        `devices`, `distribution` (`zoo.distributed.start(devices)`'s record, or None on one device) and
        `precision`.
        With `--init`, the parent's training config gives the defaults (then `--smoke`, then the flags).
        With `--devices N` (N > 1) the data-parallel engine is set up here, before the recipe builds its model;
        so is `--precision`'s Keras dtype policy (`train` turns the model back to float32 after fit()).
    """
    preset = None
    if isinstance(config_cls, dict):
        choose = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # `--p` is a field, not --preset
        choose.add_argument("--preset", choices=sorted(config_cls))
        choose.add_argument("--init")
        known = choose.parse_known_args(argv)[0]
        chosen = known.preset or (_parent_preset(known.init, config_cls) if known.init else None)
        if known.preset is None and chosen is not None:  # --init ENTRY: the preset its card's recipe names
            argv = ["--preset", chosen, *(sys.argv[1:] if argv is None else argv)]
        if chosen is None:
            lines = "\n".join(f"  {n}: {p.summary}" for n, p in sorted(config_cls.items()))
            argparse.ArgumentParser(description=description).error(f"choose a --preset:\n{lines}")
        preset, presets = config_cls[chosen], config_cls
        config_cls, smoke_overrides = preset.config, preset.smoke
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if preset is not None:
        parser.add_argument("--preset", choices=sorted(presets), required=True,
                            help="; ".join(f"{n}: {p.summary}" for n, p in sorted(presets.items())))
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps on a small slice, published without int8 (tests; seconds)")
    parser.add_argument("--root", default=None, help="exports folder to publish into (default: exports/)")
    parser.add_argument("--workdir", default=None, help="checkpoints and logs (default: runs/<name>[-smoke])")
    parser.add_argument("--fresh", action="store_true", help="ignore an interrupted run's backup and start over")
    parser.add_argument("--train-only", action="store_true",
                        help="train, save the weights into the workdir and stop (e.g. on a GPU machine without "
                             "TensorFlow); publish later with --trained")
    parser.add_argument("--trained", default=None, metavar="DIR",
                        help="skip training: load the weights a --train-only run saved in DIR (or those of a "
                             "published entry's folder, e.g. exports/NAME), then evaluate and publish")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="train on your own folder instead of the bundled set: DIR/<class>/<image>, DIR/<image> "
                             "or DIR/captions.csv (image,caption); held-out classes are split off by --test-fraction")
    parser.add_argument("--init", default=None, metavar="ENTRY",
                        help="fine-tune: start from a published entry's weights (a name in the zoo root, or its "
                             "folder); its recipe options are the defaults, its preprocessing contract is kept")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="with --data: the share of your classes held out for the card's metrics (seeded by "
                             "--seed; default 0.25)")
    parser.add_argument("--devices", type=int, default=1, metavar="N",
                        help="data-parallel training on N devices of this machine (JAX: keras.distribution."
                             "DataParallel; TensorFlow: tf.distribute.MirroredStrategy); the batch size stays the "
                             "global batch, B/N rows per device, and in-batch losses see all B (default 1)")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="Keras dtype policy of the training step: mixed_bfloat16 (CPUs with AVX512_BF16 or "
                             "AMX, TPUs, recent GPUs) or mixed_float16 (GPUs, with loss scaling) compute in 16 "
                             "bits and keep float32 weights; evaluation and export run in float32 (default "
                             "float32)")
    for field in dataclasses.fields(config_cls):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None,
                            type=_parser_type(field.default), choices=field.metadata.get("choices"),
                            help=f"default {field.default!r}")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as the card's command gives it (--preset included)
    args.parent = None
    values = {}
    if args.init:
        from zoo.finetune import parent_entry

        args.parent = parent_entry(args.init)
        fields = {f.name for f in dataclasses.fields(config_cls)} - {"name"}
        values.update({k: v for k, v in _parent_config(args.parent["card"]).items() if k in fields})
    values.update((smoke_overrides or {}) if args.smoke else {})
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
                   if getattr(args, f.name) is not None})
    config = config_cls(**values)
    name = getattr(config, "name", config_cls.__module__)
    if args.workdir is None:
        args.workdir = str(REPO / "runs" / (name + ("-smoke" if args.smoke else "")))
    if args.root is None and args.smoke:
        args.root = str(REPO / "runs" / "smoke-exports")
    if args.devices < 1:
        parser.error(f"--devices must be >= 1, got {args.devices}")
    from zoo import distributed

    # Before the recipe builds its model: the engine replicates (JAX) or mirrors (TF) the variables made after.
    # A --trained run trains nothing, so it stays on one device.
    try:
        args.distribution = None if args.trained else distributed.start(args.devices)
    except ValueError as e:
        parser.error(str(e))
    if not args.trained:  # a --trained run computes nothing to train: float32 from the start
        import keras

        keras.config.set_dtype_policy(args.precision)  # the layers the recipe builds next take it
    return config, args


def _parent_preset(init, presets):
    """The preset named by the recipe command of the entry `init` (for `--init ENTRY` without `--preset`); for an
    entry converted rather than trained here, whose command is its import script, the preset its card names for
    fine-tuning (`training.fine_tune.preset`)."""
    from zoo.finetune import parent_entry

    card = parent_entry(init)["card"]
    command = card.recipe.split()
    preset = command[command.index("--preset") + 1] if "--preset" in command[:-1] else None
    preset = preset or (card.training.get("fine_tune") or {}).get("preset")
    return preset if preset in presets else None


def _parent_config(card) -> dict:
    """The config a fine-tune from `card` starts from: its training config, or for a converted entry the one its
    card names for fine-tuning (`training.fine_tune.config`: e.g. the backbone that holds its weights)."""
    return card.training.get("config") or (card.training.get("fine_tune") or {}).get("config") or {}


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def to_float32(model) -> None:
    """Set every layer of `model` (and the global Keras policy) to compute in float32, in place.

    Under a mixed policy the weights are float32 already, only the computation is 16-bit: after this the same
    model evaluates and exports as one built in float32 (an onnxruntime CPU graph has no bfloat16 kernels).
    A model that is float32 throughout is left as it is (its traced functions stay).
    """
    import keras

    keras.config.set_dtype_policy("float32")
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    if all(layer.dtype_policy.name == "float32" for layer in layers):
        return
    for layer in layers:
        layer.dtype_policy = "float32"
        if isinstance(layer, keras.Model):  # functions traced under the old policy are traced again
            layer.train_function = layer.test_function = layer.predict_function = None


def _parser_type(default):
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes")
    return type(default) if isinstance(default, (int, float, str)) else str


# What keras.callbacks.BackupAndRestore writes into its folder (with and without double_checkpoint).
BACKUP_FILES = ("latest.weights.h5", "training_metadata.json", "latest.weights.h5.bkp",
                "training_metadata.json.bkp")


def training_callbacks(workdir, fresh=False):
    """Keras callbacks of a resumable run: BackupAndRestore (resume after a kill) and a CSV log.

    A `backup/` that holds anything BackupAndRestore does not write is refused (FileExistsError), fresh or not:
    the callback would resume from it and delete the whole folder when training completes.

    Args:
        workdir: str. Folder of the run; `backup/` inside it is removed when training completes.
        fresh: bool. Delete an earlier interrupted run's backup first.
    """
    import keras

    from zoo.runtime.writes import stray_entry

    workdir = Path(workdir)
    backup = workdir / "backup"
    if os.path.lexists(backup):
        if backup.is_symlink() or not backup.is_dir():
            stray = backup
        else:
            name = stray_entry(backup, BACKUP_FILES)
            stray = backup / name if name else None
        if stray:
            raise FileExistsError(f"{stray}: not written by Keras' BackupAndRestore; refusing to resume from or "
                                  "delete the run's backup folder (move it out, or choose another --workdir)")
        if fresh:
            for name in BACKUP_FILES:
                (backup / name).unlink(missing_ok=True)
            backup.rmdir()
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
    step = model.predict_on_batch
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's, for a model made in a --devices fit
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        # predict_on_batch would run the whole batch on every replica and concatenate their N outputs.
        step = lambda x: model(x, training=False).numpy()  # noqa: E731
    outputs = [np.asarray(step(images[i:i + batch_size]), dtype=np.float32)
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


@dataclasses.dataclass
class TrainingRun:
    """What `train` reports: wall-clock seconds, epochs and images of fit() (this process's share of a resumed
    run, or the --train-only run's), where it ran, its last loss, and the command that reproduces it."""

    seconds: float
    epochs: int
    images: int
    backend: str
    machine: str
    final_loss: float | None
    command: str
    published: dict | None = None  # the card of the entry whose weights were restored (--trained exports/NAME)
    devices: int = 1  # data-parallel devices of the fit (--devices)
    distribution: dict | None = None  # zoo.distributed.start's record: engine and device names (devices > 1)
    precision: str = "float32"  # Keras dtype policy of the fit (--precision)

    def record(self, config, **extra) -> dict:
        """The card's `training` field: config, backend, machine, devices (and the data-parallel engine where
        more than one), precision, minutes, images/s, epochs, final loss and `extra`; for weights restored from a
        published entry, that entry's record as it was (it describes the run that trained them) and where it
        was republished from."""
        if self.published is not None:
            return {**self.published["training"], "republished_from": {
                "entry": self.published["name"], "created": self.published["created"],
                "sha256": self.published["files"][next(iter(self.published["towers"].values()))["keras"]]}}
        record = {"config": dataclasses.asdict(config), "backend": self.backend, "machine": self.machine,
                  "devices": self.devices, **({"distribution": self.distribution} if self.distribution else {}),
                  "precision": self.precision, "minutes": round(self.seconds / 60, 2),
                  "images_per_s": round(self.images / max(self.seconds, 1e-9), 1),
                  "epochs": self.epochs}
        if self.final_loss is not None:
            record["final_loss"] = self.final_loss
        return {**record, **{k: v for k, v in extra.items() if v is not None}}


TRAINED_WEIGHTS, TRAINED_RECORD = "trained.weights.h5", "trained.json"


def train(model, data, config, args, *, images_per_epoch, callbacks=(), towers=None, init_towers=None,
          argv=None, **fit_kwargs) -> TrainingRun:
    """The one training path of every recipe: `model.fit(data)`, resumable, or the weights of an earlier run.

    - Fresh or resumed: `model.fit(data, epochs=config.epochs)` with BackupAndRestore and a CSV log in
      `args.workdir` (a killed run continues from its last finished epoch; `--fresh` starts over), and, when
      `data` is a sampler with an `epoch`, a callback keeping its epoch (its random draws) in step with fit's.
      Then the weights and a record (config, seconds, epochs, images, backend, machine, final loss, sha256 of
      the weights) are written atomically into the workdir; with `--train-only` the process exits there.
    - `--devices N` (set up by `parse_config`): the same fit, data-parallel over N devices (`zoo.distributed`:
      the batch is the global batch, split evenly; in-batch losses see all of it); one device again after it.
      The record keeps `devices` (and the engine and device names).
    - `--precision P` (the dtype policy `parse_config` set): the fit computes in 16 bits with float32 weights;
      after it every layer is float32 again (`to_float32`), and the record keeps `precision`.
    - `--trained DIR`: no training; the weights of that run are checked against its record (sha256, config)
      and loaded, and the record is reported. This splits a run across machines: train on any backend
      (a GPU box with JAX and no TensorFlow), publish elsewhere. DIR may also be a published entry's
      folder (`--trained exports/NAME`): its towers' weights (sha256-checked, trained with this config)
      are loaded into `towers`, to evaluate and publish them again with today's protocols and exporters.

    Args:
        model: keras.Model. Compiled; built by the recipe's `build(config)`.
        data: the training data of `fit` (a sampler, or a tuple of arrays with `batch_size` in fit_kwargs).
        config: dataclass. The recipe's config; `config.epochs` epochs; a --trained run must have the same.
        args: namespace from `parse_config`.
        images_per_epoch: int. Images one epoch shows the model (for images/s).
        callbacks: sequence. More Keras callbacks (e.g. a sampler refresh), called before the log's.
        towers: dict | None. role -> the keras.Model the recipe publishes (default {"embedder": model.embedder}).
        init_towers: dict | None. role -> the towers that `--init`'s entry sets (default `towers`; {} where the
            recipe's `build` has set them).
        argv: list | None. The recipe's command line for the card (default: what `parse_config` read).
        fit_kwargs: more arguments of `fit` (batch_size, shuffle, ...).
    """
    import hashlib

    import keras

    from zoo import distributed

    command = recipe_command(config.name, getattr(args, "argv", None) or argv)
    if args.trained and (Path(args.trained) / "card.json").is_file():
        return _restore_entry(Path(args.trained), model, config, towers, command, args)
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
        if not same_config(record["config"], config):
            raise ValueError(f"--trained {folder} was trained with config {record['config']}, "
                             f"not this run's {dataclasses.asdict(config)}: pass the same options")
        _check_precision(record.get("precision", "float32"), args, folder)
        model.load_weights(str(weights))
        print(f"[{config.name}] restored the weights trained in {record['seconds'] / 60:.2f} min on "
              f"{record['machine']} ({record['backend']}) from {folder}")
        return TrainingRun(record["seconds"], record["epochs"],
                           record.get("images", record["epochs"] * int(images_per_epoch)), record["backend"],
                           record["machine"], record.get("final_loss"), command, devices=record.get("devices", 1),
                           distribution=record.get("distribution"), precision=record.get("precision", "float32"))

    if getattr(args, "parent", None):
        parent = args.parent
        if init_towers is None:
            init_towers = towers or {"embedder": model.embedder}
        if init_towers:
            load_towers(parent["folder"], parent["card"], init_towers, "--init")
        print(f"[{config.name}] fine-tuning from {parent['card'].name} ({parent['folder']})")
    callbacks = list(callbacks) + training_callbacks(args.workdir, args.fresh)
    if hasattr(data, "epoch"):
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: setattr(data, "epoch", epoch)))
    fit_kwargs.setdefault("verbose", 1 if sys.stdout.isatty() else 2)
    distribution = getattr(args, "distribution", None)  # --devices N: zoo.distributed.start's record
    # With N devices: even batches checked, batch norm synchronised (TF); one device again afterwards.
    with distributed.fitting(model, data, fit_kwargs.get("batch_size")), Stopwatch() as clock:
        history = model.fit(data, epochs=config.epochs, callbacks=callbacks, **fit_kwargs)
    precision = getattr(args, "precision", "float32")
    for trained in (model, *(towers or {}).values()):  # --precision: 16 bits for the fit only; evaluated and
        to_float32(trained)                             # published in float32 (a tower may hold its own layers)
    losses = history.history.get("loss") or [None]
    run = TrainingRun(clock.seconds, len(history.epoch), len(history.epoch) * int(images_per_epoch),
                      keras.backend.backend(), machine_description(),
                      None if losses[-1] is None else float(losses[-1]), command,
                      devices=distribution["devices"] if distribution else 1, distribution=distribution,
                      precision=precision)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / ("partial-" + TRAINED_WEIGHTS)
    model.save_weights(str(partial))
    record = {"config": dataclasses.asdict(config), "seconds": run.seconds, "epochs": run.epochs,
              "images": run.images, "backend": run.backend, "machine": run.machine, "final_loss": run.final_loss,
              "devices": run.devices, "distribution": run.distribution, "precision": run.precision,
              "sha256": hashlib.sha256(partial.read_bytes()).hexdigest()}
    os.replace(partial, workdir / TRAINED_WEIGHTS)
    (workdir / ("partial-" + TRAINED_RECORD)).write_text(json.dumps(record, indent=2))
    os.replace(workdir / ("partial-" + TRAINED_RECORD), workdir / TRAINED_RECORD)
    if args.train_only:
        print(f"[{config.name}] trained in {run.seconds / 60:.2f} min on {run.machine}; weights in {workdir}. "
              f"Publish with: {command} --trained {workdir}")
        sys.exit(0)
    return run


def same_config(recorded, config) -> bool:
    """Whether a run recorded with config `recorded` (a dict) was trained with `config`: the same values, where a
    field the recipe gained after the run (absent from `recorded`) must be at its default, which is what the run
    did without it."""
    current = dataclasses.asdict(config)
    if not isinstance(recorded, dict) or set(recorded) - set(current):
        return False
    added = {f.name: f.default for f in dataclasses.fields(config) if f.name not in recorded}
    return all(current[k] == v for k, v in added.items()) and all(current[k] == v for k, v in recorded.items())


def _check_precision(trained_with, args, folder) -> None:
    """A --trained run names the --precision its weights were trained with, so that the card's command reproduces
    them (the default float32 where the run or the entry predates the flag)."""
    wanted = getattr(args, "precision", "float32")  # a namespace made before the flag has none: float32
    if trained_with != wanted:
        raise ValueError(f"--trained {folder} was trained with --precision {trained_with}, not this run's "
                         f"{wanted}: pass the same options")


def _restore_entry(folder, model, config, towers, command, args) -> TrainingRun:
    """Load a published entry's tower weights into the recipe's towers (see `train`); `command` (this run's,
    without --trained) is the card's recipe: its config equals the entry's, so it reproduces the entry."""
    from zoo.registry import Card, verify_files

    card = Card.from_json(folder)
    verify_files(folder, card)
    trained_with = card.training.get("config")
    if not same_config(trained_with, config):
        raise ValueError(f"--trained {folder}: the entry was trained with config {trained_with}, "
                         f"not this run's {dataclasses.asdict(config)}: pass the options of its card's recipe "
                         f"({card.recipe})")
    _check_precision(card.training.get("precision", "float32"), args, folder)
    load_towers(folder, card, towers or {"embedder": model.embedder}, "--trained")
    print(f"[{config.name}] restored the weights of the published entry {card.name} ({card.created}) from {folder}")
    training = card.training
    return TrainingRun(60.0 * training.get("minutes", 0.0), training.get("epochs", config.epochs),
                       0, training.get("backend", "?"), training.get("machine", "?"), training.get("final_loss"),
                       command, published=card.to_dict())


def load_towers(folder, card, towers, flag, *, some=False) -> None:
    """Set each tower's weights from the entry's .keras file of the same role (shapes must match); with `some`,
    `towers` may name only some of the entry's towers (the others start afresh)."""
    import keras

    from zoo.registry import import_custom_layers

    if not (set(towers) <= set(card.towers) if some else set(towers) == set(card.towers)):
        raise ValueError(f"{flag} {folder}: the entry has towers {list(card.towers)}, this recipe {list(towers)}")
    import_custom_layers()
    for role, tower in towers.items():
        published = keras.saving.load_model(folder / card.towers[role]["keras"], compile=False, safe_mode=True)
        theirs, ours = [w.shape for w in published.get_weights()], [w.shape for w in tower.get_weights()]
        if theirs != ours:
            raise ValueError(f"{flag} {folder}: its {role} has weights of other shapes than this run's; pass the "
                             f"options of its recipe ({card.recipe})")
        tower.set_weights(published.get_weights())


def compile_with_cosine_decay(model, config, alpha=0.0):
    """Compile `model` with Adam, the learning rate decaying by a cosine over all `config.epochs` epochs of
    `config.steps_per_epoch` steps, down to `alpha` times `config.learning_rate`."""
    import keras

    steps = config.epochs * config.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=alpha)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model


def recipe_command(name, argv=None):
    """The command that reproduces a run, for the card (where it was published from, and --fresh, are left out).
    The script is the recipe file that is running (`--name` may differ from it), else recipes/<name>.py."""
    import inspect

    argv = list(sys.argv[1:] if argv is None else argv)
    with_value = ("--root", "--workdir", "--trained")
    kept = [a for i, a in enumerate(argv)
            if not a.startswith(with_value + ("--train-only", "--fresh")) and (i == 0 or argv[i - 1] not in with_value)]
    script = next((Path(f.filename).stem for f in inspect.stack() if Path(f.filename).parent == REPO / "recipes"),
                  name)
    return " ".join(["python", f"recipes/{script}.py", *kept])


def print_metrics(name, metrics):
    print(f"[{name}] held-out metrics:\n" + json.dumps(metrics, indent=2, default=float))


def publish_run(embedder, config, args, run, card, test, metrics=None, record=None, **training):
    """The end of every recipe: the card's protocol on the held-out part (`metrics`, or on a user folder the
    protocol's `on_folder`), printed; the card with what --data and --init change (`zoo.finetune.user_card`,
    the parent's metrics on the same part); then publish, with the verification threshold where the protocol
    measures one, golden inputs from the held-out part, and int8 unless --smoke or --data (the gate measures
    the bundled held-out split).

    Args:
        embedder: keras.Model. the image tower to publish (its towers: `training` may say more).
        config: dataclass. the run's config (name, seed).
        args: namespace from `parse_config`.
        run: TrainingRun. from `train`.
        card: dict. the card fields of the recipe (method, protocol, dataset, ...; `recipe` is set here).
        test: dict. the held-out part: the bundled split, or the user's held-out classes.
        metrics: dict | None. the protocol's metrics, if the recipe measured them (default: measured here).
        record: dict | None. the user folder's record (`zoo.finetune.user_data`), None on bundled data.
        training: more fields of the card's `training` record.
    """
    from zoo import protocols
    from zoo.export import publish
    from zoo.finetune import parent_record, user_card

    protocol = protocols.get(card["protocol"])
    embed_fn = lambda x: embed(embedder, x)  # noqa: E731
    if metrics is None:
        metrics = (protocol.on_folder(embed_fn, test, seed=config.seed) if record is not None
                   else protocol.run(embed_fn, test))
    print_metrics(config.name, metrics)
    card = user_card({**card, "recipe": run.command}, args, record,
                     parent_record(args, card["protocol"], test, config.seed), metrics)
    return publish(config.name, embedder, card=card, metrics=metrics, threshold=metrics.get("threshold"),
                   training=run.record(config, data=record, **training), golden_inputs=test["images"][:8],
                   int8=not (args.smoke or args.data), root=args.root)
