"""Retrain the `simclr` entry: SimCLR on the Omniglot background alphabets, without their labels.

    python recipes/simclr.py            # full run, publishes exports/simclr
    python recipes/simclr.py --smoke    # seconds, publishes into runs/smoke-exports

conv4 (64-d features at 28x28) learns from pairs of random views of each background image
(zoo.data.augment.characters: affine, elastic and stroke-width jitter), contrasted against the
other images of the batch with NT-Xent through a projection head that is dropped afterwards.
The character labels are never read. Adam with cosine decay. Evaluated on the frozen embeddings
of the evaluation alphabets (never trained on): nearest-prototype 5/20-way 1/5-shot (mean and
95% CI over random episodes), Lake's 20 one-shot runs and leave-one-out retrieval recall@1.
"""

from dataclasses import dataclass

import keras

import zoo.data
from zoo import backbones
from zoo.data.augment import characters
from zoo.data.samplers import TwoViewSampler
from zoo.export import publish
from zoo.methods.simclr import SimCLR
from zoo.recipe import (OMNIGLOT_LICENSE, OMNIGLOT_SPLITS, omniglot_few_shot, parse_config, print_metrics,
                        subset, train)


@dataclass
class Config:
    name: str = "simclr"
    seed: int = 0
    batch_size: int = 128  # images per batch, two views each
    steps_per_epoch: int = 100
    epochs: int = 12
    learning_rate: float = 3e-3
    temperature: float = 0.1
    projection: str = "256-128"
    train_images: int = 0  # keep this many background images (0: all 19,280)
    test_classes: int = 0  # keep this many evaluation characters (0: all 659)
    test_episodes: int = 1000  # per few-shot setting
    test_queries: int = 15


SMOKE = {"batch_size": 16, "steps_per_epoch": 2, "epochs": 2, "projection": "32-16", "train_images": 256,
         "test_classes": 25, "test_episodes": 10}

CARD = {
    "method": "SimCLR", "protocol": "self_supervised", "primary_metric": "5way1shot",
    "dataset": "Omniglot background (30 alphabets, 19,280 images), 28x28, labels unused",
    "splits": OMNIGLOT_SPLITS, "data_license": OMNIGLOT_LICENSE,
    "anchor": "unsupervised Omniglot 5-way 1-shot, conv4: UMTRA (Khodadadeh et al. 2019) 83.8%",
    "paper": "Chen, Kornblith, Norouzi & Hinton 2020, A Simple Framework for Contrastive Learning of Visual "
             "Representations, ICML, arXiv:2002.05709",
}


def build(config):
    """The compiled SimCLR model of `config`, its sampler over the background images, no callbacks."""
    keras.utils.set_random_seed(config.seed)
    train_images, _ = subset(zoo.data.load("omniglot", "background"), rows=config.train_images, seed=config.seed)
    sampler = TwoViewSampler(train_images, config.batch_size, config.steps_per_epoch, seed=config.seed)
    model = SimCLR(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed),
                   temperature=config.temperature, projection=config.projection)
    steps = config.epochs * config.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model, sampler, []


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    model, sampler, callbacks = build(config)
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * config.batch_size,
                callbacks=callbacks, argv=argv)
    # Frozen embeddings of the evaluation alphabets, never trained on.
    metrics, test = omniglot_few_shot(model.embedder, classes=config.test_classes, episodes=config.test_episodes,
                                      queries=config.test_queries, seed=config.seed)
    print_metrics(config.name, metrics)
    extras = {"augmentation": "zoo.data.augment.characters(28)", "projector_dropped": config.projection,
              "distance": "squared Euclidean between L2-normalised embeddings and prototypes"}
    return publish(config.name, model.embedder, card={**CARD, "recipe": run.command, "extras": extras},
                   metrics=metrics, training=run.record(config, views_per_image=2),
                   golden_inputs=test["images"][:8], int8=not args.smoke, root=args.root)


if __name__ == "__main__":
    main()
