"""Copy retrieval: unlabelled held-out images found again from lightly altered copies of themselves."""

from __future__ import annotations

import numpy as np

from zoo import metrics as measures

from .base import Protocol, embed_all, register


def copy_retrieval(embed_fn, held_out) -> dict:
    """Can each held-out image be found again from a lightly altered copy (shifted 2 pixels, contrast 0.9,
    brightness +12)? Leave-one-out recall@1/5 over the images and their copies (`measures.retrieval`, each
    image and its copy one class)."""
    images = np.asarray(held_out["images"], np.float32)
    copies = np.clip(np.roll(images, (2, 2), axis=(1, 2)) * 0.9 + 12.0, 0.0, 255.0)
    x = embed_all(embed_fn, np.concatenate([images, copies]))
    labels = np.concatenate([np.arange(len(images))] * 2)
    r = measures.retrieval(x, labels, ks=(1, 5))
    return {"copy_recall@1": r["recall@1"], "copy_recall@5": r["recall@5"], "images": int(len(images))}


@register
class CopyRetrieval(Protocol):
    """`copy_retrieval` on a held-out split (or a user folder) of images without labels."""

    name = "copy_retrieval"
    gate = "copy_recall@1"

    def run(self, embed_fn, data, *, embed_text=None, **options) -> dict:
        return copy_retrieval(embed_fn, data)

    def on_folder(self, embed_fn, held_out, *, seed=0, embed_text=None) -> dict:
        return copy_retrieval(embed_fn, held_out)
