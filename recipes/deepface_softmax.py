"""Retrain the `deepface_softmax` entry: a face embedder trained as an identity classifier on LFW.

    python recipes/deepface_softmax.py            # 960 steps, about 9 min on 2 CPU cores; publishes
    python recipes/deepface_softmax.py --smoke    # seconds, publishes into runs/smoke-exports

The published entry trained a wider ResNet for 5,000 steps on a GPU machine without TensorFlow
(1.1 min on one H200, JAX backend), then was evaluated and published where TensorFlow is:

    KERAS_BACKEND=jax python recipes/deepface_softmax.py --epochs 50 --widths 32-64-128-256 \
        --steps-per-epoch 100 --train-only --workdir runs/gpu/deepface_softmax
    python recipes/deepface_softmax.py --epochs 50 --widths 32-64-128-256 --steps-per-epoch 100 \
        --trained runs/gpu/deepface_softmax

Trains the same small ResNet as facenet_triplet, on the same LFW train identities and
augmentation, with a softmax over the identities; the L2-normalised penultimate layer is the
embedding (DeepFace-style) and the softmax head is dropped. Batches are class-balanced
(P identities x K photos), so the few people with hundreds of photos do not dominate.
Evaluated with facenet_triplet's protocol on the held-out test identities.
Interrupted runs resume from the last finished epoch when re-run (--fresh starts over).
"""

import sys
from dataclasses import dataclass

import keras
import numpy as np

from facenet_triplet import encoder, epoch_sync, lfw_data, lfw_metrics
from zoo.data.augment import faces
from zoo.data.samplers import PKSampler
from zoo.export import publish
from zoo.methods.classifier import Classifier
from zoo.recipe import (Stopwatch, embed, fit_or_restore, parse_config, print_metrics, recipe_command,
                        training_callbacks, training_record)


@dataclass
class Config:
    name: str = "deepface_softmax"
    seed: int = 0
    widths: str = "16-32-64-128"
    embedding_dim: int = 128
    label_smoothing: float = 0.1
    p: int = 32
    k: int = 4
    steps_per_epoch: int = 60
    epochs: int = 16
    learning_rate: float = 2e-3
    augment: bool = True
    identities: int = 0  # keep only this many training identities (0: all); --smoke uses a few


SMOKE = {"epochs": 2, "steps_per_epoch": 2, "p": 4, "k": 2, "widths": "8-16", "embedding_dim": 16,
         "identities": 8}


def build(config):
    """The compiled Classifier of `config`, its class-balanced sampler over the LFW train identities, and the
    callbacks the sampler needs."""
    keras.utils.set_random_seed(config.seed)
    train, _ = lfw_data(config)
    model = Classifier(encoder(config), num_classes=int(train["labels"].max()) + 1,
                       label_smoothing=config.label_smoothing,
                       augment=faces(48, seed=config.seed) if config.augment else None)
    sampler = PKSampler(train["images"], train["labels"], config.p, config.k, config.steps_per_epoch,
                        seed=config.seed)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * config.steps_per_epoch,
                                                      alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model, sampler, [epoch_sync(sampler)]


def fit(model, sampler, callbacks, config, workdir, fresh=False):
    """`model.fit` on the sampler, resumable from `workdir`; returns the History."""
    return model.fit(sampler, epochs=config.epochs, shuffle=False, verbose=1 if sys.stdout.isatty() else 2,
                     callbacks=training_callbacks(workdir, fresh) + callbacks)


def train(config, workdir, fresh=False):
    """Fit `build(config)` resumably in `workdir`: (model, seconds, images seen), the last two for this
    process's share of a resumed run."""
    model, sampler, callbacks = build(config)
    with Stopwatch() as clock:
        history = fit(model, sampler, callbacks, config, workdir, fresh)
    return model, clock.seconds, len(history.epoch) * config.steps_per_epoch * config.p * config.k


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    model, sampler, callbacks = build(config)
    run = fit_or_restore(model, config, args,
                         lambda: fit(model, sampler, callbacks, config, args.workdir, args.fresh))
    images_seen = run.epochs * config.steps_per_epoch * config.p * config.k  # the training process's share
    _, test = lfw_data(config)

    embedder = model.embedder
    test_images = np.asarray(test["images"], np.float32)
    metrics = lfw_metrics(embed(embedder, test_images), test["labels"])
    print_metrics(config.name, metrics)

    return publish(
        config.name, embedder, method="Classifier",
        dataset="LFW, people with >= 10 photos (48x48 RGB), train identities",
        protocol="verification", splits={"train": "lfw/train", "test": "lfw/test"},
        metrics=metrics, primary_metric="verification_accuracy", threshold=metrics["threshold"],
        anchor="DeepFace (Taigman et al. 2014): 97.35% on LFW's 6,000 pairs after training on 4.4M photos "
               "of 4,030 identities; here 126 identities, 3,683 images",
        recipe=recipe_command(config.name, argv),
        paper="Taigman, Yang, Ranzato, Wolf 2014, DeepFace, CVPR 2014",
        data_license="LFW: no license stated; research use (cite Huang et al. 2007)",
        training=training_record(config, run.seconds, images_seen, backend=run.backend, machine=run.machine,
                                 steps=config.epochs * config.steps_per_epoch, seed=config.seed),
        extras={"embedding": "L2-normalised penultimate layer", "preprocessing": "x / 127.5 - 1 inside the graph"},
        golden_inputs=test_images[:8], root=args.root)


if __name__ == "__main__":
    main()
