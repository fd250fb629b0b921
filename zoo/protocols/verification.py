"""Verification: same identity or not, on pairs of held-out classes (faces)."""

from __future__ import annotations

import numpy as np

from zoo import metrics as measures

from .base import Protocol, embed_all, register

QUICK_PAIRS = 1000  # same-identity pairs of a quick run (as many different ones are drawn)


def verification(embed_fn, data, *, pairs=None, seed=0) -> dict:
    """Face (or pair) verification on held-out classes: every same-label pair (or `pairs` of them) and as many
    different-label pairs; 10-fold accuracy with the threshold chosen on the other folds, ROC AUC, EER,
    TAR at FAR 1e-3, and leave-one-out retrieval (recall@1/5, MAP@R) over the same images.

    Reference: Huang et al. 2007, "Labeled Faces in the Wild" (the 10-fold unrestricted protocol).
    """
    x = embed_all(embed_fn, data["images"])  # (N, D)
    labels = np.asarray(data["labels"])
    a, b, same = measures.verification_pairs(labels, n_pairs=pairs, seed=seed)
    v = measures.verification(x[a], x[b], same, folds=10)
    r = measures.retrieval(x, labels, ks=(1, 5))
    return {"verification_accuracy": v["accuracy"], "verification_accuracy_std": v["accuracy_std"], "auc": v["auc"],
            "eer": v["eer"], "tar@far=1e-3": v["tar_at_far"]["1e-03"], "threshold": v["threshold"],
            "recall@1": r["recall@1"], "recall@5": r["recall@5"], "map_at_r": r["map_at_r"], "pairs": int(len(same)),
            "classes": int(len(np.unique(labels))), "images": int(len(labels))}


@register
class Verification(Protocol):
    """`verification` on the card's held-out identities; on a user folder, on its held-out classes."""

    name = "verification"
    gate = "verification_accuracy"
    figure = "roc"
    quick = {"pairs": QUICK_PAIRS}

    def run(self, embed_fn, data, *, embed_text=None, **options) -> dict:
        return verification(embed_fn, data, **options)

    def on_folder(self, embed_fn, held_out, *, seed=0, embed_text=None) -> dict:
        return verification(embed_fn, held_out, seed=seed)

    def figure_data(self, x, data, options) -> dict:
        a, b, same = measures.verification_pairs(data["labels"], options.get("pairs"), seed=0)
        return {"roc": measures.verification(x[a], x[b], same, folds=10)["roc"]}
