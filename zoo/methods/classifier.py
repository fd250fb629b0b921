"""Classification-based embedder: softmax over the training identities, the penultimate layer as the embedding."""

import keras
from keras import layers, ops

from zoo.distributed import on_global_batch
from zoo.methods.base import EmbeddingMethod
from zoo.methods.siamese import optional_augment
from zoo.ops import l2_normalize


@keras.saving.register_keras_serializable(package="zoo")
class Classifier(EmbeddingMethod):
    """Train an identity classifier; publish its L2-normalised penultimate features as the embedding.

    Fit on `x = images` (B, H, W, C) raw pixels and `y = labels` (B,) int in 0..num_classes-1
    (any batches; class-balanced P x K batches from `zoo.data.samplers.PKSampler` work well on
    skewed identity counts). The encoder's output is the penultimate layer; the head (one Dense
    layer to the identity logits) is dropped at export. `call` returns {"embeddings", "logits"};
    the metric `accuracy` is the training top-1 accuracy.

    Args:
        encoder: keras.Model. Raw images -> (B, F) penultimate features.
        num_classes: int. Training identities.
        label_smoothing: float. Label smoothing of the cross-entropy (0: none).
        head: keras.Model or None. Features -> logits (default: one Dense layer).
        augment: keras.Model or None. Random per-image augmentation applied in training only
            (e.g. zoo.data.augment.faces(48)); not part of `embedder`.

    Reference:
        Taigman, Yang, Ranzato, Wolf 2014, DeepFace: Closing the Gap to Human-Level Performance in
        Face Verification: "the output of the first fully-connected layer [...] is used as a
        raw face representation feature vector", trained "as a multi-class classification
        problem", and "normalized to be between zero and one [...] followed by L2 normalization".
    """

    NESTED = ("encoder", "head", "augment")
    IN_BATCH = False  # a mean over images: each replica's share of it

    def __init__(self, encoder, num_classes, label_smoothing=0.0, head=None, augment=None, **kwargs):
        super().__init__(encoder, **kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.num_classes, self.label_smoothing = int(num_classes), float(label_smoothing)
        if head is None:
            head = keras.Sequential([layers.Dense(self.num_classes)], name="classifier_head")
        head.build((None, self.feature_dim))
        self.head = head
        self.augment = optional_augment(augment, self.encoder)
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    def call(self, inputs, training=False):
        if self.augment is not None:
            # Random draws of the global batch on N replicas (zoo.distributed.on_global_batch).
            inputs = on_global_batch(lambda x: self.augment(x, training=training), [inputs])
        features = self.encoder(inputs, training=training)  # (B, F)
        return {"embeddings": l2_normalize(ops.cast(features, "float32")),
                "logits": self.head(features, training=training)}  # (B, C)

    def objective(self, y, y_pred):
        if y is None:
            raise ValueError("Classifier needs y = labels (B,) int in 0..num_classes-1")
        labels = ops.cast(y, "int32")
        logits = ops.cast(y_pred["logits"], "float32")  # (B, C)
        loss = ops.mean(keras.losses.categorical_crossentropy(
            ops.one_hot(labels, self.num_classes), logits, from_logits=True, label_smoothing=self.label_smoothing))
        predicted = ops.cast(ops.argmax(logits, axis=1), "int32")
        self.accuracy_tracker.update_state(ops.cast(ops.equal(predicted, labels), "float32"))
        return loss

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}
