"""Retrain a face entry on LFW: one recipe, one preset per method.

    python recipes/face.py --preset facenet_triplet             # 960 steps, about 9 min on 2 CPU cores
    python recipes/face.py --preset deepface_softmax --smoke    # seconds, publishes into runs/smoke-exports

Presets:
    facenet_triplet   FaceNet: P x K batches and in-batch triplet mining (semi-hard by default; --loss
                      batch_hard or batch_all, --hard-cluster-weight, --classifier-weight for the ablation's
                      variants). --loss names any registered loss of labelled batches
                      (zoo.losses.label_losses(): e.g. multi_similarity, arcface), trained by
                      zoo.methods.MetricLearning with the loss's own default options; --mining is the older
                      name of --loss.
    deepface_softmax  DeepFace-style: a softmax over the training identities; the L2-normalised penultimate
                      layer is the embedding and the head is dropped. Batches are class-balanced (P identities
                      x K photos), so the few people with hundreds of photos do not dominate.

Both train a small ResNet (`--backbone face_resnet`, 48x48) on the LFW train identities (people with >= 10
photos, 48x48 RGB) with flips, small crops and colour jitter, and are evaluated on the held-out test
identities, never seen in training: every same-person pair and as many different-person pairs, 10-fold
verification accuracy, ROC AUC, TAR@FAR=1e-3, and leave-one-out retrieval recall@1. With --data, your folder
of people (DIR/<person>/<photo>) aligned by the entry's contract; with --init ENTRY, fine-tuned from that
entry. `--backbone dlib_resnet --side 150` builds dlib's face ResNet instead (zoo.backbones.dlib_face_resnet),
which is how `--init dlib_resnet` (the entry converted by recipes/import_dlib_resnet.py, whose card names this
recipe's facenet_triplet preset and those options for fine-tuning) fine-tunes it; its images then come at
150x150 through the parent's contract.

The published entries trained a wider ResNet for 5,000 steps on a GPU machine without TensorFlow (1.1 min on
one H200, JAX backend), then were evaluated and published where TensorFlow is:

    KERAS_BACKEND=jax python recipes/face.py --preset facenet_triplet --epochs 50 --widths 32-64-128-256 \
        --steps-per-epoch 100 --train-only --workdir runs/gpu/facenet_triplet
    python recipes/face.py --preset facenet_triplet --epochs 50 --widths 32-64-128-256 --steps-per-epoch 100 \
        --trained runs/gpu/facenet_triplet

Interrupted runs resume from the last finished epoch when re-run (--fresh starts over).
"""

from dataclasses import dataclass, field, replace

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo.backbones import dlib_face_resnet, face_resnet
from zoo.data.augment import faces
from zoo.data.kits import LFW_DATASET, LFW_LICENSE, LFW_SPLITS, face_data, lfw_splits
from zoo.data.samplers import HardClusterSampler, PKSampler
from zoo.losses import label_losses
from zoo.methods.classifier import Classifier
from zoo.methods.metric import MetricLearning
from zoo.methods.triplet import MINING, Triplet
from zoo.training import Preset, compile_with_cosine_decay, parse_config, publish_run, train


@dataclass
class FaceConfig:
    """The Config fields both presets share."""

    seed: int = 0
    widths: str = "16-32-64-128"
    embedding_dim: int = 128
    p: int = 32
    k: int = 4
    steps_per_epoch: int = 60
    epochs: int = 16
    learning_rate: float = 2e-3
    augment: bool = True
    identities: int = 0  # keep only this many training identities (0: all); --smoke uses a few
    backbone: str = "face_resnet"  # or "dlib_resnet": dlib's face ResNet (widths unused), to fine-tune dlib_resnet
    side: int = 48  # input side in pixels (the dlib_resnet backbone takes 150)


@dataclass
class TripletConfig(FaceConfig):
    name: str = "facenet_triplet"
    # The loss; the triplet miners (semi_hard, batch_hard, batch_all) train a Triplet, the others MetricLearning.
    loss: str = field(default="semi_hard", metadata={"choices": label_losses()})
    mining: str = field(default="semi_hard", metadata={"choices": label_losses()})  # the older name of `loss`
    margin: float = 0.2  # of the triplet losses (the other losses train with their defaults)
    squared: bool = False
    hard_cluster_weight: float = 0.0  # > 0 adds the hard-cluster term
    hard_cluster_sampler: bool = False  # batches of mutually close identities (refreshed every epoch)
    classifier_weight: float = 0.0  # > 0 adds a softmax head over the train identities (triplet + CE)


@dataclass
class ClassifierConfig(FaceConfig):
    name: str = "deepface_softmax"
    label_smoothing: float = 0.1


SMOKE = {"epochs": 2, "steps_per_epoch": 2, "p": 4, "k": 2, "widths": "8-16", "embedding_dim": 16, "identities": 8}
LFW = {"protocol": "verification", "primary_metric": "verification_accuracy", "trained_with_labels": True,
       "dataset": LFW_DATASET, "splits": LFW_SPLITS, "data_license": LFW_LICENSE}
NORMALISATION = "x / 127.5 - 1 inside the graph"
BACKBONES = ("face_resnet", "dlib_resnet")


def encoder(config):
    """The encoder of `config.backbone`: the zoo's small face ResNet at 48x48, or dlib's face ResNet."""
    if config.backbone == "dlib_resnet":
        return dlib_face_resnet(side=config.side, embedding_dim=config.embedding_dim)
    if config.backbone != "face_resnet" or config.side != 48:
        raise ValueError(f"--backbone must be one of {BACKBONES} (face_resnet at --side 48), got "
                         f"{config.backbone!r} at {config.side}")
    return face_resnet(config.widths, config.embedding_dim)


def loss_of(config):
    """The loss `config` trains: `loss`, or `mining` (its older name) where `loss` is at its default."""
    if config.loss != TripletConfig.loss and config.mining not in (TripletConfig.loss, config.loss):
        raise ValueError(f"loss {config.loss!r} and mining {config.mining!r}: mining is the older name of loss, "
                         "give one")
    return config.loss if config.loss != TripletConfig.loss else config.mining


def with_one_loss(config, args):
    """`config` with `loss` and `mining` both the loss it trains (so the card records one name); a flag given wins
    over the defaults and over an --init parent's."""
    given = {args.loss, args.mining} - {None}
    if len(given) > 1:
        raise ValueError(f"--loss {args.loss} and --mining {args.mining}: --mining is the older name of --loss, "
                         "give one")
    name = given.pop() if given else loss_of(config)
    return replace(config, loss=name, mining=name)


def build_triplet(config, train_data, p):
    """A Triplet for a triplet miner, else MetricLearning with the loss; its sampler and the callbacks the sampler
    needs (the hard-cluster refresh)."""
    n_classes = int(train_data["labels"].max()) + 1
    loss = loss_of(config)
    parts = {"hard_cluster_weight": config.hard_cluster_weight,
             "augment": faces(config.side, seed=config.seed) if config.augment else None}
    if loss in MINING:
        model = Triplet(encoder(config), mining=loss, margin=config.margin, squared=config.squared,
                        num_classes=n_classes if config.classifier_weight else None,
                        classifier_weight=config.classifier_weight or 1.0, **parts)
        options = {"mining": loss, "margin": config.margin}
    else:  # num_classes: the rows of a class-centre head (ArcFace) and of the softmax head
        model = MetricLearning(encoder(config), loss=loss, num_classes=n_classes,
                               classifier_weight=config.classifier_weight, **parts)
        options = {"loss_options": model.loss_options}
    callbacks = []
    if config.hard_cluster_sampler:
        sampler = HardClusterSampler(train_data["images"], train_data["labels"], p, config.k,
                                     config.steps_per_epoch, seed=config.seed, refresh_every=10**9, pool=8)
        embedder = model.embedder
        sampler.set_embed_fn(lambda x: keras.ops.convert_to_numpy(embedder(x, training=False)))
        # Refreshed from the main thread at each epoch's start, with the weights of that moment.
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: sampler.refresh()))
    else:
        sampler = PKSampler(train_data["images"], train_data["labels"], p, config.k, config.steps_per_epoch,
                            seed=config.seed)
    return model, sampler, callbacks, {"loss": loss, **options, "normalisation": NORMALISATION}


def build_classifier(config, train_data, p):
    """The Classifier and its class-balanced sampler."""
    model = Classifier(encoder(config),
                       num_classes=int(train_data["labels"].max()) + 1, label_smoothing=config.label_smoothing,
                       augment=faces(config.side, seed=config.seed) if config.augment else None)
    sampler = PKSampler(train_data["images"], train_data["labels"], p, config.k, config.steps_per_epoch,
                        seed=config.seed)
    return model, sampler, [], {"embedding": "L2-normalised penultimate layer", "normalisation": NORMALISATION}


PRESETS = {
    "facenet_triplet": Preset(TripletConfig, SMOKE, {
        "method": "Triplet", **LFW,
        "anchor": "FaceNet (Schroff et al. 2015): 99.63% on LFW's 6,000 pairs after training on 100-200M images "
                  "of 8M identities; here 126 identities, 3,683 images",
        "paper": "Schroff, Kalenichenko, Philbin 2015, FaceNet, arXiv:1503.03832"},
        build_triplet, "triplets mined in P x K batches (FaceNet)"),
    "deepface_softmax": Preset(ClassifierConfig, SMOKE, {
        "method": "Classifier", **LFW,
        "anchor": "DeepFace (Taigman et al. 2014): 97.35% on LFW's 6,000 pairs after training on 4.4M photos "
                  "of 4,030 identities; here 126 identities, 3,683 images",
        "paper": "Taigman, Yang, Ranzato, Wolf 2014, DeepFace, CVPR 2014"},
        build_classifier, "softmax over the training identities (DeepFace)"),
}


def build(config, preset, train_data=None):
    """The compiled model of `config`, its sampler over the LFW train identities (or `train_data`), the
    callbacks and the card's extras."""
    keras.utils.set_random_seed(config.seed)
    train_data = lfw_splits(config.identities)[0] if train_data is None else train_data
    p = min(config.p, int(train_data["labels"].max()) + 1)  # a user folder may hold fewer identities than P
    model, sampler, callbacks, extras = PRESETS[preset].build(config, train_data, p)
    return compile_with_cosine_decay(model, config, alpha=0.01), sampler, callbacks, extras


def main(argv=None):
    config, args = parse_config(PRESETS, argv=argv, description=__doc__)
    if isinstance(config, TripletConfig):
        config = with_one_loss(config, args)
    train_data, test, preprocessing, record = face_data(args, config)
    model, sampler, callbacks, extras = build(config, args.preset, train_data)
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * config.p * config.k,
                callbacks=callbacks, shuffle=False, argv=argv)
    card = {**PRESETS[args.preset].card, "method": type(model).__name__, "preprocessing": preprocessing,
            "extras": extras}
    if args.parent is not None and args.parent["card"].source:  # a converted parent: its weights came from there
        card["anchor"] = f"fine-tuned from {args.parent['card'].name} ({args.parent['card'].anchor})"
    # Held-out: identities never seen in training (LFW's test identities, or your held-out classes).
    return publish_run(model.embedder, config, args, run, card, test, record=record,
                       steps=config.epochs * config.steps_per_epoch, seed=config.seed)


if __name__ == "__main__":
    main()
