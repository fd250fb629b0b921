"""Retrain the `deepface_softmax` entry: a face embedder trained as an identity classifier on LFW.

    python recipes/deepface_softmax.py            # 960 steps, about 9 min on 2 CPU cores; publishes
    python recipes/deepface_softmax.py --smoke    # seconds, publishes into runs/smoke-exports

The published entry trained a wider ResNet for 5,000 steps on a GPU machine without TensorFlow
(1.1 min on one H200, JAX backend), then was evaluated and published where TensorFlow is:

    KERAS_BACKEND=jax python recipes/deepface_softmax.py --epochs 50 --widths 32-64-128-256 \
        --steps-per-epoch 100 --train-only --workdir runs/gpu/deepface_softmax
    python recipes/deepface_softmax.py --epochs 50 --widths 32-64-128-256 --steps-per-epoch 100 \
        --trained runs/gpu/deepface_softmax

Trains the same small ResNet as facenet_triplet, on the same LFW train identities and
augmentation, with a softmax over the identities; the L2-normalised penultimate layer is the
embedding (DeepFace-style) and the softmax head is dropped. Batches are class-balanced
(P identities x K photos), so the few people with hundreds of photos do not dominate.
Evaluated by zoo.protocols.verification on the held-out test identities, as facenet_triplet is.
Interrupted runs resume from the last finished epoch when re-run (--fresh starts over).
"""

from dataclasses import dataclass

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras

from zoo.data.augment import faces
from zoo.data.samplers import PKSampler
from zoo.methods.classifier import Classifier
from zoo.recipe import (LFW_DATASET, LFW_LICENSE, LFW_SPLITS, compile_with_cosine_decay, face_data, face_resnet,
                        lfw_splits, parse_config, publish_verification, train)


@dataclass
class Config:
    name: str = "deepface_softmax"
    seed: int = 0
    widths: str = "16-32-64-128"
    embedding_dim: int = 128
    label_smoothing: float = 0.1
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
    "method": "Classifier", "protocol": "verification", "primary_metric": "verification_accuracy",
    "dataset": LFW_DATASET, "splits": LFW_SPLITS, "data_license": LFW_LICENSE,
    "anchor": "DeepFace (Taigman et al. 2014): 97.35% on LFW's 6,000 pairs after training on 4.4M photos "
              "of 4,030 identities; here 126 identities, 3,683 images",
    "paper": "Taigman, Yang, Ranzato, Wolf 2014, DeepFace, CVPR 2014",
    "extras": {"embedding": "L2-normalised penultimate layer", "normalisation": "x / 127.5 - 1 inside the graph"},
}


def build(config, train_data=None):
    """The compiled Classifier of `config` and its class-balanced sampler over the LFW train identities."""
    keras.utils.set_random_seed(config.seed)
    train_data = lfw_splits(config.identities)[0] if train_data is None else train_data
    p = min(config.p, int(train_data["labels"].max()) + 1)  # a user folder may hold fewer identities than P
    model = Classifier(face_resnet(config.widths, config.embedding_dim),
                       num_classes=int(train_data["labels"].max()) + 1, label_smoothing=config.label_smoothing,
                       augment=faces(48, seed=config.seed) if config.augment else None)
    sampler = PKSampler(train_data["images"], train_data["labels"], p, config.k, config.steps_per_epoch,
                        seed=config.seed)
    return compile_with_cosine_decay(model, config, alpha=0.01), sampler, []


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    train_data, test, preprocessing, record = face_data(args, config)
    model, sampler, callbacks = build(config, train_data)
    run = train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * config.p * config.k,
                callbacks=callbacks, shuffle=False, argv=argv)
    card = {**CARD, "recipe": run.command, "preprocessing": preprocessing}
    # Held-out: identities never seen in training (LFW's test identities, or your held-out classes).
    return publish_verification(model.embedder, config, args, run, card, test, record,
                                steps=config.epochs * config.steps_per_epoch, seed=config.seed)


if __name__ == "__main__":
    main()
