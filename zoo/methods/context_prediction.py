"""Context prediction: from two patches of one image, predict where the second lies relative to the first."""

import keras
from keras import layers, ops

from zoo.backbones import projection_head
from zoo.distributed import on_global_batch
from zoo.methods.base import EmbeddingMethod
from zoo.ops import l2_normalize

# Grid cells in row-major order; the centre (4) is the anchor, the other 8 are the classes 0..7.
_NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)


@keras.saving.register_keras_serializable(package="zoo")
class ContextPrediction(EmbeddingMethod):
    """Doersch et al.'s pretext task on a 3x3 grid of jittered, separated patches; embeds with the grid.

    Each training image is resized to 3 * `cell` pixels a side and cut into a 3x3 grid of cells;
    from each cell a patch of the encoder's input size is cropped at the cell's centre moved by
    up to `jitter` pixels each way, so neighbouring patches are `cell - patch` +- 2 * `jitter`
    pixels apart ("we include a gap between patches [...] and randomly jitter each patch
    location", so that no stroke runs on from one patch into the next). The centre patch is
    paired with each of its 8 neighbours; a head on the two patches' concatenated features
    predicts which of the 8 positions the neighbour holds. The head is used in training only.

    The published embedder reads the image as the encoder was trained to: the same 3x3 grid of
    patches, un-jittered, each encoded, and the 9 feature vectors concatenated in grid order
    (9F, so the layout of the character is kept), L2-normalised as a whole. The other readings,
    the encoder on the whole image (at a 3.9x smaller scale than its training patches) or the
    mean of the 9 features, lose that layout.

    Training batches are `(x_a, x_b)` pairs as from zoo.data.samplers.TwoViewSampler; only x_a
    is used. A single tensor is embedded.

    Args:
        encoder: keras.Model. Raw patches (P, P, C) -> (B, F) features.
        image_shape: tuple. (H, W, C) of the images (the embedder's input).
        cell: int. Grid cell side in pixels of the resized image (>= P + 2 * jitter).
        jitter: int. Largest shift of a patch from its cell's centre, in pixels, each axis.
        hidden: int. Hidden width of the position head.
        head: keras.Model or None. A prebuilt head (2F -> 8 logits; None: built from `hidden`).

    Reference:
        Doersch, Gupta, Efros. Unsupervised Visual Representation Learning by Context Prediction.
        ICCV 2015.
    """

    NESTED = ("encoder", "head")
    IN_BATCH = False  # a mean over images (the patches' jitter is drawn for the global batch in `grid_features`)

    def __init__(self, encoder, image_shape=(28, 28, 1), cell=36, jitter=4, hidden=512, head=None, **kwargs):
        super().__init__(encoder, **kwargs)
        patch, width, channels = self.encoder.input_shape[1:]
        if patch != width:
            raise ValueError(f"the encoder must take square patches, got input shape {self.encoder.input_shape}")
        if jitter < 0 or cell < patch + 2 * jitter:
            raise ValueError(f"need jitter >= 0 and cell >= patch + 2 * jitter = {patch} + 2 * {jitter}, "
                             f"got cell={cell}")
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or image_shape[-1] != channels:
            raise ValueError(f"image_shape must be (H, W, {channels}) to match the encoder, got {image_shape}")
        self.image_shape = image_shape
        self.patch, self.channels = int(patch), int(channels)
        self.cell, self.jitter, self.hidden = int(cell), int(jitter), int(hidden)
        self.head = head if head is not None else projection_head(f"{hidden}-8", name="position_head")
        self.head.build((None, 2 * self.feature_dim))
        self.seed_generator = keras.random.SeedGenerator()
        self.accuracy_tracker = keras.metrics.Mean(name="position_accuracy")

    def _corners(self):
        """Top-left corners of the 9 un-jittered patches in the resized image, row-major: ((top, left), ...)."""
        centre = [i * self.cell + (self.cell - self.patch) // 2 for i in range(3)]
        return [(top, left) for top in centre for left in centre]

    def patches(self, images, training=True):
        """(B, H, W, C) raw images -> (B, 9, P, P, C) grid patches, row-major; jittered when training."""
        side = 3 * self.cell
        big = ops.image.resize(ops.cast(images, "float32"), (side, side))  # (B, S, S, C)
        batch = ops.shape(big)[0]
        corners = ops.convert_to_tensor(self._corners(), "int32")  # (9, 2)
        tops, lefts = corners[:, 0], corners[:, 1]
        if training:
            shift = keras.random.randint((batch, 9, 2), -self.jitter, self.jitter + 1, seed=self.seed_generator)
        else:
            shift = ops.zeros((batch, 9, 2), "int32")
        rows = (tops[None, :] + shift[..., 0])[..., None] + ops.arange(self.patch)  # (B, 9, P)
        cols = (lefts[None, :] + shift[..., 1])[..., None] + ops.arange(self.patch)  # (B, 9, P)
        index = ops.reshape(rows[..., :, None] * side + cols[..., None, :], (batch, -1, 1))  # (B, 9 P P, 1)
        flat = ops.reshape(big, (batch, side * side, self.channels))
        index = ops.repeat(index, self.channels, axis=-1)  # (B, 9 P P, C)
        picked = ops.take_along_axis(flat, index, axis=1)
        return ops.reshape(picked, (batch, 9, self.patch, self.patch, self.channels))

    def grid_features(self, images, training=False):
        """(B, H, W, C) raw images -> (B, 9, F) features of the grid patches (jittered when training)."""
        # (B, 9, P, P, C); the jitter of the global batch on N replicas (zoo.distributed.on_global_batch)
        patches = on_global_batch(lambda x: self.patches(x, training=training), [images])
        batch = ops.shape(patches)[0]
        features = self.encoder(ops.reshape(patches, (-1, self.patch, self.patch, self.channels)), training=training)
        return ops.reshape(ops.cast(features, "float32"), (batch, 9, self.feature_dim))

    def build_embedder(self):
        """keras.Model: images (H, W, C) -> (B, 9F) L2-normalised concatenated grid features; shares the encoder."""
        images = keras.Input(self.image_shape, name="images")
        side = 3 * self.cell
        big = layers.Resizing(side, side, interpolation="bilinear")(images)  # as ops.image.resize in `patches`
        crops = [layers.Cropping2D(((top, side - top - self.patch), (left, side - left - self.patch)))(big)
                 for top, left in self._corners()]
        # training=False fixed: keras' Resizing defaults to training=True, which would otherwise reach batch
        # norm on a plain embedder(x) call (keras 3.15).
        features = layers.Concatenate()([self.encoder(crop, training=False) for crop in crops])  # (B, 9F)
        embeddings = layers.UnitNormalization(axis=-1, name="embeddings")(features)
        return keras.Model(images, embeddings, name=f"{self.name}_embedder")

    def embed(self, inputs, training=False):
        """(B, H, W, C) raw images -> (B, 9F) L2-normalised float32 embeddings, as `embedder`."""
        features = self.grid_features(inputs, training=training)
        return l2_normalize(ops.reshape(features, (ops.shape(features)[0], 9 * self.feature_dim)))

    def call(self, inputs, training=False):
        if not isinstance(inputs, (tuple, list)):
            return self.embed(inputs, training=training)
        features = self.grid_features(inputs[0], training=training)  # (B, 9, F)
        neighbours = ops.take(features, list(_NEIGHBOURS), axis=1)  # (B, 8, F)
        anchor = ops.broadcast_to(features[:, 4:5], ops.shape(neighbours))  # (B, 8, F)
        pairs = ops.reshape(ops.concatenate([anchor, neighbours], axis=-1), (-1, 2 * self.feature_dim))
        logits = ops.cast(self.head(pairs, training=training), "float32")  # (8B, 8)
        return logits

    def objective(self, y, y_pred):
        logits = y_pred  # (8B, 8): row 8b + k is image b's neighbour k
        positions = ops.arange(ops.shape(logits)[0]) % 8  # (8B,)
        loss = ops.mean(keras.losses.sparse_categorical_crossentropy(positions, logits, from_logits=True))
        correct = ops.cast(ops.equal(ops.argmax(logits, axis=-1), positions), "float32")
        self.accuracy_tracker.update_state(ops.mean(correct))
        return loss

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape, "cell": self.cell, "jitter": self.jitter,
                "hidden": self.hidden}
