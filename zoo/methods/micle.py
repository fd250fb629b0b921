"""MICLe: SimCLR whose positive pair may be two different images of the same group."""

import keras

from zoo.methods.simclr import SimCLR


@keras.saving.register_keras_serializable(package="zoo")
class MICLe(SimCLR):
    """Multi-Instance Contrastive Learning: NT-Xent over pairs drawn from one group, each image augmented.

    "When multiple images of a medical condition are available [...] we propose to use images
    of the underlying pathology from multiple viewpoints [as positive pairs]": the two views of a
    pair are two different images of one group (here: one Omniglot character drawn by two
    different people), each distorted by the augmentation, and a group with a single image
    falls back to SimCLR's two views of one image. Only group membership is used, never a
    class name. The pairing comes from the batches (`TwoViewSampler(..., groups=ids)`, which
    puts B distinct groups in a batch, so no negative shares its anchor's group); the
    objective is SimCLR's.

    Args:
        encoder: keras.Model. Raw images -> (B, F) features.
        augment: keras.Model. Random view pipeline, float32 0..255 -> same shape (zoo.data.augment).
        temperature: float. NT-Xent temperature tau.
        projection: str. Projector widths, e.g. "256-128".
        projector: keras.Model or None. A prebuilt projector (None: built from `projection`).

    Reference:
        Azizi et al. Big Self-Supervised Models Advance Medical Image Classification. ICCV 2021.
    """
