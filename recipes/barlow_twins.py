"""Retrain the `barlow_twins` entry: Barlow Twins on the Omniglot background alphabets, without their labels.

    python recipes/barlow_twins.py            # full run, publishes exports/barlow_twins
    python recipes/barlow_twins.py --smoke    # seconds, publishes into runs/smoke-exports

conv4 (64-d features at 28x28) learns from pairs of random views of each background image
(zoo.data.augment.characters: affine, elastic and stroke-width jitter): a wide projector's
outputs for the two views are standardised over the batch and their cross-correlation matrix
is driven to the identity; no negatives. The projector is dropped afterwards. The character
labels are never read. Adam with cosine decay. Evaluated on the frozen embeddings
of the evaluation alphabets (never trained on): nearest-prototype 5/20-way 1/5-shot (mean and
95% CI over random episodes), Lake's 20 one-shot runs and leave-one-out retrieval recall@1.
"""

import sys
from dataclasses import dataclass

import keras
import numpy as np

import zoo.data
from zoo import backbones, evaluate
from zoo.data.augment import characters
from zoo.data.samplers import TwoViewSampler
from zoo.export import publish
from zoo.methods.barlow_twins import BarlowTwins
from zoo.recipe import (Stopwatch, embed, parse_config, print_metrics, recipe_command, training_callbacks,
                        training_record)


@dataclass
class Config:
    name: str = "barlow_twins"
    seed: int = 0
    batch_size: int = 128  # images per batch, two views each
    steps_per_epoch: int = 100
    epochs: int = 10
    learning_rate: float = 2e-3
    lambd: float = 5e-3
    projection: str = "1024-1024-1024"
    train_images: int = 0  # keep this many background images (0: all 19,280)
    test_classes: int = 0  # keep this many evaluation characters (0: all 659)
    test_episodes: int = 1000  # per few-shot setting
    test_queries: int = 15


SMOKE = {"batch_size": 16, "steps_per_epoch": 2, "epochs": 2, "projection": "64-64", "train_images": 256,
         "test_classes": 25, "test_episodes": 10}

SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))  # (way, shot) of the held-out evaluation


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


def held_out_metrics(embed_fn, images, labels, runs, config):
    """Few-shot by nearest prototype, Lake's one-shot runs and retrieval recall@1 on frozen embeddings."""
    embeddings = embed_fn(images)
    metrics = {f"{way}way{shot}shot": evaluate.few_shot(embeddings, labels, way, shot, config.test_queries,
                                                        config.test_episodes, seed=config.seed)
               for way, shot in SETTINGS}
    shape = runs["train_images"].shape  # (R, 20, 28, 28, 1)
    train, test = (embed_fn(runs[k].reshape(-1, *shape[2:])).reshape(*shape[:2], -1)
                   for k in ("train_images", "test_images"))
    metrics["lake_oneshot_runs"] = evaluate.oneshot_runs(train, test, runs["answers"])["accuracy"]
    metrics["recall@1"] = evaluate.retrieval(embeddings, labels, ks=(1,))["recall@1"]
    metrics["test_characters"] = int(len(np.unique(labels)))
    return metrics


def epoch_sync(sampler):
    """A callback that keeps the sampler's epoch (its random draws) in step with fit's, also after a resume."""
    return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: setattr(sampler, "epoch", epoch))


def build(config):
    """The compiled BarlowTwins model of `config`, its sampler over the background images, and the callbacks
    the sampler needs."""
    keras.utils.set_random_seed(config.seed)
    train_images, _ = subset(zoo.data.load("omniglot", "background"), rows=config.train_images, seed=config.seed)
    sampler = TwoViewSampler(train_images, config.batch_size, config.steps_per_epoch, seed=config.seed)
    model = BarlowTwins(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed),
                        lambd=config.lambd, projection=config.projection)
    steps = config.epochs * config.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model, sampler, [epoch_sync(sampler)]


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)

    # Background images without labels for training (in build()); the evaluation alphabets for testing.
    model, sampler, callbacks = build(config)
    test_images, test_labels = subset(zoo.data.load("omniglot", "evaluation"), classes=config.test_classes,
                                      seed=config.seed)
    runs = zoo.data.omniglot_oneshot_runs(size=28)
    with Stopwatch() as clock:
        history = model.fit(sampler, epochs=config.epochs, verbose=1 if sys.stdout.isatty() else 2,
                            callbacks=training_callbacks(args.workdir, args.fresh) + callbacks)

    embedder = model.embedder
    metrics = held_out_metrics(lambda x: embed(embedder, x), test_images, test_labels, runs, config)
    print_metrics(config.name, metrics)

    steps = len(history.epoch) * config.steps_per_epoch  # this process's share of a resumed run
    training = training_record(config, clock.seconds, steps * config.batch_size, steps=steps,
                               views_per_image=2, final_loss=float(history.history["loss"][-1]))
    return publish(
        config.name, embedder, method="BarlowTwins", protocol="self_supervised",
        dataset="Omniglot background (30 alphabets, 19,280 images), 28x28, labels unused",
        splits={"train": "omniglot/background", "test": "omniglot/evaluation"},
        metrics=metrics, primary_metric="5way1shot",
        anchor="unsupervised Omniglot 5-way 1-shot, conv4: UMTRA (Khodadadeh et al. 2019) 83.8%",
        recipe=recipe_command(config.name, argv),
        paper="Zbontar, Jing, Misra, LeCun & Deny 2021, Barlow Twins: Self-Supervised Learning via Redundancy "
              "Reduction, ICML, arXiv:2103.03230",
        data_license="MIT (Omniglot, Lake et al. 2015, github.com/brendenlake/omniglot)",
        training=training,
        extras={"augmentation": "zoo.data.augment.characters(28)", "projector_dropped": config.projection,
                "distance": "squared Euclidean between L2-normalised embeddings and prototypes"},
        golden_inputs=test_images[:8], root=args.root)


if __name__ == "__main__":
    main()
