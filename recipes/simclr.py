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

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo import backbones
from zoo.data.augment import characters
from zoo.methods.simclr import SimCLR
from zoo.recipe import (OMNIGLOT_LICENSE, OMNIGLOT_PREPROCESSING,
                        OMNIGLOT_SPLITS, SELF_SUPERVISED_SMOKE, SelfSupervisedConfig,
                        background_views, compile_with_cosine_decay, omniglot_data, parse_config, publish_few_shot,
                        train)


@dataclass
class Config(SelfSupervisedConfig):
    name: str = "simclr"
    temperature: float = 0.1
    projection: str = "256-128"


SMOKE = {**SELF_SUPERVISED_SMOKE, "projection": "32-16"}

CARD = {
    "method": "SimCLR", "protocol": "self_supervised", "primary_metric": "5way1shot",
    "dataset": "Omniglot background (30 alphabets, 19,280 images), 28x28, labels unused",
    "splits": OMNIGLOT_SPLITS, "preprocessing": OMNIGLOT_PREPROCESSING, "data_license": OMNIGLOT_LICENSE,
    "anchor": "unsupervised Omniglot 5-way 1-shot, conv4: UMTRA (Khodadadeh et al. 2019) 83.8%",
    "paper": "Chen, Kornblith, Norouzi & Hinton 2020, A Simple Framework for Contrastive Learning of Visual "
             "Representations, ICML, arXiv:2002.05709",
}


def build(config, train=None):
    """The compiled SimCLR model of `config`, its sampler over the background images, no callbacks."""
    keras.utils.set_random_seed(config.seed)
    sampler = background_views(config, train=train)
    model = SimCLR(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed),
                   temperature=config.temperature, projection=config.projection)
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
