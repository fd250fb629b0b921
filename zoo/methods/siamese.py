"""Siamese network: one shared encoder on both images of a pair, trained with the contrastive loss."""

import keras
from keras import ops

from zoo import losses
from zoo.distributed import on_global_batch
from zoo.methods.base import EmbeddingMethod


def optional_augment(augment, encoder):
    """`augment` built for the encoder's input (so a .keras file restores it), or None."""
    if augment is None:
        return None
    if not isinstance(augment, keras.Model):
        raise ValueError(f"augment must be None or a keras.Model (e.g. zoo.data.augment.faces(48)), got {augment!r}")
    augment.build((None, *encoder.input_shape[1:]))
    return augment


@keras.saving.register_keras_serializable(package="zoo")
class Siamese(EmbeddingMethod):
    """Twin encoders with tied weights; pairs of one class are pulled together, others pushed past a margin.

    Fit on `x = (images_a, images_b)` (each (B, H, W, C), raw pixels) and `y = same` (B,) 1/0, as
    `zoo.data.samplers.PairSampler` yields them. Both halves go through the encoder as one
    batch of 2B (one set of batch-norm statistics). `call` returns the Euclidean distance of
    each pair's L2-normalised embeddings (B,), so `predict` on pairs scores them.

    Args:
        encoder: keras.Model. Raw images -> (B, F) features, shared by both branches.
        margin: float. Distance beyond which a different pair costs nothing (embeddings are
            L2-normalised, so distances lie in [0, 2]).
        augment: keras.Model or None. Random per-image augmentation applied in training only
            (e.g. zoo.data.augment.characters(28)); not part of `embedder`.

    Reference:
        Hadsell, Chopra, LeCun 2006, Dimensionality Reduction by Learning an Invariant Mapping;
        Koch, Zemel, Salakhutdinov 2015, Siamese Neural Networks for One-shot Image Recognition:
        "twin networks [...] joined by an energy function", the weights tied across the twins.
    """

    NESTED = ("encoder", "augment")
    IN_BATCH = False  # a mean over independent pairs: each replica's share of it

    def __init__(self, encoder, margin=1.0, augment=None, **kwargs):
        super().__init__(encoder, **kwargs)
        if not margin > 0:
            raise ValueError(f"margin must be positive, got {margin!r}")
        self.margin = float(margin)
        self.augment = optional_augment(augment, self.encoder)

    def call(self, inputs, training=False):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError("Siamese expects a pair (images_a, images_b); use `embed` or `embedder` "
                             f"for single images, got {type(inputs).__name__}")
        a, b = inputs
        n = ops.shape(a)[0]
        if self.augment is not None:  # (2B, H, W, C); on N replicas with the draws of the global batch
            images = on_global_batch(lambda x: self.augment(x, training=training), [a, b])
        else:
            images = ops.concatenate([a, b], axis=0)  # (2B, H, W, C)
        z = self.embed(images, training=training)  # (2B, F)
        difference = z[:n] - z[n:]  # (B, F)
        squared = ops.sum(ops.square(difference), axis=1)  # (B,)
        # sqrt' is infinite at 0: identical embeddings (e.g. a pair of one image) get distance 0, gradient 0.
        zero = ops.less_equal(squared, 0.0)
        return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, squared)))

    def objective(self, y, y_pred):
        if y is None:
            raise ValueError("Siamese needs y = same (B,) of 1/0 for each pair")
        return losses.contrastive(y, ops.cast(y_pred, "float32"), self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
