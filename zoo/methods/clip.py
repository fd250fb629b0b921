"""CLIP: an image tower and a text tower trained to match images with their captions."""

import math

import keras
from keras import ops

from zoo import losses
from zoo.backbones import embedder_from
from zoo.distributed import on_global_batch
from zoo.methods.base import EmbeddingMethod
from zoo.methods.siamese import optional_augment
from zoo.ops import l2_normalize


@keras.saving.register_keras_serializable(package="zoo")
class CLIP(EmbeddingMethod):
    """Contrastive language-image pre-training with in-batch negatives and a learnable temperature.

    Fit on `x = (images, token_ids)` with `images` (B, H, W, C) raw pixels and `token_ids` (B, L)
    int32 from `zoo.runtime.Tokenizer`; row i of each is a matching pair. An optional `y` (B, 2) int of
    (image id, caption id) per row makes rows that share an image or a caption matches too
    (`losses.clip(positives=)`): a caption that names a category, or an image with several captions. `embedder` is the image
    tower, `text_embedder` the text tower; both end in L2 normalisation.

    Args:
        encoder: keras.Model. Image tower: `images` -> (B, D), its last layer the linear projection.
        text_encoder: keras.Model. Text tower: `token_ids` -> (B, D).
        logit_scale_init: float. Initial multiplier of the cosine similarities (the paper: 1/0.07).
        max_logit_scale: float. Clamp of the multiplier (the paper: 100).
        augment: keras.Model or None. Random image augmentation in training only (the paper's: a
            random square crop, `zoo.data.augment.square_crops`); not part of `embedder`.

    Reference:
        Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision:
        "The learnable temperature parameter t was initialized to the equivalent of 0.07 [...] and
        clipped to prevent scaling the logits by more than 100."
    """

    NESTED = ("encoder", "text_encoder", "augment")

    def __init__(self, encoder, text_encoder, logit_scale_init=1 / 0.07, max_logit_scale=100.0, augment=None,
                 **kwargs):
        super().__init__(encoder, **kwargs)
        if int(text_encoder.output_shape[-1]) != self.feature_dim:
            raise ValueError(f"image and text towers must end in the same width, got {self.feature_dim} "
                             f"and {text_encoder.output_shape[-1]}")
        self.text_encoder = text_encoder
        self.logit_scale_init = float(logit_scale_init)
        self.max_logit_scale = float(max_logit_scale)
        self.augment = optional_augment(augment, self.encoder)
        self.log_logit_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(math.log(self.logit_scale_init)),
            name="log_logit_scale")
        self.logit_scale_tracker = keras.metrics.Mean(name="logit_scale")

    @property
    def text_embedder(self):
        """keras.Model: `token_ids` -> (B, D) L2-normalised text embeddings; built once, as `embedder`."""
        return self.published("text_embedder",
                              lambda: embedder_from(self.text_encoder, name=f"{self.name}_text_embedder"))

    def logit_scale(self):
        """The multiplier exp(t), t clamped at ln(max_logit_scale) (no gradient beyond the clamp)."""
        return ops.exp(ops.minimum(ops.cast(self.log_logit_scale, "float32"), math.log(self.max_logit_scale)))

    def call(self, inputs, training=False):
        images, token_ids = inputs
        if self.augment is not None:
            # Random draws of the global batch on N replicas (zoo.distributed.on_global_batch).
            images = on_global_batch(lambda x: self.augment(x, training=training), [images])
        text = l2_normalize(ops.cast(self.text_encoder(token_ids, training=training), "float32"))
        return {"image": self.embed(images, training=training), "text": text}  # (B, D) each

    def objective(self, y, y_pred):
        scale = self.logit_scale()
        self.logit_scale_tracker.update_state(scale)
        # In-batch negatives: every caption of the global batch (B, D) on N replicas (compute_loss gathers them).
        positives = None
        if y is not None:  # (B, 2) ids: rows with the same image or the same caption are matches (UniCL)
            ids = ops.cast(y, "int32")
            positives = ops.any(ids[:, None, :] == ids[None, :, :], axis=-1)  # (B, B)
        return losses.clip(y_pred["image"], y_pred["text"], scale, positives)

    def get_config(self):
        return {**super().get_config(), "logit_scale_init": self.logit_scale_init,
                "max_logit_scale": self.max_logit_scale}
