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

from dataclasses import dataclass

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras
import numpy as np

import zoo.data
from zoo import backbones, protocols
from zoo.data.augment import characters
from zoo.data.samplers import PairSampler
from zoo.methods.siamese import Siamese
from zoo.data.kits import OMNIGLOT_LICENSE, OMNIGLOT_PREPROCESSING, OMNIGLOT_SPLITS, omniglot_data, omniglot_few_shot
from zoo.training import compile_with_cosine_decay, embed, parse_config, publish_run, train


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

CARD = {
    "method": "Siamese", "protocol": "few_shot", "trained_with_labels": True,
    "primary_metric": "lake_oneshot_runs",
    "dataset": "Omniglot background (964 characters, 28x28)", "splits": OMNIGLOT_SPLITS,
    "preprocessing": OMNIGLOT_PREPROCESSING,
    "data_license": OMNIGLOT_LICENSE,
    "anchor": "Koch et al. 2015: 92.0% on Lake's 20-way one-shot runs (105x105, affine distortions)",
    "paper": "Hadsell, Chopra, LeCun 2006 (contrastive loss); Koch, Zemel, Salakhutdinov 2015 (Siamese one-shot)",
}


def with_rotations(images, labels, alphabets):
    """Each character plus its rotations by 90, 180 and 270 degrees as new characters of new alphabets
    (Vinyals et al. 2016; Snell et al. 2017): (4N, H, W, C) images, (4N,) labels and alphabets."""
    n_labels, n_alphabets = labels.max() + 1, alphabets.max() + 1
    return (np.concatenate([np.rot90(images, k, axes=(1, 2)) for k in range(4)]),
            np.concatenate([labels + k * n_labels for k in range(4)]),
            np.concatenate([alphabets + k * n_alphabets for k in range(4)]))


def build(config, train=None):
    """The compiled Siamese conv4 of `config`, its pair sampler over the background characters (or the user's
    `train` classes, without alphabets to group negatives by), no callbacks."""
    keras.utils.set_random_seed(config.seed)
    train = zoo.data.load("omniglot", "background") if train is None else train
    images, labels = train["images"], train["labels"]
    alphabets = train["alphabet"] if "alphabet" in train else np.zeros_like(labels)
    if config.characters:
        keep = labels < labels.min() + config.characters
        images, labels, alphabets = images[keep], labels[keep], alphabets[keep]
    if config.rotations:
        images, labels, alphabets = with_rotations(images, labels, alphabets)
    model = Siamese(backbones.conv4((28, 28, 1), filters=config.filters), margin=config.margin,
                    augment=characters(28, seed=config.seed) if config.augment else None)
    sampler = PairSampler(images, labels, config.batch_size, config.steps_per_epoch, seed=config.seed,
                          groups=alphabets, group_negatives=config.group_negatives and "alphabet" in train)
    return compile_with_cosine_decay(model, config, alpha=0.01), sampler, []


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    own = omniglot_data(args, config, min_per_class=2)  # None: the bundled alphabets
    model, sampler, callbacks = build(config, own and own[0])
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * 2 * config.batch_size,
                callbacks=callbacks, shuffle=False, argv=argv)
    # Held-out, on the evaluation alphabets (or your held-out classes): the few-shot protocol (Lake's runs among
    # it) and pair verification.
    if own is None:
        metrics, test = omniglot_few_shot(model.embedder, seed=config.seed)
    else:
        test = own[1]
        metrics = protocols.get("few_shot").on_folder(lambda x: embed(model.embedder, x), test, seed=config.seed)
    verification = protocols.verification(lambda x: embed(model.embedder, x), test, pairs=config.verification_pairs)
    extras = {"margin": config.margin, "preprocessing": "ink = 1 - x / 255 inside the graph"}
    return publish_run(model.embedder, config, args, run, {**CARD, "extras": extras}, test,
                       {**verification, **metrics}, own and own[2], steps=config.epochs * config.steps_per_epoch,
                       seed=config.seed)

if __name__ == "__main__":
    main()
