"""Retrain the `facenet_triplet` entry: a face embedder trained with semi-hard triplets on LFW.

    python recipes/facenet_triplet.py            # 960 steps, about 9 min on 2 CPU cores; publishes
    python recipes/facenet_triplet.py --smoke    # seconds, publishes into runs/smoke-exports

The published entry trained a wider ResNet for 5,000 steps on a GPU machine without TensorFlow
(1.1 min on one H200, JAX backend), then was evaluated and published where TensorFlow is:

    KERAS_BACKEND=jax python recipes/facenet_triplet.py --epochs 50 --widths 32-64-128-256 \
        --steps-per-epoch 100 --train-only --workdir runs/gpu/facenet_triplet
    python recipes/facenet_triplet.py --epochs 50 --widths 32-64-128-256 --steps-per-epoch 100 \
        --trained runs/gpu/facenet_triplet

Trains a small ResNet on the LFW train identities (people with >= 10 photos, 48x48 RGB) with
P x K batches and in-batch triplet mining (FaceNet's semi-hard by default; --mining batch_hard
or batch_all, --hard-cluster-weight, --classifier-weight for the ablation's variants), with
flips, small crops and colour jitter. Evaluates on the held-out test identities, never seen in
training: every same-person pair and as many different-person pairs, 10-fold verification
accuracy, ROC AUC, TAR@FAR=1e-3, and leave-one-out retrieval recall@1.
Interrupted runs resume from the last finished epoch when re-run (--fresh starts over).
"""

import sys
from dataclasses import dataclass

import keras
import numpy as np

import zoo.data
from zoo import backbones, evaluate
from zoo.data.augment import faces
from zoo.data.samplers import HardClusterSampler, PKSampler
from zoo.export import publish
from zoo.methods.triplet import Triplet
from zoo.recipe import (Stopwatch, embed, fit_or_restore, parse_config, print_metrics, recipe_command,
                        training_callbacks, training_record)


@dataclass
class Config:
    name: str = "facenet_triplet"
    seed: int = 0
    mining: str = "semi_hard"
    margin: float = 0.2
    squared: bool = False
    hard_cluster_weight: float = 0.0  # > 0 adds the hard-cluster term
    hard_cluster_sampler: bool = False  # batches of mutually close identities (refreshed every epoch)
    classifier_weight: float = 0.0  # > 0 adds a softmax head over the train identities (triplet + CE)
    widths: str = "16-32-64-128"
    embedding_dim: int = 128
    p: int = 32
    k: int = 4
    steps_per_epoch: int = 60
    epochs: int = 16
    learning_rate: float = 2e-3
    augment: bool = True
    identities: int = 0  # keep only this many training identities (0: all); --smoke uses a few


SMOKE = {"epochs": 2, "steps_per_epoch": 2, "p": 4, "k": 2, "widths": "8-16", "embedding_dim": 16,
         "identities": 8}


def lfw_data(config):
    """LFW train (labels remapped to 0..C-1) and test splits; a slice of identities for --smoke."""
    train, test = zoo.data.load("lfw", "train"), zoo.data.load("lfw", "test")
    _, labels = np.unique(train["labels"], return_inverse=True)  # global identity ids -> 0..C-1
    keep = labels < config.identities if config.identities else slice(None)
    return {"images": train["images"][keep], "labels": labels[keep]}, test


def encoder(config):
    """The small ResNet of the LFW entries, its last layer a linear map to `embedding_dim`."""
    widths = tuple(int(w) for w in config.widths.split("-"))
    return backbones.small_resnet((48, 48, 3), widths=widths, output_dim=config.embedding_dim, name="face_encoder")


def lfw_metrics(embeddings, labels):
    """The card's metrics on the test identities: 10-fold verification over every same pair and as many
    different pairs, AUC, EER, TAR@FAR=1e-3, leave-one-out recall@k and MAP@R."""
    a, b, same = evaluate.verification_pairs(labels, seed=0)
    v = evaluate.verification(embeddings[a], embeddings[b], same, folds=10)
    r = evaluate.retrieval(embeddings, labels, ks=(1, 5))
    return {"verification_accuracy": v["accuracy"], "verification_accuracy_std": v["accuracy_std"],
            "auc": v["auc"], "eer": v["eer"], "tar_at_far_1e-3": v["tar_at_far"]["1e-03"],
            "threshold": v["threshold"], "recall@1": r["recall@1"], "recall@5": r["recall@5"],
            "map_at_r": r["map_at_r"], "pairs": int(len(same)), "test_identities": int(len(np.unique(labels))),
            "test_images": int(len(labels))}


def epoch_sync(sampler):
    """A callback that keeps the sampler's epoch (its random draws) in step with fit's, also after a resume."""
    return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: setattr(sampler, "epoch", epoch))


def build(config):
    """The compiled Triplet model of `config`, its sampler over the LFW train identities, and the callbacks
    the sampler needs (epoch sync, hard-cluster refresh)."""
    keras.utils.set_random_seed(config.seed)
    train, _ = lfw_data(config)
    n_classes = int(train["labels"].max()) + 1
    model = Triplet(encoder(config), mining=config.mining, margin=config.margin, squared=config.squared,
                    hard_cluster_weight=config.hard_cluster_weight,
                    num_classes=n_classes if config.classifier_weight else None,
                    classifier_weight=config.classifier_weight or 1.0,
                    augment=faces(48, seed=config.seed) if config.augment else None)
    if config.hard_cluster_sampler:
        sampler = HardClusterSampler(train["images"], train["labels"], config.p, config.k, config.steps_per_epoch,
                                     seed=config.seed, refresh_every=10**9, pool=8)
        embedder = model.embedder
        sampler.set_embed_fn(lambda x: keras.ops.convert_to_numpy(embedder(x, training=False)))
        # Refreshed from the main thread at each epoch's start, with the weights of that moment.
        callbacks = [keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: sampler.refresh())]
    else:
        sampler = PKSampler(train["images"], train["labels"], config.p, config.k, config.steps_per_epoch,
                            seed=config.seed)
        callbacks = []
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * config.steps_per_epoch,
                                                      alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model, sampler, callbacks + [epoch_sync(sampler)]


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
        config.name, embedder, method="Triplet", dataset="LFW, people with >= 10 photos (48x48 RGB), train identities",
        protocol="verification", splits={"train": "lfw/train", "test": "lfw/test"},
        metrics=metrics, primary_metric="verification_accuracy", threshold=metrics["threshold"],
        anchor="FaceNet (Schroff et al. 2015): 99.63% on LFW's 6,000 pairs after training on 100-200M images "
               "of 8M identities; here 126 identities, 3,683 images",
        recipe=recipe_command(config.name, argv),
        paper="Schroff, Kalenichenko, Philbin 2015, FaceNet, arXiv:1503.03832",
        data_license="LFW: no license stated; research use (cite Huang et al. 2007)",
        training=training_record(config, run.seconds, images_seen, backend=run.backend, machine=run.machine,
                                 steps=config.epochs * config.steps_per_epoch, seed=config.seed),
        extras={"mining": config.mining, "margin": config.margin, "preprocessing": "x / 127.5 - 1 inside the graph"},
        golden_inputs=test_images[:8], root=args.root)


if __name__ == "__main__":
    main()
