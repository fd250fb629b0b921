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

from dataclasses import dataclass

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo import backbones
from zoo.data.augment import characters
from zoo.methods.barlow_twins import BarlowTwins
from zoo.recipe import (OMNIGLOT_LICENSE, OMNIGLOT_PREPROCESSING,
                        OMNIGLOT_SPLITS, SELF_SUPERVISED_SMOKE, SelfSupervisedConfig,
                        background_views, compile_with_cosine_decay, omniglot_data, parse_config, publish_few_shot,
                        train)


@dataclass
class Config(SelfSupervisedConfig):
    name: str = "barlow_twins"
    epochs: int = 10
    learning_rate: float = 2e-3
    lambd: float = 5e-3
    projection: str = "1024-1024-1024"


SMOKE = {**SELF_SUPERVISED_SMOKE, "projection": "64-64"}

CARD = {
    "method": "BarlowTwins", "protocol": "self_supervised", "primary_metric": "5way1shot",
    "dataset": "Omniglot background (30 alphabets, 19,280 images), 28x28, labels unused",
    "splits": OMNIGLOT_SPLITS, "preprocessing": OMNIGLOT_PREPROCESSING, "data_license": OMNIGLOT_LICENSE,
    "anchor": "unsupervised Omniglot 5-way 1-shot, conv4: UMTRA (Khodadadeh et al. 2019) 83.8%",
    "paper": "Zbontar, Jing, Misra, LeCun & Deny 2021, Barlow Twins: Self-Supervised Learning via Redundancy "
             "Reduction, ICML, arXiv:2103.03230",
}


def build(config, train=None):
    """The compiled BarlowTwins model of `config`, its sampler over the background images, no callbacks."""
    keras.utils.set_random_seed(config.seed)
    sampler = background_views(config, train=train)
    model = BarlowTwins(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed),
                        lambd=config.lambd, projection=config.projection)
    return compile_with_cosine_decay(model, config), sampler, []


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    own = omniglot_data(args, config)  # None: the bundled alphabets
    model, sampler, callbacks = build(config, own and own[0])
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * config.batch_size,
                callbacks=callbacks, argv=argv)
    extras = {"augmentation": "zoo.data.augment.characters(28)", "projector_dropped": config.projection,
              "distance": "squared Euclidean between L2-normalised embeddings and prototypes"}
    return publish_few_shot(model.embedder, config, args, run, {**CARD, "recipe": run.command, "extras": extras}, own,
                            views_per_image=2)


if __name__ == "__main__":
    main()
