"""Triplet loss over P x K batches with in-batch mining, an optional cluster term and an optional softmax head."""

import keras
from keras import layers

from zoo import losses
from zoo.methods.metric import MetricLearning

# The triplet losses by miner: the registered losses of the same names.
MINING = {
    "semi_hard": losses.triplet_semi_hard,
    "batch_hard": losses.triplet_batch_hard,
    "batch_all": losses.triplet_batch_all,
}


@keras.saving.register_keras_serializable(package="zoo")
class Triplet(MetricLearning):
    """Metric learning with triplets mined inside each batch of P identities x K images.

    `MetricLearning` with the triplet loss of one miner (`loss=mining`, options margin and squared). Fit on
    `x = images` (B, H, W, C) raw pixels and `y = labels` (B,) int, as `zoo.data.samplers.PKSampler` (or
    `HardClusterSampler`) yields them. The loss is
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
        if mining not in MINING:
            raise ValueError(f"mining must be one of {sorted(MINING)}, got {mining!r}")
        if not margin > 0:
            raise ValueError(f"margin must be positive, got {margin!r}")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be None or >= 2, got {num_classes!r}")
        if classifier_weight < 0:
            raise ValueError(f"classifier_weight must be >= 0, got {classifier_weight!r}")
        if num_classes is not None and head is None:  # the head comes with num_classes, whatever its weight
            head = keras.Sequential([layers.Dense(int(num_classes))], name="classifier_head")
        super().__init__(encoder, loss=mining, loss_options={"margin": float(margin), "squared": bool(squared)},
                         hard_cluster_weight=hard_cluster_weight, cluster_margin=cluster_margin,
                         num_classes=num_classes, classifier_weight=classifier_weight if head is not None else 0.0,
                         head=head, augment=augment, **kwargs)
        self.mining, self.margin, self.squared = mining, float(margin), bool(squared)
        self.classifier_weight = float(classifier_weight)  # as given: it weighs the head's term where there is one

    def get_config(self):
        config = super().get_config()
        del config["loss"], config["loss_options"]
        return {**config, "mining": self.mining, "margin": self.margin, "squared": self.squared}
