"""The numpy arithmetic on embeddings that every caller shares: normalise, distances, neighbours, prototypes,
few-shot classification, verification, zero-shot scores and the prompt ensemble.

Numpy only. The command line, the server, the int8 gate, the protocols and `OnnxEmbedder` / `OnnxCLIP` all
call these, so a decision (same identity or not, the nearest prototype, a class's text embedding) is made
one way everywhere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["l2_normalize", "paired_distances", "euclidean_distances", "nearest_neighbours", "prototype_distances",
           "softmax", "nearest_prototypes", "few_shot_scores", "few_shot_classify", "verify_embeddings",
           "zero_shot_classify", "prompt_ensemble"]

# Entries of the (rows, N) distance block per chunk in `nearest_neighbours`: bounds memory for large galleries.
SEARCH_CHUNK_ELEMENTS = 4_000_000
# Floor of a row's norm: an all-zero row stays zero instead of becoming NaN.
_EPSILON = 1e-12


def l2_normalize(x) -> np.ndarray:
    """Rows (the last axis) divided by their L2 norm; an all-zero row stays zero. Keeps the dtype.

    Args:
        x: array (..., D). embeddings.
    """
    x = np.asarray(x)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)  # (..., 1)
    return x / np.maximum(norm, _EPSILON)


def paired_distances(a, b) -> np.ndarray:
    """Euclidean distance between row i of `a` and row i of `b`, in their own dtype; (N,).

    Args:
        a: array (N, D). embeddings.
        b: array (N, D). embeddings, paired with `a` row by row.
    """
    return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1)


def euclidean_distances(queries, gallery) -> np.ndarray:
    """Euclidean distance from every query row to every gallery row, float32 (Q, N).

    Holds a (Q, N, D) difference: for small sets (a page's support examples); `nearest_neighbours` is the
    chunked search over large galleries.

    Args:
        queries: array (Q, D). embeddings.
        gallery: array (N, D). embeddings.
    """
    q, g = np.asarray(queries, np.float32), np.asarray(gallery, np.float32)
    return np.linalg.norm(q[:, None] - g[None], axis=-1)  # (Q, N)


def nearest_neighbours(queries, gallery, k=5):
    """The k gallery rows nearest to each query row (Euclidean on L2-normalised embeddings), exactly.

    Returns (indices: int64 (Q, k), distances: float32 (Q, k)), nearest first; ties keep gallery order.

    Args:
        queries: (Q, D) float embeddings.
        gallery: (N, D) float embeddings.
        k: int. neighbours per query, 1 <= k <= N.
    """
    q, g = l2_normalize(np.asarray(queries, np.float32)), l2_normalize(np.asarray(gallery, np.float32))
    if not 1 <= int(k) <= len(g):
        raise ValueError(f"expected 1 <= k <= gallery size {len(g)}, got k={k}")
    k = int(k)
    rows = max(1, SEARCH_CHUNK_ELEMENTS // len(g))
    indices, distances = [], []
    for start in range(0, len(q), rows):
        # |q - g|^2 = 2 - 2 q.g for unit vectors; clipped against rounding below zero.
        d2 = np.maximum(2.0 - 2.0 * q[start : start + rows] @ g.T, 0.0)  # (rows, N)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        part_d2 = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(part_d2, axis=1, kind="stable")
        indices.append(np.take_along_axis(part, order, axis=1))
        distances.append(np.sqrt(np.take_along_axis(part_d2, order, axis=1)))
    return np.concatenate(indices).astype(np.int64), np.concatenate(distances).astype(np.float32)


def prototype_distances(support, support_labels, queries):
    """Squared Euclidean distances from query embeddings to class prototypes (mean support embeddings);
    `softmax(-distances)` gives a prototypical network's class probabilities.

    Returns (classes: the sorted distinct labels (C,), distances: float64 (Q, C)).

    Reference: Snell et al. 2017, "Prototypical Networks for Few-shot Learning".

    Args:
        support: (S, D) support embeddings.
        support_labels: (S,) their labels, any dtype.
        queries: (Q, D) query embeddings.
    """
    labels = np.asarray(support_labels)
    support = np.asarray(support, np.float64)
    if labels.ndim != 1 or len(labels) != len(support):
        raise ValueError(
            f"expected one label per support image ({len(support)}), got labels of shape {labels.shape}"
        )
    classes, inverse = np.unique(labels, return_inverse=True)
    prototypes = np.zeros((len(classes), support.shape[1]), np.float64)  # (C, D)
    np.add.at(prototypes, inverse, support)
    prototypes /= np.bincount(inverse, minlength=len(classes))[:, None]
    query = np.asarray(queries, np.float64)  # (Q, D)
    d2 = np.sum(query**2, 1)[:, None] - 2.0 * query @ prototypes.T + np.sum(prototypes**2, 1)[None]  # (Q, C)
    return classes, np.maximum(d2, 0.0)


def softmax(logits) -> np.ndarray:
    """Row-wise softmax of (B, C) logits (shifted by each row's maximum, so large logits do not overflow).

    Args:
        logits: array (B, C). scores, float64 inside.
    """
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def nearest_prototypes(support, support_labels, queries):
    """Few-shot classification of query embeddings by the nearest class prototype (squared Euclidean).

    Returns (classes: the sorted distinct labels (C,), predictions: int (Q,) indices into classes,
    probabilities: float64 (Q, C) softmax over minus squared distances, distances: float64 (Q, C) Euclidean
    distance of each query to each prototype).

    Reference: Snell et al. 2017, "Prototypical Networks for Few-shot Learning".

    Args:
        support: (S, D) support embeddings.
        support_labels: (S,) their labels, any dtype.
        queries: (Q, D) query embeddings.
    """
    classes, d2 = prototype_distances(support, support_labels, queries)  # (C,), (Q, C)
    return classes, np.argmin(d2, axis=1), softmax(-d2), np.sqrt(d2)


def few_shot_scores(support, support_labels, queries):
    """Nearest-prototype classification of query embeddings, with what a page shows beside the answer.

    Returns (classes (C,), probabilities (Q, C): softmax over minus squared distances to the prototypes, a
    prototypical network's class probabilities, distances (Q, S) from each query to each support example).

    Args:
        support: (S, D) float. support embeddings.
        support_labels: sequence of S labels.
        queries: (Q, D) float. query embeddings.
    """
    classes, d2 = prototype_distances(support, support_labels, queries)  # (C,), (Q, C)
    return classes, softmax(-d2), euclidean_distances(queries, support)


def few_shot_classify(embedder, support_images, support_labels, query_images) -> np.ndarray:
    """Label queries by their nearest class prototype (mean support embedding, squared Euclidean).

    Reference: Snell et al. 2017, "Prototypical Networks for Few-shot Learning".

    Args:
        embedder: OnnxEmbedder. any object with `embed(images) -> (B, D)`.
        support_images: array. S labelled images.
        support_labels: array. (S,) labels of the support images, any dtype.
        query_images: array. Q images to classify.
    Returns:
        (Q,) array of labels taken from `support_labels`.
    """
    support = embedder.embed(support_images)  # (S, D)
    classes, predictions, _, _ = nearest_prototypes(support, support_labels, embedder.embed(query_images))
    return classes[predictions]


def verify_embeddings(a, b, threshold):
    """Decide whether embedding pairs (a[i], b[i]) show the same identity: the Euclidean distance of their
    L2-normalised rows is at most `threshold` (a card's `threshold`).

    Returns (same: bool (B,), distances: float32 (B,)).

    Args:
        a: array (B, D). embeddings.
        b: array (B, D). embeddings, paired with `a` row by row.
        threshold: float. the largest distance of a same pair.
    """
    a, b = l2_normalize(np.asarray(a, np.float32)), l2_normalize(np.asarray(b, np.float32))
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (B, D) embeddings of the same shape, got {a.shape} and {b.shape}")
    distances = paired_distances(a, b).astype(np.float32)  # (B,)
    return distances <= threshold, distances


def zero_shot_classify(image_embeddings, class_embeddings, logit_scale):
    """Zero-shot classification: softmax over the scaled cosine of each image with each class text embedding.

    Returns (predictions: int64 (B,) indices into the classes, probabilities: float32 (B, C)).

    Reference: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision".

    Args:
        image_embeddings: array (B, D). image embeddings (normalised here).
        class_embeddings: array (C, D). L2-normalised class text embeddings (`prompt_ensemble`).
        logit_scale: float. the temperature the entry was trained with.
    """
    logits = logit_scale * l2_normalize(image_embeddings) @ np.asarray(class_embeddings).T  # (B, C)
    probabilities = softmax(logits)
    return np.argmax(probabilities, axis=1), probabilities.astype(np.float32)


def prompt_ensemble(embed_text, classes, templates) -> np.ndarray:
    """(C, D) float32 class embeddings: each class's prompts (every template filled with each of its names)
    embedded, L2-normalised, averaged and re-normalised.

    A class is a name, or a list of names that describe it (synonyms, its sub-classes): its ensemble is then
    every template filled with every one of them.

    Reference: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"
    (prompt ensembling).

    Args:
        embed_text: callable. list[str] -> (N, D) text embeddings.
        classes: list of (str or list[str]). the classes.
        templates: sequence[str]. prompts with one `{}` where the class name goes.
    """
    templates = list(templates)
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"expected templates each containing '{{}}', got {templates!r}")
    names_of = [[c] if isinstance(c, str) else list(c) for c in classes]
    if not names_of:
        raise ValueError("expected at least one class name")
    if any(not names or not all(isinstance(n, str) for n in names) for names in names_of):
        raise ValueError(f"expected each class as a name or a non-empty list of names, got {classes!r}")
    prompts = [t.format(name) for names in names_of for name in names for t in templates]
    e = l2_normalize(np.asarray(embed_text(prompts), np.float32))  # (sum of prompts per class, D)
    ends = np.cumsum([len(names) * len(templates) for names in names_of])
    means = np.stack([part.mean(axis=0) for part in np.split(e, ends[:-1])])  # (C, D)
    return l2_normalize(means)
