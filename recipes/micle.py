"""Retrain the `micle` entry: MICLe on the Omniglot background alphabets, grouped by character.

    python recipes/micle.py            # full run, publishes exports/micle
    python recipes/micle.py --smoke    # seconds, publishes into runs/smoke-exports

SimCLR (see recipes/simclr.py) whose positive pairs are two drawings of one character by two
different people, each distorted by zoo.data.augment.characters, contrasted with NT-Xent
against the other pairs of the batch (all of other characters). A group id says which images
show the same character; the alphabets and character names are never read. That grouping is
real supervision, the kind a medical archive has for free (several images per patient):
this entry sits between the unsupervised ones and protonet. Adam with cosine decay. Evaluated
on the frozen embeddings of the evaluation alphabets (never trained on): nearest-prototype
5/20-way 1/5-shot (mean and 95% CI over random episodes), Lake's 20 one-shot runs and
leave-one-out retrieval recall@1.
"""

from dataclasses import dataclass

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo import backbones
from zoo.data.augment import characters
from zoo.methods.micle import MICLe
from zoo.recipe import (OMNIGLOT_LICENSE, OMNIGLOT_PREPROCESSING,
                        OMNIGLOT_SPLITS, SELF_SUPERVISED_SMOKE, SelfSupervisedConfig,
                        background_views, compile_with_cosine_decay, omniglot_data, parse_config, publish_few_shot,
                        train)


@dataclass
class Config(SelfSupervisedConfig):
    name: str = "micle"
    temperature: float = 0.1
    projection: str = "256-128"


SMOKE = {**SELF_SUPERVISED_SMOKE, "projection": "32-16"}

CARD = {
    "method": "MICLe", "protocol": "self_supervised", "primary_metric": "5way1shot",
    "dataset": "Omniglot background (30 alphabets, 19,280 images), 28x28, grouped by character (ids only)",
    "splits": OMNIGLOT_SPLITS, "preprocessing": OMNIGLOT_PREPROCESSING, "data_license": OMNIGLOT_LICENSE,
    "anchor": ("unsupervised Omniglot 5-way 1-shot, conv4: UMTRA (Khodadadeh et al. 2019) 83.8%; "
               "supervised: ProtoNet (Snell et al. 2017) 98.8%"),
    "paper": "Azizi et al. 2021, Big Self-Supervised Models Advance Medical Image Classification, ICCV, "
             "arXiv:2101.05224",
}


def build(config, train=None):
    """The compiled MICLe model of `config`, its sampler of character-grouped pairs, no callbacks."""
    keras.utils.set_random_seed(config.seed)
    sampler = background_views(config, groups=True, train=train)
    model = MICLe(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed),
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
                            views_per_image=2, pairs="two drawers of one character")


if __name__ == "__main__":
    main()
