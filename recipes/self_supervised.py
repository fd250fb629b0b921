"""Retrain a self-supervised Omniglot entry: one recipe, one preset per method.

    python recipes/self_supervised.py --preset simclr             # full run, publishes exports/simclr
    python recipes/self_supervised.py --preset barlow_twins --smoke   # seconds, into runs/smoke-exports

Presets (each a Config dataclass with its defaults, its --smoke overrides and its card fields):
    simclr              SimCLR: NT-Xent between two views of each image through a projection head (dropped).
    barlow_twins        Barlow Twins: a wide projector's two views standardised over the batch, their
                        cross-correlation driven to the identity; no negatives (projector dropped).
    micle               MICLe: SimCLR whose positive pairs are two drawings of one character by two people
                        (a group id says which images show one character; the names are never read).
    context_prediction  Doersch et al.'s pretext task: each image resized to 3 * `cell` pixels, cut into a
                        3x3 grid of jittered 28x28 patches with gaps; a head on (centre, neighbour) feature
                        pairs predicts the neighbour's position among 8 (dropped); the embedder concatenates
                        the 9 un-jittered patch features (576-d).

conv4 (64-d features at 28x28) learns from the Omniglot background alphabets (19,280 images), their views
drawn by zoo.data.augment.characters (affine, elastic and stroke-width jitter); Adam with cosine decay.
Only MICLe reads which images show one character; no preset reads the alphabets or character names.
Evaluated on the frozen embeddings of the evaluation alphabets (never trained on): nearest-prototype
5/20-way 1/5-shot (mean and 95% CI over random episodes), Lake's 20 one-shot runs and leave-one-out
retrieval recall@1. Interrupted runs resume from the last finished epoch when re-run (--fresh starts over).
"""

from dataclasses import dataclass

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo import backbones
from zoo.data.augment import characters
from zoo.data.kits import (OMNIGLOT_LICENSE, OMNIGLOT_PREPROCESSING, OMNIGLOT_SPLITS, background_views,
                           omniglot_data, omniglot_few_shot)
from zoo.methods.barlow_twins import BarlowTwins
from zoo.methods.context_prediction import ContextPrediction
from zoo.methods.micle import MICLe
from zoo.methods.simclr import SimCLR
from zoo.training import Preset, compile_with_cosine_decay, parse_config, publish_run, train


@dataclass
class SelfSupervisedConfig:
    """The Config fields every preset shares; each adds its own (and its name)."""

    seed: int = 0
    batch_size: int = 128  # images (MICLe: characters) per batch, two views each
    steps_per_epoch: int = 100
    epochs: int = 12
    learning_rate: float = 3e-3
    train_images: int = 0  # keep this many background images (0: all 19,280)
    test_classes: int = 0  # keep this many evaluation characters (0: all 659)
    test_episodes: int = 1000  # per few-shot setting
    test_queries: int = 15


@dataclass
class SimCLRConfig(SelfSupervisedConfig):
    name: str = "simclr"
    temperature: float = 0.1
    projection: str = "256-128"


@dataclass
class BarlowTwinsConfig(SelfSupervisedConfig):
    name: str = "barlow_twins"
    epochs: int = 10
    learning_rate: float = 2e-3
    lambd: float = 5e-3
    projection: str = "1024-1024-1024"


@dataclass
class MICLeConfig(SimCLRConfig):  # SimCLR's settings, other positive pairs
    name: str = "micle"


@dataclass
class ContextPredictionConfig(SelfSupervisedConfig):
    name: str = "context_prediction"
    batch_size: int = 32  # images per batch, 9 patches each
    epochs: int = 16
    learning_rate: float = 2e-3
    cell: int = 36  # grid cell side after resizing (patches are 28: gaps of 8 +- 2 * jitter pixels)
    jitter: int = 4
    hidden: int = 512


SMOKE = {"batch_size": 16, "steps_per_epoch": 2, "epochs": 2, "train_images": 256, "test_classes": 25,
         "test_episodes": 10}
UNLABELLED = "Omniglot background (30 alphabets, 19,280 images), 28x28, labels unused"
UMTRA = "unsupervised Omniglot 5-way 1-shot, conv4: UMTRA (Khodadadeh et al. 2019) 83.8%"
OMNIGLOT = {"protocol": "few_shot", "primary_metric": "5way1shot", "splits": OMNIGLOT_SPLITS,
            "preprocessing": OMNIGLOT_PREPROCESSING, "data_license": OMNIGLOT_LICENSE}
DISTANCE = "squared Euclidean between L2-normalised embeddings and prototypes"


def projected(config):
    """Card extras and training record of the presets with a dropped projection head."""
    return ({"augmentation": "zoo.data.augment.characters(28)", "projector_dropped": config.projection,
             "distance": DISTANCE}, {"views_per_image": 2})


# Each builder draws its sampler before it builds its model, in the order the entries were trained in.
def build_simclr(config, train):
    sampler = background_views(config, train=train)
    model = SimCLR(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed), temperature=config.temperature,
                   projection=config.projection)
    return model, sampler, projected(config)


def build_barlow_twins(config, train):
    sampler = background_views(config, train=train)
    model = BarlowTwins(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed), lambd=config.lambd,
                        projection=config.projection)
    return model, sampler, projected(config)


def build_micle(config, train):
    sampler = background_views(config, groups=True, train=train)
    model = MICLe(backbones.conv4((28, 28, 1)), characters(28, seed=config.seed), temperature=config.temperature,
                  projection=config.projection)
    extras, record = projected(config)
    return model, sampler, (extras, {**record, "pairs": "two drawers of one character"})


def build_context_prediction(config, train):
    sampler = background_views(config, train=train)  # the pretext task reads its x_a only
    model = ContextPrediction(backbones.conv4((28, 28, 1)), image_shape=(28, 28, 1), cell=config.cell,
                              jitter=config.jitter, hidden=config.hidden)
    extras = {"patches": f"3x3 grid, 28x28 patches in {config.cell}-pixel cells of the image resized to "
                         f"{3 * config.cell}, jitter +-{config.jitter}",
              "embedding": "concatenated conv4 features of the 9 un-jittered grid patches (9 x 64)",
              "distance": DISTANCE}
    return model, sampler, (extras, {"patches_per_image": 9})


PRESETS = {
    "simclr": Preset(SimCLRConfig, {**SMOKE, "projection": "32-16"}, {
        "method": "SimCLR", **OMNIGLOT, "trained_with_labels": False, "dataset": UNLABELLED, "anchor": UMTRA,
        "paper": "Chen, Kornblith, Norouzi & Hinton 2020, A Simple Framework for Contrastive Learning of Visual "
                 "Representations, ICML, arXiv:2002.05709"}, build_simclr, "SimCLR, NT-Xent over two views"),
    "barlow_twins": Preset(BarlowTwinsConfig, {**SMOKE, "projection": "64-64"}, {
        "method": "BarlowTwins", **OMNIGLOT, "trained_with_labels": False, "dataset": UNLABELLED, "anchor": UMTRA,
        "paper": "Zbontar, Jing, Misra, LeCun & Deny 2021, Barlow Twins: Self-Supervised Learning via Redundancy "
                 "Reduction, ICML, arXiv:2103.03230"}, build_barlow_twins, "Barlow Twins, redundancy reduction"),
    # MICLe reads which images show one character (group ids): labels, though never their names.
    "micle": Preset(MICLeConfig, {**SMOKE, "projection": "32-16"}, {
        "method": "MICLe", **OMNIGLOT, "trained_with_labels": True,
        "dataset": "Omniglot background (30 alphabets, 19,280 images), 28x28, grouped by character (ids only)",
        "anchor": f"{UMTRA}; supervised: ProtoNet (Snell et al. 2017) 98.8%",
        "paper": "Azizi et al. 2021, Big Self-Supervised Models Advance Medical Image Classification, ICCV, "
                 "arXiv:2101.05224"}, build_micle, "MICLe, two drawers of one character as positives"),
    "context_prediction": Preset(ContextPredictionConfig, {**SMOKE, "batch_size": 4, "hidden": 16}, {
        "method": "ContextPrediction", **OMNIGLOT, "trained_with_labels": False, "dataset": UNLABELLED,
        "anchor": UMTRA,
        "paper": "Doersch, Gupta & Efros 2015, Unsupervised Visual Representation Learning by Context Prediction, "
                 "ICCV, arXiv:1505.05192"}, build_context_prediction, "Doersch et al.'s relative patch position"),
}


def build(config, preset, train=None):
    """The compiled model of a preset's `config`, its sampler over the background images (or the user's `train`
    images), and (card extras, training record)."""
    keras.utils.set_random_seed(config.seed)
    model, sampler, described = PRESETS[preset].build(config, train)
    return compile_with_cosine_decay(model, config), sampler, described


def main(argv=None):
    config, args = parse_config(PRESETS, argv=argv, description=__doc__)
    own = omniglot_data(args, config)  # None: the bundled alphabets
    model, sampler, (extras, record) = build(config, args.preset, own and own[0])
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * config.batch_size, argv=argv)
    if own is None:  # the evaluation alphabets (`config.test_*` of them), never trained on
        metrics, test = omniglot_few_shot(model.embedder, classes=config.test_classes, episodes=config.test_episodes,
                                          queries=config.test_queries, seed=config.seed)
    else:
        metrics, test = None, own[1]
    card = {**PRESETS[args.preset].card, "extras": extras}
    return publish_run(model.embedder, config, args, run, card, test, metrics, own[2] if own else None, **record)


if __name__ == "__main__":
    main()
