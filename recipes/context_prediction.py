"""Retrain the `context_prediction` entry: Doersch et al.'s pretext task on Omniglot, no labels.

    python recipes/context_prediction.py            # full run, publishes exports/context_prediction
    python recipes/context_prediction.py --smoke    # seconds, publishes into runs/smoke-exports

Each 28x28 background image is resized to 3 * `cell` pixels a side and cut into a 3x3 grid of
jittered 28x28 patches with gaps between them; conv4 encodes every patch, and a small head on
the (centre, neighbour) feature pairs predicts which of the 8 positions each neighbour holds.
The head is dropped afterwards; the published embedder encodes the same grid, un-jittered, and
concatenates the 9 patch features (576-d; see zoo.methods.ContextPrediction). The character
labels are never read. Adam with cosine decay.
Evaluated on the frozen embeddings of the evaluation alphabets (never trained on):
nearest-prototype 5/20-way 1/5-shot (mean and 95% CI over random episodes), Lake's 20 one-shot
runs and leave-one-out retrieval recall@1.
"""

from dataclasses import dataclass

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo import backbones
from zoo.methods.context_prediction import ContextPrediction
from zoo.recipe import (OMNIGLOT_LICENSE, OMNIGLOT_PREPROCESSING,
                        OMNIGLOT_SPLITS, SELF_SUPERVISED_SMOKE, SelfSupervisedConfig,
                        background_views, compile_with_cosine_decay, omniglot_data, parse_config, publish_few_shot,
                        train)


@dataclass
class Config(SelfSupervisedConfig):
    name: str = "context_prediction"
    batch_size: int = 32  # images per batch, 9 patches each
    epochs: int = 16
    learning_rate: float = 2e-3
    cell: int = 36  # grid cell side after resizing (patches are 28: gaps of 8 +- 2 * jitter pixels)
    jitter: int = 4
    hidden: int = 512


SMOKE = {**SELF_SUPERVISED_SMOKE, "batch_size": 4, "hidden": 16}

CARD = {
    "method": "ContextPrediction", "protocol": "self_supervised", "primary_metric": "5way1shot",
    "dataset": "Omniglot background (30 alphabets, 19,280 images), 28x28, labels unused",
    "splits": OMNIGLOT_SPLITS, "preprocessing": OMNIGLOT_PREPROCESSING, "data_license": OMNIGLOT_LICENSE,
    "anchor": "unsupervised Omniglot 5-way 1-shot, conv4: UMTRA (Khodadadeh et al. 2019) 83.8%",
    "paper": "Doersch, Gupta & Efros 2015, Unsupervised Visual Representation Learning by Context Prediction, "
             "ICCV, arXiv:1505.05192",
}


def build(config, train=None):
    """The compiled ContextPrediction model of `config`, its sampler over the background images (the pretext
    task uses TwoViewSampler's x_a only), no callbacks."""
    keras.utils.set_random_seed(config.seed)
    sampler = background_views(config, train=train)
    model = ContextPrediction(backbones.conv4((28, 28, 1)), image_shape=(28, 28, 1), cell=config.cell,
                              jitter=config.jitter, hidden=config.hidden)
    return compile_with_cosine_decay(model, config), sampler, []


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    own = omniglot_data(args, config)  # None: the bundled alphabets
    model, sampler, callbacks = build(config, own and own[0])
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * config.batch_size,
                callbacks=callbacks, argv=argv)
    extras = {"patches": f"3x3 grid, 28x28 patches in {config.cell}-pixel cells of the image resized to "
              f"{3 * config.cell}, jitter +-{config.jitter}",
              "embedding": "concatenated conv4 features of the 9 un-jittered grid patches (9 x 64)",
              "distance": "squared Euclidean between L2-normalised embeddings and prototypes"}
    return publish_few_shot(model.embedder, config, args, run, {**CARD, "recipe": run.command, "extras": extras}, own,
                            patches_per_image=9)


if __name__ == "__main__":
    main()
