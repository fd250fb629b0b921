"""Triplet loss over P x K batches with in-batch mining, an optional cluster term and an optional softmax head."""

import keras
from keras import layers, ops

from zoo import losses
from zoo.distributed import on_global_batch
from zoo.methods.base import EmbeddingMethod
from zoo.methods.siamese import optional_augment
from zoo.ops import l2_normalize

MINING = {
    "semi_hard": losses.triplet_semi_hard,
    "batch_hard": losses.triplet_batch_hard,
    "batch_all": losses.triplet_batch_all,
}


@keras.saving.register_keras_serializable(package="zoo")
class Triplet(EmbeddingMethod):
    """Metric learning with triplets mined inside each batch of P identities x K images.

    Fit on `x = images` (B, H, W, C) raw pixels and `y = labels` (B,) int, as
    `zoo.data.samplers.PKSampler` (or `HardClusterSampler`) yields them. The loss is
    `triplet(mining) + hard_cluster_weight * hard_cluster + classifier_weight * cross-entropy`,
    on the L2-normalised embeddings; the cross-entropy head (present when `num_classes` is set)
    reads the un-normalised features and is not part of `embedder`. `call` returns
    {"embeddings": (B, F)} plus "logits" (B, num_classes) with a head. The metric
    `active_fraction` is the share of the batch's valid triplets with a positive hinge.

    Args:
        encoder: keras.Model. Raw images -> (B, F) features.
        mining: str. "semi_hard" (FaceNet), "batch_hard" or "batch_all" (Hermans et al.).
        margin: float. Triplet margin alpha.
        squared: bool. Squared Euclidean distances in the triplet loss (FaceNet's choice).
        hard_cluster_weight: float. Weight of the hard-cluster term (0: off).
        cluster_margin: float. Margin of the hard-cluster term.
        num_classes: int or None. Training identities of the cross-entropy head (None: no head);
            labels must then be 0..num_classes-1.
        classifier_weight: float. Weight of the cross-entropy term.
        head: keras.Model or None. The classification head (default: one Dense layer).
        augment: keras.Model or None. Random per-image augmentation applied in training only
            (e.g. zoo.data.augment.faces(48)); not part of `embedder`.

    Reference:
        Schroff, Kalenichenko, Philbin 2015, FaceNet: "we use all anchor-positive pairs in a
        mini-batch while still selecting the hard negatives"; Hermans, Beyer, Leibe 2017,
        In Defense of the Triplet Loss for Person Re-Identification (batch hard, batch all);
        Alex et al. 2018, Cluster Loss for Person Re-Identification (hard cluster term).
    """

    NESTED = ("encoder", "head", "augment")

    def __init__(self, encoder, mining="semi_hard", margin=0.2, squared=False, hard_cluster_weight=0.0,
                 cluster_margin=0.2, num_classes=None, classifier_weight=1.0, head=None, augment=None, **kwargs):
        super().__init__(encoder, **kwargs)
        if mining not in MINING:
            raise ValueError(f"mining must be one of {sorted(MINING)}, got {mining!r}")
        if not margin > 0:
            raise ValueError(f"margin must be positive, got {margin!r}")
        if hard_cluster_weight < 0 or classifier_weight < 0:
            raise ValueError("hard_cluster_weight and classifier_weight must be >= 0, got "
                             f"{hard_cluster_weight!r} and {classifier_weight!r}")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be None or >= 2, got {num_classes!r}")
        self.mining, self.margin, self.squared = mining, float(margin), bool(squared)
        self.hard_cluster_weight, self.cluster_margin = float(hard_cluster_weight), float(cluster_margin)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.classifier_weight = float(classifier_weight)
        if self.num_classes is not None and head is None:
            head = keras.Sequential([layers.Dense(self.num_classes)], name="classifier_head")
        if head is not None:
            head.build((None, self.feature_dim))
        self.head = head
        self.augment = optional_augment(augment, self.encoder)
        self.active_fraction_tracker = keras.metrics.Mean(name="active_fraction")
        self.triplet_loss_tracker = keras.metrics.Mean(name="triplet_loss")

    def call(self, inputs, training=False):
        if self.augment is not None:
            # Random draws of the global batch on N replicas (zoo.distributed.on_global_batch).
            inputs = on_global_batch(lambda x: self.augment(x, training=training), [inputs])
        features = self.encoder(inputs, training=training)  # (B, F)
        outputs = {"embeddings": l2_normalize(ops.cast(features, "float32"))}
        if self.head is not None:
            outputs["logits"] = self.head(features, training=training)  # (B, C)
        return outputs

    def objective(self, y, y_pred):
        if y is None:
            raise ValueError("Triplet needs y = labels (B,) int, e.g. from zoo.data.samplers.PKSampler")
        # Mining and clusters are in-batch: on N replicas the global batch (EmbeddingMethod.compute_loss gathers it).
        labels = ops.cast(y, "int32")  # (B,)
        embeddings = y_pred["embeddings"]  # (B, F) float32, unit norm
        triplet = MINING[self.mining](labels, embeddings, self.margin, self.squared)
        self.triplet_loss_tracker.update_state(triplet)
        self.active_fraction_tracker.update_state(losses.triplet_active_fraction(
            labels, ops.stop_gradient(embeddings), self.margin, self.squared))
        loss = triplet
        if self.hard_cluster_weight:
            loss = loss + self.hard_cluster_weight * losses.hard_cluster(labels, embeddings, self.cluster_margin)
        if self.head is not None:
            cross_entropy = keras.losses.sparse_categorical_crossentropy(
                labels, ops.cast(y_pred["logits"], "float32"), from_logits=True)
            loss = loss + self.classifier_weight * ops.mean(cross_entropy)
        return loss

    def get_config(self):
        return {**super().get_config(), "mining": self.mining, "margin": self.margin, "squared": self.squared,
                "hard_cluster_weight": self.hard_cluster_weight, "cluster_margin": self.cluster_margin,
                "num_classes": self.num_classes, "classifier_weight": self.classifier_weight}
