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
P x K batches and in-batch triplet mining (FaceNet's semi-hard by default; --loss batch_hard
or batch_all, --hard-cluster-weight, --classifier-weight for the ablation's variants), with
flips, small crops and colour jitter. --loss names any registered loss of labelled batches
(zoo.losses.label_losses(): e.g. multi_similarity, arcface), trained by zoo.methods.MetricLearning
with the loss's own default options; --mining is the older name of --loss. Evaluates on the
held-out test identities, never seen in training: every same-person pair and as many
different-person pairs, 10-fold verification accuracy, ROC AUC, TAR@FAR=1e-3, and
leave-one-out retrieval recall@1.
Interrupted runs resume from the last finished epoch when re-run (--fresh starts over).
"""

from dataclasses import dataclass, field, replace

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo.data.augment import faces
from zoo.data.samplers import HardClusterSampler, PKSampler
from zoo.losses import label_losses
from zoo.methods.metric import MetricLearning
from zoo.methods.triplet import MINING, Triplet
from zoo.recipe import (LFW_DATASET, LFW_LICENSE, LFW_SPLITS, compile_with_cosine_decay, face_data, face_resnet,
                        lfw_splits, parse_config, publish_verification, train)


@dataclass
class Config:
    name: str = "facenet_triplet"
    seed: int = 0
    # The loss; the triplet miners (semi_hard, batch_hard, batch_all) train a Triplet, the others MetricLearning.
    loss: str = field(default="semi_hard", metadata={"choices": label_losses()})
    mining: str = field(default="semi_hard", metadata={"choices": label_losses()})  # the older name of `loss`
    margin: float = 0.2  # of the triplet losses (the other losses train with their defaults)
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

CARD = {
    "method": "Triplet", "protocol": "verification", "primary_metric": "verification_accuracy",
    "dataset": LFW_DATASET, "splits": LFW_SPLITS, "data_license": LFW_LICENSE,
    "anchor": "FaceNet (Schroff et al. 2015): 99.63% on LFW's 6,000 pairs after training on 100-200M images "
              "of 8M identities; here 126 identities, 3,683 images",
    "paper": "Schroff, Kalenichenko, Philbin 2015, FaceNet, arXiv:1503.03832",
}


def loss_of(config):
    """The loss `config` trains: `loss`, or `mining` (its older name) where `loss` is at its default."""
    if config.loss != Config.loss and config.mining not in (Config.loss, config.loss):
        raise ValueError(f"loss {config.loss!r} and mining {config.mining!r}: mining is the older name of loss, "
                         "give one")
    return config.loss if config.loss != Config.loss else config.mining


def with_one_loss(config, args):
    """`config` with `loss` and `mining` both the loss it trains (so the card records one name); a flag given wins
    over the defaults and over an --init parent's."""
    given = {args.loss, args.mining} - {None}
    if len(given) > 1:
        raise ValueError(f"--loss {args.loss} and --mining {args.mining}: --mining is the older name of --loss, "
                         "give one")
    name = given.pop() if given else loss_of(config)
    return replace(config, loss=name, mining=name)


def build(config, train_data=None):
    """The compiled model of `config` (a Triplet for a triplet miner, else MetricLearning), its sampler over the
    LFW train identities, and the callbacks the sampler needs (the hard-cluster refresh)."""
    keras.utils.set_random_seed(config.seed)
    train_data = lfw_splits(config.identities)[0] if train_data is None else train_data
    p = min(config.p, int(train_data["labels"].max()) + 1)  # a user folder may hold fewer identities than P
    n_classes = int(train_data["labels"].max()) + 1
    encoder, loss = face_resnet(config.widths, config.embedding_dim), loss_of(config)
    parts = {"hard_cluster_weight": config.hard_cluster_weight,
             "augment": faces(48, seed=config.seed) if config.augment else None}
    if loss in MINING:
        model = Triplet(encoder, mining=loss, margin=config.margin, squared=config.squared,
                        num_classes=n_classes if config.classifier_weight else None,
                        classifier_weight=config.classifier_weight or 1.0, **parts)
    else:  # num_classes: the rows of a class-centre head (ArcFace) and of the softmax head
        model = MetricLearning(encoder, loss=loss, num_classes=n_classes, classifier_weight=config.classifier_weight,
                               **parts)
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
    return compile_with_cosine_decay(model, config, alpha=0.01), sampler, callbacks


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    config = with_one_loss(config, args)
    train_data, test, preprocessing, record = face_data(args, config)
    model, sampler, callbacks = build(config, train_data)
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * config.p * config.k,
                callbacks=callbacks, shuffle=False, argv=argv)
    options = ({"mining": config.loss, "margin": config.margin} if config.loss in MINING
               else {"loss_options": model.loss_options})
    extras = {"loss": config.loss, **options, "normalisation": "x / 127.5 - 1 inside the graph"}
    card = {**CARD, "method": type(model).__name__, "recipe": run.command, "preprocessing": preprocessing,
            "extras": extras}
    # Held-out: identities never seen in training (LFW's test identities, or your held-out classes).
    return publish_verification(model.embedder, config, args, run, card, test, record,
                                steps=config.epochs * config.steps_per_epoch, seed=config.seed)


if __name__ == "__main__":
    main()
