"""What every recipe shares: a Config from the command line, the one training path (`train`: resumable fit(),
--train-only / --trained), timing, embedding in batches, the Omniglot held-out split."""

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
        `train_only`, `trained`, `data`, `init`, `test_fraction`, `parent` (`parent_entry(init)` or None),
        `devices`, `distribution` (`zoo.distributed.start(devices)`'s record, or None on one device) and
        `precision`.
        With `--init`, the parent's training config gives the defaults (then `--smoke`, then the flags).
        With `--devices N` (N > 1) the data-parallel engine is set up here, before the recipe builds its model;
        so is `--precision`'s Keras dtype policy (`train` turns the model back to float32 after fit()).
    """
    parser = argparse.ArgumentParser(description=description)
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
    args.parent = None
    values = {}
    if args.init:
        args.parent = parent_entry(args.init)
        fields = {f.name for f in dataclasses.fields(config_cls)} - {"name"}
        values.update({k: v for k, v in (args.parent["card"].training.get("config") or {}).items() if k in fields})
    values.update(smoke_overrides if args.smoke else {})
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
        argv: list | None. The recipe's command line, for the card's `recipe` command.
        fit_kwargs: more arguments of `fit` (batch_size, shuffle, ...).
    """
    import hashlib

    import keras

    from zoo import distributed

    command = recipe_command(config.name, argv)
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


def parent_entry(name_or_folder) -> dict:
    """A published entry to fine-tune from: {"folder", "card"}, its files checked against their sha256.

    Args:
        name_or_folder: str. an entry name in the zoo root (`zoo.registry.exports_dir`) or an entry's folder.
    """
    from zoo.registry import Card, exports_dir, list_models, verify_files

    folder = Path(name_or_folder)
    if not (folder / "card.json").is_file():
        folder = exports_dir() / name_or_folder
        if not (folder / "card.json").is_file():
            raise ValueError(f"--init {name_or_folder}: no published entry of that name in {exports_dir()} "
                             f"(entries: {', '.join(list_models())}) and no entry folder at that path")
    card = Card.from_json(folder)
    verify_files(folder, card)
    return {"folder": folder, "card": card}


def user_data(args, input_shape, contract, *, seed=0, min_per_class=2):
    """The user's `--data` folder as (train, held_out, record), or None without --data.

    Images go through `contract` (the parent's with --init, so fine-tuning sees what the parent saw) to the
    model's input; labelled classes (else images) are split by `--test-fraction`, seeded by the config's
    seed; train labels are renumbered 0..C-1. `record` is what the card's `training.data` keeps.

    Args:
        args: namespace from `parse_config`.
        input_shape: (H, W, C) of the model.
        contract: dict. the recipe's preprocessing contract.
        seed: int. the split's seed (the config's).
        min_per_class: int. the fewest images a labelled class may have.
    """
    if not args.data:
        return None
    from zoo.data.folders import read_folder, split_classes

    if args.parent is not None and args.parent["card"].preprocessing:
        contract = args.parent["card"].preprocessing
    data = read_folder(args.data, input_shape, contract, min_per_class=min_per_class)
    train, held_out = split_classes(data, args.test_fraction, seed=seed)
    if data["layout"] == "labelled" and len(np.unique(held_out["labels"])) < 2:
        raise ValueError(f"--data {args.data}: --test-fraction {args.test_fraction} holds out one class of "
                         f"{len(data['class_names'])}; the held-out protocols compare classes, so raise it "
                         "(or add classes)")
    train["labels"] = np.unique(train["labels"], return_inverse=True)[1]
    record = {"path": str(Path(args.data).resolve()), "layout": data["layout"], "images": int(len(data["images"])),
              "skipped": len(data["skipped"]), "test_fraction": args.test_fraction,
              "train_classes": int(len(np.unique(train["labels"]))),
              "held_out_classes": int(len(np.unique(held_out["labels"])))}
    if "class_names" in data:
        record["held_out"] = sorted(str(data["class_names"][i]) for i in np.unique(held_out["labels"]))
    print(f"[data] {args.data}: {record['images']} images ({record['skipped']} skipped), {record['train_classes']} "
          f"train and {record['held_out_classes']} held-out {'classes' if 'class_names' in data else 'images'}")
    return train, held_out, record


def user_card(card, args, record, parent, metrics) -> dict:
    """The card fields that change with --data / --init: the dataset and splits of the user's folder, the
    primary metric where the folder's protocol has other names (fewer than 5 held-out classes: N-way; unlabelled:
    copy retrieval), and the parent (its sha256 and its metrics on the same held-out part) in `extras["parent"]`."""
    card = dict(card)
    if card["primary_metric"] not in metrics:
        card["primary_metric"] = next(k for k in metrics if k.endswith("way1shot") or k == "copy_recall@1")
    if record is not None:
        where = record["path"]
        card.update(dataset=f"your folder {where} ({record['layout']}, {record['images']} images)",
                    splits={"train": f"folder:{where}#train", "test": f"folder:{where}#held_out"},
                    data_license="the user's own data")
    if parent is not None:
        card["extras"] = {**(card.get("extras") or {}), "parent": parent}
    return card


def user_few_shot(embed_fn, held_out, seed=0) -> dict:
    """The few-shot protocol on the user's held-out classes: N-way 1- and 5-shot episodes with N, the shots
    and the queries cut to what the classes hold (no Lake's runs: those are Omniglot's)."""
    from zoo import protocols

    counts = np.bincount(np.unique(held_out["labels"], return_inverse=True)[1])
    way = int(min(5, len(counts)))
    settings = tuple((way, shot) for shot in (1, 5) if shot < counts.min())
    if way < 2 or not settings:
        raise ValueError(f"the held-out part has {len(counts)} classes of >= {counts.min()} images; few-shot needs "
                         "2 classes of 2 images: raise --test-fraction or add images")
    queries = int(min(15, counts.min() - max(shot for _, shot in settings)))
    return protocols.few_shot(embed_fn, held_out, settings=settings, queries=queries, seed=seed)


def copy_retrieval(embed_fn, held_out) -> dict:
    """Unlabelled held-out images: can each be found again from a lightly altered copy (shifted 2 pixels,
    contrast 0.9, brightness +12)? Leave-one-out recall@1/5 over the images and their copies (`evaluate.retrieval`,
    each image and its copy one class)."""
    from zoo import evaluate

    images = np.asarray(held_out["images"], np.float32)
    copies = np.clip(np.roll(images, (2, 2), axis=(1, 2)) * 0.9 + 12.0, 0.0, 255.0)
    x = np.asarray(embed_fn(np.concatenate([images, copies])), np.float32)
    labels = np.concatenate([np.arange(len(images))] * 2)
    r = evaluate.retrieval(x, labels, ks=(1, 5))
    return {"copy_recall@1": r["recall@1"], "copy_recall@5": r["recall@5"], "images": int(len(images))}


def held_out_metrics(protocol, embed_fn, held_out, seed=0) -> dict:
    """The card's metrics on the user's held-out part, by the entry's protocol (`zoo.protocols`): verification
    for face entries, few-shot on labelled classes, copy retrieval (`copy_retrieval`) on unlabelled images."""
    from zoo import protocols

    if protocol == "verification":
        return protocols.verification(embed_fn, held_out, seed=seed)
    if protocol in ("few_shot", "self_supervised"):
        if held_out.get("layout") == "labelled":
            return user_few_shot(embed_fn, held_out, seed)
        return copy_retrieval(embed_fn, held_out)
    raise ValueError(f"no held-out protocol for {protocol!r} on a user folder")


def parent_record(args, protocol, held_out, seed=0, measure=None) -> dict | None:
    """With --init: the parent's name, the sha256 of its weights, and its metrics on the same held-out part, so
    the card shows what fine-tuning bought; None otherwise.

    Args:
        args: namespace from `parse_config`.
        protocol: str. the entry's protocol, measured by `held_out_metrics` on the parent's image tower.
        held_out: dict | None. the held-out part (None: no metrics).
        seed: int. the protocol's seed.
        measure: callable | None. parent folder -> metrics, for a protocol `held_out_metrics` has not (CLIP's).
    """
    if args.parent is None:
        return None
    from zoo.runtime import OnnxEmbedder

    card, folder = args.parent["card"], args.parent["folder"]
    if measure is None:
        measure = lambda f: held_out_metrics(protocol, OnnxEmbedder(f).embed, held_out, seed)  # noqa: E731
    first = next(iter(card.towers.values()))
    return {"entry": card.name, "folder": str(folder.resolve()), "created": card.created,
            "sha256": card.files[first["keras"]],
            "metrics_on_held_out": measure(folder) if held_out is not None else None}


def subset(data, rows=0, classes=0, seed=0):
    """Images and labels of `rows` seeded-random images or of `classes` seeded-random classes (0: all)."""
    images, labels = data["images"], data["labels"]
    rng = np.random.default_rng(seed)
    if rows:
        if rows > len(images):
            raise ValueError(f"asked for {rows} images, the split has {len(images)}")
        keep = np.sort(rng.choice(len(images), rows, replace=False))
        return images[keep], labels[keep]
    if classes:
        names = np.unique(labels)
        if classes > len(names):
            raise ValueError(f"asked for {classes} classes, the split has {len(names)}")
        keep = np.isin(labels, rng.choice(names, classes, replace=False))
        return images[keep], labels[keep]
    return images, labels


OMNIGLOT_SPLITS = {"train": "omniglot/background", "test": "omniglot/evaluation"}
# The preprocessing contracts (`zoo.runtime.contract`) of the bundled sets: how `zoo/data/build_npz.py` made the
# training arrays from the original files, so that files of any size reach the model the same way.
OMNIGLOT_PREPROCESSING = {
    "color": "grey", "background": [255, 255, 255], "ink": "dark", "face": None, "crop": None, "fit": "pad",
    "resize": {"method": "box", "size": [28, 28]},
    "source": "Omniglot 105x105 PNGs, ink 0 on paper 255, resized to 28x28 by Pillow's BOX filter",
}
EMOJI_PREPROCESSING = {
    "color": "rgb", "background": [255, 255, 255], "ink": None, "face": None, "crop": None, "fit": "pad",
    "resize": {"method": "box", "size": [64, 64]},
    "source": "Noto emoji 64x64 RGBA PNGs composited onto white (Pillow's alpha_composite), RGB",
}
OMNIGLOT_LICENSE = "MIT (Omniglot, Lake et al. 2015, github.com/brendenlake/omniglot)"


def omniglot_few_shot(embedder, *, classes=0, episodes=1000, queries=15, seed=0, size=28) -> tuple[dict, dict]:
    """The few-shot protocol (`zoo.protocols.few_shot`) of a Keras embedder on the Omniglot evaluation
    alphabets (`classes` seeded-random characters of them, 0: all 659) with Lake's runs: (metrics, the data)."""
    import zoo.data
    from zoo import protocols

    images, labels = subset(zoo.data.load("omniglot", "evaluation", size=size), classes=classes, seed=seed)
    data = {"images": np.asarray(images, np.float32), "labels": labels}
    metrics = protocols.few_shot(lambda x: embed(embedder, x), data, runs=zoo.data.omniglot_oneshot_runs(size=size),
                                 queries=queries, episodes=episodes, seed=seed)
    return metrics, data


@dataclasses.dataclass
class SelfSupervisedConfig:
    """The Config fields every self-supervised Omniglot recipe shares; each subclass adds its own (and its name)."""

    seed: int = 0
    batch_size: int = 128  # images (MICLe: characters) per batch, two views each
    steps_per_epoch: int = 100
    epochs: int = 12
    learning_rate: float = 3e-3
    train_images: int = 0  # keep this many background images (0: all 19,280)
    test_classes: int = 0  # keep this many evaluation characters (0: all 659)
    test_episodes: int = 1000  # per few-shot setting
    test_queries: int = 15


SELF_SUPERVISED_SMOKE = {"batch_size": 16, "steps_per_epoch": 2, "epochs": 2, "train_images": 256,
                         "test_classes": 25, "test_episodes": 10}


def background_views(config, groups=False, train=None):
    """A TwoViewSampler over `config.train_images` seeded background images of Omniglot (0: all 19,280), or over
    the user's `train` images (`omniglot_data`), labels unread; with `groups`, their character ids (class
    labels) group the views (MICLe's positives)."""
    import zoo.data
    from zoo.data.samplers import TwoViewSampler

    data = zoo.data.load("omniglot", "background") if train is None else train
    images, labels = subset(data, rows=config.train_images if train is None else 0, seed=config.seed)
    return TwoViewSampler(images, config.batch_size, config.steps_per_epoch, seed=config.seed,
                          **({"groups": labels} if groups else {}))


def omniglot_data(args, config, min_per_class=1):
    """The Omniglot recipes' own data: None (the bundled background and evaluation alphabets), or with --data
    (train, held_out, record) of the user's folder through the drawings' contract (the parent's with --init)."""
    return user_data(args, (28, 28, 1), OMNIGLOT_PREPROCESSING, seed=config.seed, min_per_class=min_per_class)


def compile_with_cosine_decay(model, config, alpha=0.0):
    """Compile `model` with Adam, the learning rate decaying by a cosine over all `config.epochs` epochs of
    `config.steps_per_epoch` steps, down to `alpha` times `config.learning_rate`."""
    import keras

    steps = config.epochs * config.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=alpha)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model


def publish_few_shot(embedder, config, args, run, card, own=None, **record):
    """The end of every self-supervised recipe: the few-shot protocol on the frozen embeddings of the Omniglot
    evaluation alphabets (never trained on; `config.test_*`), or of the user's held-out part (`own`, from
    `omniglot_data`), then publish with `card` and `run.record(**record)`."""
    from zoo.export import publish

    if own is None:
        metrics, test = omniglot_few_shot(embedder, classes=config.test_classes, episodes=config.test_episodes,
                                          queries=config.test_queries, seed=config.seed)
    else:
        test = own[1]
        metrics = held_out_metrics("self_supervised", lambda x: embed(embedder, x), test, config.seed)
    print_metrics(config.name, metrics)
    record_data = own[2] if own else None
    card = user_card(card, args, record_data, parent_record(args, "self_supervised", test, config.seed), metrics)
    return publish(config.name, embedder, card=card, metrics=metrics,
                   training=run.record(config, data=record_data, **record), golden_inputs=test["images"][:8],
                   int8=not (args.smoke or args.data), root=args.root)


LFW_SPLITS = {"train": "lfw/train", "test": "lfw/test"}
LFW_LICENSE = "LFW: no license stated; research use (cite Huang et al. 2007)"
LFW_DATASET = "LFW, people with >= 10 photos (48x48 RGB), train identities"


def lfw_splits(identities=0) -> tuple[dict, dict]:
    """LFW train (labels remapped to 0..C-1; the first `identities` of them, 0: all) and test identities."""
    import zoo.data

    train, test = zoo.data.load("lfw", "train"), zoo.data.load("lfw", "test")
    _, labels = np.unique(train["labels"], return_inverse=True)  # global identity ids -> 0..C-1
    keep = labels < identities if identities else slice(None)
    return {"images": train["images"][keep], "labels": labels[keep]}, test


def face_template(crops, frame=112) -> tuple[np.ndarray, float]:
    """Where the training crops hold their faces: the mean MTCNN landmarks of `crops`, in pixels of a
    `frame` x `frame` crop; returns (template (5, 2) (x, y), share of crops with a face found).

    Each crop is enlarged to the frame (bilinear) and set in a canvas twice its size (edges repeated),
    so the detector sees the face whole with margin around it.

    Args:
        crops: uint8 (N, h, w, 3). fixed crops of the training photos (the bundled LFW arrays).
        frame: int. side of the crop in the original photos (LFW: the 112-pixel box).
    """
    from zoo.runtime import images as ops
    from zoo.runtime.contract import face_detector

    detector, margin, points = face_detector({"detector": "mtcnn"}), frame // 2, []
    for crop in crops:
        canvas = np.pad(ops.resize(crop, (frame, frame), "bilinear"), ((margin, margin), (margin, margin), (0, 0)),
                        mode="edge")
        faces = detector.detect(canvas)
        if faces:
            points.append(np.asarray(faces[0]["landmarks"], np.float64) - margin)
    if not points:
        raise ValueError(f"no face found in any of the {len(crops)} crops; cannot make a face template")
    return np.mean(points, axis=0), len(points) / len(crops)


def lfw_preprocessing(train_images, count=256, seed=0) -> dict:
    """The LFW entries' contract: MTCNN landmarks aligned onto the template of `count` seeded training crops
    (`face_template`) in the 112x112 frame of the LFW box, then BOX to 48x48; `--no-align` cuts the fixed box."""
    from zoo.data.build_npz import LFW_BOX, LFW_SIZE
    from zoo.protocols import seeded_sample
    from zoo.runtime.faces import MTCNN_SHA256

    frame = LFW_BOX[2] - LFW_BOX[0]
    template, found = face_template(seeded_sample(train_images, count, seed), frame)
    return {
        "color": "rgb", "background": [255, 255, 255], "ink": None,
        "face": {"detector": "mtcnn", "detector_sha256": MTCNN_SHA256, "min_face_size": 20, "select": "largest",
                 "frame": [frame, frame], "template": np.round(template, 3).tolist(),
                 "landmarks": ["left eye", "right eye", "nose", "mouth left", "mouth right"],
                 "template_from": f"mean MTCNN landmarks of {count} seeded LFW training crops (found in "
                                  f"{found:.3f} of them)"},
        "crop": {"frame": [250, 250], "box": list(LFW_BOX)}, "fit": "center_crop",
        "resize": {"method": "box", "size": [LFW_SIZE, LFW_SIZE]},
        "source": "LFW 250x250 JPEGs, box (69, 72)-(181, 184) cut, resized to 48x48 by Pillow's BOX filter",
    }


def face_data(args, config) -> tuple[dict, dict, dict, dict | None]:
    """The face recipes' data: (train, held_out, preprocessing, record). LFW's train and test identities, or
    with --data the user's folder aligned by the contract (the parent's with --init) and split by class."""
    train, test = lfw_splits(config.identities)
    if args.parent is not None and args.parent["card"].preprocessing:
        preprocessing = args.parent["card"].preprocessing
    else:  # files reach the model as the training crops did: faces aligned onto the crops' mean landmarks
        preprocessing = lfw_preprocessing(lfw_splits()[0]["images"], 16 if args.smoke else 256)
    own = user_data(args, (48, 48, 3), preprocessing, seed=config.seed)
    return (own[0], own[1], preprocessing, own[2]) if own else (train, test, preprocessing, None)


def publish_verification(embedder, config, args, run, card, test, record, **training):
    """The end of the face recipes: verification on the held-out identities (LFW's test identities, or the
    user's held-out classes), then publish with the card's threshold; with --init the parent's metrics on
    the same identities go in `extras["parent"]`. No int8 for a user folder: its gate measures LFW's test."""
    from zoo import protocols
    from zoo.export import publish

    metrics = protocols.verification(lambda x: embed(embedder, x), test)
    print_metrics(config.name, metrics)
    card = user_card(card, args, record, parent_record(args, "verification", test), metrics)
    return publish(config.name, embedder, card=card, metrics=metrics, threshold=metrics["threshold"],
                   training=run.record(config, data=record, **training), golden_inputs=test["images"][:8],
                   int8=not (args.smoke or args.data), root=args.root)


def face_resnet(widths, embedding_dim):
    """The small ResNet of the LFW entries (48x48 RGB), its last layer a linear map to `embedding_dim`.

    Args:
        widths: str. stage widths, e.g. "16-32-64-128".
        embedding_dim: int. D.
    """
    from zoo import backbones

    return backbones.small_resnet((48, 48, 3), widths=tuple(int(w) for w in widths.split("-")),
                                  output_dim=embedding_dim, name="face_encoder")


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
