"""Retrain the `protonet` entry: prototypical networks on Omniglot, episodic training.

    python recipes/protonet.py            # full run, publishes exports/protonet
    python recipes/protonet.py --smoke    # seconds, publishes into runs/smoke-exports

Snell et al.'s Omniglot protocol at 28x28: conv4 trained on N-way K-shot episodes of the
background alphabets, where each rotation of a character by a multiple of 90 degrees is a class
of its own (60-way 1-shot 5-query by default: the paper matches the training shot to the test
shot; `--shot 5` trains the 5-shot model); Adam with the learning rate halved every `decay_every`
episodes. Evaluated on the evaluation alphabets, never trained on: 5-way and 20-way, 1-shot and
5-shot (mean and 95% CI over random episodes) and Lake's 20 one-shot runs, each on the published
L2-normalised embedder and on the un-normalised features the loss was trained on (keys ending in
`_unnormalised`).
After every epoch a small 20-way 1-shot accuracy on evaluation characters is logged (the curve
of accuracy against episodes); it is only recorded, never used to choose anything.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras
import numpy as np

import zoo.data
from zoo import backbones, protocols
from zoo import metrics as measures
from zoo.data.samplers import EpisodeSampler
from zoo.methods.protonet import ProtoNet
from zoo.data.kits import (OMNIGLOT_LICENSE, OMNIGLOT_PREPROCESSING, OMNIGLOT_SPLITS, omniglot_data,
                           omniglot_few_shot, subset)
from zoo.training import Stopwatch, embed, parse_config, publish_run, train


@dataclass
class Config:
    name: str = "protonet"
    seed: int = 0
    way: int = 60
    shot: int = 1  # the paper matches the training shot to the test shot; the targets are 1-shot
    queries: int = 5
    episodes_per_epoch: int = 60
    epochs: int = 20
    learning_rate: float = 1e-3
    bn_momentum: float = 0.9  # the authors' PyTorch default (0.1 there); Keras' 0.99 lags behind a short run
    decay_every: int = 400  # episodes between halvings (the paper: 2000, over a far longer run)
    train_classes: int = 0  # keep this many background characters (0: all 964)
    test_classes: int = 0  # keep this many evaluation characters (0: all 659)
    test_episodes: int = 1000  # per few-shot setting
    test_queries: int = 15
    curve_classes: int = 100  # evaluation characters of the per-epoch curve
    curve_episodes: int = 100


SMOKE = {"way": 5, "shot": 1, "queries": 2, "episodes_per_epoch": 2, "epochs": 2, "train_classes": 20,
         "test_classes": 25, "test_episodes": 10, "curve_classes": 25, "curve_episodes": 5}

CARD = {
    "method": "ProtoNet", "protocol": "few_shot", "trained_with_labels": True,
    "primary_metric": "lake_oneshot_runs",
    "dataset": "Omniglot background (30 alphabets, 964 characters x 4 rotations), 28x28",
    "splits": OMNIGLOT_SPLITS, "preprocessing": OMNIGLOT_PREPROCESSING, "data_license": OMNIGLOT_LICENSE,
    "anchor": "Snell et al. 2017 (Vinyals split, 28x28): 98.8% 5-way 1-shot, 99.7% 5-way 5-shot, "
              "96.0% 20-way 1-shot, 98.9% 20-way 5-shot",
    "paper": "Snell, Swersky & Zemel 2017, Prototypical Networks for Few-shot Learning, NeurIPS, arXiv:1703.05175",
    "extras": {"distance": "squared Euclidean between prototypes (mean support embedding)"},
}
CURVE_KEY = "curve_20way1shot"


class FewShotCurve(keras.callbacks.Callback):
    """Logs the 20-way 1-shot accuracy of the published embedder on fixed images after every epoch.

    Placed before the CSV logger, so the value lands in the training log as `curve_20way1shot`.
    """

    def __init__(self, images, labels, episodes):
        super().__init__()
        self.images, self.labels, self.episodes = images, labels, episodes
        self.seconds = 0.0  # spent here, part of the run's minutes

    def on_epoch_end(self, epoch, logs=None):
        with Stopwatch() as clock:
            embeddings = embed(self.model.embedder, self.images)
            logs[CURVE_KEY] = measures.few_shot(embeddings, self.labels, 20, 1, queries=5,
                                                episodes=self.episodes, seed=0)["mean"]
        self.seconds += clock.seconds


def read_curve(log_path, episodes_per_epoch):
    """Training curve of the last run in the CSV log: episodes seen, loss, accuracy, curve accuracy."""
    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    start = max(i for i, row in enumerate(rows) if int(row["epoch"]) == 0)  # a --fresh run appends
    rows = rows[start:]
    return {"episodes": [(int(r["epoch"]) + 1) * episodes_per_epoch for r in rows],
            "loss": [float(r["loss"]) for r in rows], "accuracy": [float(r["accuracy"]) for r in rows],
            CURVE_KEY: [float(r[CURVE_KEY]) for r in rows]}


def build(config, train=None):
    """The compiled ProtoNet of `config`, its episode sampler over the background characters (or the user's
    `train` classes; rotations as new classes), and the per-epoch curve callback (first, so its value lands in
    the CSV log; on the bundled data only: it needs 20 held-out characters)."""
    keras.utils.set_random_seed(config.seed)
    callbacks, way, queries = [], config.way, config.queries
    if train is None:
        train_images, train_labels = subset(zoo.data.load("omniglot", "background"), classes=config.train_classes,
                                            seed=config.seed)
        curve_images, curve_labels = subset(zoo.data.load("omniglot", "evaluation"), classes=config.curve_classes,
                                            seed=config.seed)
        callbacks.append(FewShotCurve(np.asarray(curve_images, np.float32), curve_labels, config.curve_episodes))
    else:
        train_images, train_labels = train["images"], train["labels"]
        # A user folder may hold fewer classes (x 4 rotations) or images per class than an episode asks for.
        way = min(way, 4 * len(np.unique(train_labels)))
        queries = max(1, min(queries, int(np.bincount(train_labels).min()) - config.shot))
    sampler = EpisodeSampler(train_images, train_labels, way, config.shot, queries, config.episodes_per_epoch,
                             seed=config.seed, rotations=True)
    encoder = backbones.conv4((28, 28, 1))
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
    model = ProtoNet(encoder, way=way, shot=config.shot, queries=queries)
    schedule = keras.optimizers.schedules.ExponentialDecay(config.learning_rate, config.decay_every, 0.5,
                                                           staircase=True)  # one step = one episode
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model, sampler, callbacks


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    own = omniglot_data(args, config, min_per_class=config.shot + 1)  # None: the bundled alphabets
    model, sampler, callbacks = build(config, own and own[0])
    run = train(model, sampler, config, args, images_per_epoch=config.episodes_per_epoch * model.episode_size,
                callbacks=callbacks, argv=argv)
    # Held-out: the evaluation alphabets (or your held-out classes), on the published (normalised) embedder and
    # on the raw features of the loss.
    options = dict(classes=config.test_classes, episodes=config.test_episodes, queries=config.test_queries,
                   seed=config.seed)
    if own is None:
        metrics, test = omniglot_few_shot(model.embedder, **options)
        unnormalised, _ = omniglot_few_shot(model.encoder, **options)
    else:
        test = own[1]
        metrics, unnormalised = (protocols.get("few_shot").on_folder(lambda x, m=m: embed(m, x), test,
                                                                     seed=config.seed)
                                 for m in (model.embedder, model.encoder))
    metrics.update({f"{key}_unnormalised": value for key, value in unnormalised.items()
                    if "way" in key or key == "lake_oneshot_runs"})
    log = Path(args.trained or args.workdir) / "log.csv"
    return publish_run(model.embedder, config, args, run, CARD, test, metrics, own and own[2],
                       episodes=run.epochs * config.episodes_per_epoch,
                       train_classes=len(sampler.members),  # rotations count as classes
                       curve_minutes=round(callbacks[0].seconds / 60, 2) if callbacks else None,
                       curve=read_curve(log, config.episodes_per_epoch) if log.is_file() and callbacks else None)

if __name__ == "__main__":
    main()
