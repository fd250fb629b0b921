"""Prototypical networks: episodic training, queries classified by the nearest class mean."""

import keras
from keras import ops

from zoo.losses import prototypical
from zoo.methods.base import EmbeddingMethod


@keras.saving.register_keras_serializable(package="zoo")
class ProtoNet(EmbeddingMethod):
    """Few-shot embedder trained on N-way K-shot episodes with the prototypical loss.

    A batch is one episode in the class-major layout of `zoo.data.samplers.EpisodeSampler`:
    row `c * (shot + queries) + j` is an image of episode class c, its support set when
    `j < shot` and a query otherwise, so the labels are implied by the layout and `y` is not
    read. Training measures squared Euclidean distances between the un-normalised features
    (the paper); the published `embedder` L2-normalises them, as every entry of the zoo.

    Args:
        encoder: keras.Model. Raw images -> (B, F) features (the paper: `zoo.backbones.conv4()`).
        way: int. Classes per episode, N.
        shot: int. Support images per class, K.
        queries: int. Query images per class, Q.

    Reference:
        Snell, Swersky, Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017:
        "Prototypical networks compute a distance from the point to the prototype of each class.
        [...] each prototype is the mean vector of the embedded support points belonging to its class."
    """

    def __init__(self, encoder, way=60, shot=5, queries=5, **kwargs):
        super().__init__(encoder, **kwargs)
        for key, value, least in (("way", way, 2), ("shot", shot, 1), ("queries", queries, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{key} must be an int >= {least}, got {value!r}")
        self.way, self.shot, self.queries = way, shot, queries
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.build()  # no head to build: mark the model complete (BackupAndRestore refuses unbuilt models)

    @property
    def episode_size(self):
        """int: rows of one episode batch, way * (shot + queries)."""
        return self.way * (self.shot + self.queries)

    def call(self, inputs, training=False):
        """(B, H, W, C) raw images -> (B, F) float32 un-normalised features, the space of the loss."""
        return ops.cast(self.encoder(inputs, training=training), "float32")

    def objective(self, y, y_pred):
        """Mean query cross-entropy over the episode's prototypes; updates the `accuracy` metric."""
        # y_pred (B, F): the whole episode, on N replicas too (EmbeddingMethod.compute_loss gathers it).
        rows = y_pred.shape[0]
        if rows is not None and rows != self.episode_size:
            raise ValueError(
                f"an episode batch must hold way * (shot + queries) = {self.way} * ({self.shot} + "
                f"{self.queries}) = {self.episode_size} rows, got {rows}"
            )
        episode = ops.reshape(ops.cast(y_pred, "float32"), (self.way, self.shot + self.queries, -1))  # (N, K+Q, F)
        loss, accuracy = prototypical(episode[:, : self.shot], episode[:, self.shot :])
        self.accuracy_tracker.update_state(accuracy)
        return loss

    def get_config(self):
        return {**super().get_config(), "way": self.way, "shot": self.shot, "queries": self.queries}
