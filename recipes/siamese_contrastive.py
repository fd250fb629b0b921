"""Retrain the `siamese_contrastive` entry: a Siamese conv4 trained with the contrastive loss on Omniglot.

    python recipes/siamese_contrastive.py            # 1,500 steps (7 min on 2 CPU cores), publishes
    python recipes/siamese_contrastive.py --smoke    # seconds, publishes into runs/smoke-exports

The published entry trained 26,000 steps on a GPU machine without TensorFlow (2.8 min on one
H200, JAX backend), then was evaluated and published where TensorFlow is installed:

    KERAS_BACKEND=jax python recipes/siamese_contrastive.py --epochs 52 --steps-per-epoch 500 \
        --train-only --workdir runs/gpu/siamese
    python recipes/siamese_contrastive.py --epochs 52 --steps-per-epoch 500 --trained runs/gpu/siamese

Trains on pairs (half same character, half different) from the 964 characters of the
Omniglot background alphabets (28x28) and their rotations by 90/180/270 degrees as new
characters, with small affine and stroke distortions, as Koch et al. did. Half of the
different-character pairs come from one alphabet, the hard negatives of Lake's within-alphabet
runs. The embeddings are L2-normalised, so the contrastive margin is on distances in
[0, 2]. Evaluates on the 20 evaluation alphabets, never seen in training: Lake's 20 runs of
20-way one-shot classification (nearest neighbour), and pair verification (10-fold
accuracy, AUC, TAR@FAR=1e-3) on same-character pairs and as many different-character pairs.
Interrupted runs resume from the last finished epoch when re-run (--fresh starts over).
"""

import sys
from dataclasses import dataclass

import keras
import numpy as np

import zoo.data
from zoo import backbones, evaluate
from zoo.data.augment import characters
from zoo.data.samplers import PairSampler
from zoo.export import publish
from zoo.methods.siamese import Siamese
from zoo.recipe import embed, parse_config, print_metrics, recipe_command, fit_or_restore, training_callbacks, training_record


@dataclass
class Config:
    name: str = "siamese_contrastive"
    seed: int = 0
    margin: float = 1.0
    filters: int = 64
    batch_size: int = 128  # pairs per step
    steps_per_epoch: int = 100
    epochs: int = 15
    learning_rate: float = 1e-3
    augment: bool = True
    rotations: bool = True  # add each character rotated by 90, 180 and 270 degrees as three new characters
    group_negatives: float = 0.5  # fraction of different-character pairs drawn within one alphabet
    characters: int = 0  # keep only this many training characters (0: all); --smoke uses a few
    verification_pairs: int = 10000  # same-character pairs on the evaluation alphabets (and as many others)


SMOKE = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 16, "filters": 8, "characters": 20,
         "verification_pairs": 500}


def epoch_sync(sampler):
    """A callback that keeps the sampler's epoch (its random draws) in step with fit's, also after a resume."""
    return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: setattr(sampler, "epoch", epoch))


def with_rotations(images, labels, alphabets):
    """Each character plus its rotations by 90, 180 and 270 degrees as new characters of new alphabets
    (Vinyals et al. 2016; Snell et al. 2017): (4N, H, W, C) images, (4N,) labels and alphabets."""
    n_labels, n_alphabets = labels.max() + 1, alphabets.max() + 1
    return (np.concatenate([np.rot90(images, k, axes=(1, 2)) for k in range(4)]),
            np.concatenate([labels + k * n_labels for k in range(4)]),
            np.concatenate([alphabets + k * n_alphabets for k in range(4)]))


def build(config):
    """The compiled Siamese conv4 of `config`, its pair sampler over the background characters, and the
    callbacks the sampler needs."""
    keras.utils.set_random_seed(config.seed)
    train = zoo.data.load("omniglot", "background")
    images, labels, alphabets = train["images"], train["labels"], train["alphabet"]
    if config.characters:
        keep = labels < labels.min() + config.characters
        images, labels, alphabets = images[keep], labels[keep], alphabets[keep]
    if config.rotations:
        images, labels, alphabets = with_rotations(images, labels, alphabets)
    model = Siamese(backbones.conv4((28, 28, 1), filters=config.filters), margin=config.margin,
                    augment=characters(28, seed=config.seed) if config.augment else None)
    sampler = PairSampler(images, labels, config.batch_size, config.steps_per_epoch, seed=config.seed,
                          groups=alphabets, group_negatives=config.group_negatives)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * config.steps_per_epoch,
                                                      alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model, sampler, [epoch_sync(sampler)]


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    model, sampler, callbacks = build(config)
    run = fit_or_restore(model, config, args, lambda: model.fit(
        sampler, epochs=config.epochs, shuffle=False, verbose=1 if sys.stdout.isatty() else 2,
        callbacks=training_callbacks(args.workdir, args.fresh) + callbacks))
    images_seen = run.epochs * config.steps_per_epoch * 2 * config.batch_size  # the training process's share

    # Held-out: Lake's one-shot runs and pair verification, both on the evaluation alphabets.
    embedder = model.embedder
    runs = zoo.data.omniglot_oneshot_runs(28)
    run_images = np.concatenate([runs["train_images"], runs["test_images"]]).reshape(-1, 28, 28, 1)
    n_runs, way = runs["answers"].shape

    def oneshot(embed_fn):
        e = embed_fn(np.asarray(run_images, np.float32)).reshape(2, n_runs, way, -1)  # (train|test, R, W, D)
        return {"oneshot_accuracy": evaluate.oneshot_runs(e[0], e[1], runs["answers"])["accuracy"]}

    evaluation = zoo.data.load("omniglot", "evaluation")
    eval_images = np.asarray(evaluation["images"], np.float32)
    a, b, same = evaluate.verification_pairs(evaluation["labels"], n_pairs=config.verification_pairs, seed=0)
    eval_emb = embed(embedder, eval_images)
    v = evaluate.verification(eval_emb[a], eval_emb[b], same, folds=10)
    metrics = {**oneshot(lambda x: embed(embedder, x)),
               "verification_accuracy": v["accuracy"], "verification_accuracy_std": v["accuracy_std"],
               "auc": v["auc"], "eer": v["eer"], "tar_at_far_1e-3": v["tar_at_far"]["1e-03"],
               "threshold": v["threshold"], "pairs": int(len(same)),
               "few_shot_20way_1shot": evaluate.few_shot(eval_emb, evaluation["labels"], 20, 1, queries=5,
                                                         episodes=1000, seed=0)["mean"]}
    print_metrics(config.name, metrics)

    return publish(
        config.name, embedder, method="Siamese", dataset="Omniglot background (964 characters, 28x28)",
        protocol="few_shot", splits={"train": "omniglot/background", "test": "omniglot/evaluation"},
        metrics=metrics, primary_metric="oneshot_accuracy", threshold=metrics["threshold"],
        anchor="Koch et al. 2015: 92.0% on Lake's 20-way one-shot runs (105x105, affine distortions)",
        recipe=recipe_command(config.name, argv),
        paper="Hadsell, Chopra, LeCun 2006 (contrastive loss); Koch, Zemel, Salakhutdinov 2015 (Siamese one-shot)",
        data_license="Omniglot: MIT (Lake et al. 2015)",
        training=training_record(config, run.seconds, images_seen, backend=run.backend, machine=run.machine,
                                 steps=config.epochs * config.steps_per_epoch, seed=config.seed),
        extras={"margin": config.margin, "preprocessing": "ink = 1 - x / 255 inside the graph"},
        golden_inputs=run_images[:8], root=args.root)


if __name__ == "__main__":
    main()
