"""Triplet losses with in-batch mining: batch all, batch hard (Hermans et al. 2017), semi-hard (Schroff et al. 2015).

No loss here builds a (B, B, B) tensor: those that compare every (a, p, n) loop over "positive slots" instead,
step j taking every anchor's j-th positive at once: O(B^2) memory and O(B^2 K) time for K images per class
(P x K batches). On JAX, call them inside `jax.jit` (as `fit()` does): run eagerly, the loop is re-traced and
re-compiled at every call.
"""

from keras import ops

from zoo.losses._common import _labels_embeddings, _safe_mean
from zoo.losses._registry import register_loss
from zoo.ops import label_masks, pairwise_distances

__all__ = ["triplet_active_fraction", "triplet_batch_all", "triplet_batch_hard", "triplet_semi_hard"]


def _positive_ranks(positive):
    """Number each anchor's positives: rank[a, p] = k for a's k-th positive p (from 1), else 0.

    Args:
        positive: bool tensor (B, B). positive-pair mask.

    Returns:
        (rank int32 (B, B), int32 scalar: the largest number of positives of an anchor).
    """
    positive = ops.cast(positive, "int32")
    return ops.cumsum(positive, axis=1) * positive, ops.max(ops.sum(positive, axis=1))


def _active_term_sum(distances, margin, pair_counts, negative_counts):
    """Sum of active triplet terms margin + d(a, p) - d(a, n), from how often each distance enters.

    The counts are constants (found without gradient), so the sum is linear in the distances:
    its gradient is the hinge's wherever the set of active triplets does not change.

    Args:
        distances: tensor (B, B). d(a, x), differentiable.
        margin: float. margin of the hinge.
        pair_counts: tensor (B, B). number of active terms in which d(a, p) is the positive.
        negative_counts: tensor (B, B). number of active terms in which d(a, n) is the negative.
    """
    # Per anchor first: its two sums are of similar size, so the difference loses less precision.
    return ops.sum(
        ops.sum(pair_counts * (margin + distances), axis=1)
        - ops.sum(negative_counts * distances, axis=1)
    )


def _batch_all_counts(labels, embeddings, margin, squared):
    """Sum of the positive triplet terms, their number, and the number of valid triplets.

    Triplet (a, p, n) is active iff d(a, n) < margin + d(a, p). A loop over positive slots (step
    j handles every anchor's j-th positive at once, with a (B, B) comparison against all
    negatives) counts, without gradient, how often each d(a, p) and each d(a, n) enters an
    active term; the sum of the active terms margin + d(a, p) - d(a, n) is then linear in the
    distances with those counts as coefficients, which gives its value and gradient.
    """
    labels, embeddings = _labels_embeddings(labels, embeddings)
    distances = pairwise_distances(embeddings, squared=squared)  # (B, B)
    positive, negative = label_masks(labels)
    rank, n_slots = _positive_ranks(positive)
    fixed = ops.stop_gradient(distances)

    def count(j, pair_counts, negative_counts):
        slot = rank == j + 1  # (B, B): at most one positive per anchor
        threshold = margin + ops.sum(ops.where(slot, fixed, 0.0), axis=1, keepdims=True)  # (B, 1)
        active = ops.logical_and(negative, fixed < threshold)
        active = ops.cast(ops.logical_and(active, ops.any(slot, axis=1, keepdims=True)), "float32")
        pair_counts = ops.where(slot, ops.sum(active, axis=1, keepdims=True), pair_counts)
        return j + 1, pair_counts, negative_counts + active

    _, pair_counts, negative_counts = ops.while_loop(
        lambda j, *_: j < n_slots, count, (0, ops.zeros_like(fixed), ops.zeros_like(fixed))
    )
    term_sum = _active_term_sum(distances, margin, pair_counts, negative_counts)
    n_valid = ops.sum(
        ops.sum(ops.cast(positive, "float32"), axis=1)
        * ops.sum(ops.cast(negative, "float32"), axis=1)
    )
    return term_sum, ops.sum(pair_counts), n_valid


def triplet_active_fraction(labels, embeddings, margin=0.2, squared=False):
    """Fraction of the valid triplets (a, p, n) whose hinge term is positive (0 if none).

    Exact, computed like `triplet_batch_all` in O(B^2 K); a training metric.

    Args:
        labels: int tensor (B,). class ids.
        embeddings: tensor (B, D). embeddings.
        margin: float. margin of the hinge.
        squared: bool. use squared Euclidean distances.

    Reference:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person Re-Identification.
        arXiv:1703.07737, 2017.
    """
    _, n_active, n_valid = _batch_all_counts(labels, embeddings, margin, squared)
    return _safe_mean(n_active, n_valid)


@register_loss("batch_all", inputs=("labels", "embeddings"), term="triplet_loss",
               metrics={"active_fraction": triplet_active_fraction})
def triplet_batch_all(labels, embeddings, margin=0.2, squared=False):
    """Batch-all triplet loss: every valid triplet, averaged over the active ones.

    "Batch All: [...] simply select all the possible PK(PK - K)(K - 1) combinations of
    triplets"; the mean is over the triplets with a non-zero term (the paper's BA!=0), 0 if
    there is none.

    Args:
        labels: int tensor (B,). class ids.
        embeddings: tensor (B, D). embeddings.
        margin: float. margin of the hinge.
        squared: bool. use squared Euclidean distances.

    Reference:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person Re-Identification.
        arXiv:1703.07737, 2017.
    """
    term_sum, n_active, _ = _batch_all_counts(labels, embeddings, margin, squared)
    return _safe_mean(term_sum, n_active)


@register_loss("batch_hard", inputs=("labels", "embeddings"), term="triplet_loss",
               metrics={"active_fraction": triplet_active_fraction})
def triplet_batch_hard(labels, embeddings, margin=0.2, squared=False):
    """Batch-hard triplet loss: per anchor, its farthest positive against its nearest negative.

    "For each sample a in the batch, we can select the hardest positive and the hardest
    negative samples within the batch when forming the triplets for computing the loss."
    Mean over the anchors that have a positive and a negative in the batch (0 if none).

    Args:
        labels: int tensor (B,). class ids.
        embeddings: tensor (B, D). embeddings.
        margin: float. margin of the hinge.
        squared: bool. use squared Euclidean distances.

    Reference:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person Re-Identification.
        arXiv:1703.07737, 2017.
    """
    labels, embeddings = _labels_embeddings(labels, embeddings)
    distances = pairwise_distances(embeddings, squared=squared)  # (B, B)
    positive, negative = label_masks(labels)
    # Distances are >= 0, so 0 and the batch maximum are neutral fill values.
    hardest_positive = ops.max(ops.where(positive, distances, 0.0), axis=1)  # (B,)
    fill = ops.stop_gradient(ops.max(distances))
    hardest_negative = ops.min(ops.where(negative, distances, fill), axis=1)  # (B,)
    valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    hinge = ops.relu(margin + hardest_positive - hardest_negative)
    return _safe_mean(
        ops.sum(ops.where(valid, hinge, 0.0)), ops.sum(ops.cast(valid, "float32"))
    )


@register_loss("semi_hard", inputs=("labels", "embeddings"), term="triplet_loss",
               metrics={"active_fraction": triplet_active_fraction})
def triplet_semi_hard(labels, embeddings, margin=0.2, squared=False):
    """Semi-hard triplet loss: every positive pair with its nearest negative farther than it.

    "We use all anchor-positive pairs in a mini-batch while still selecting the hard
    negatives", semi-hard ones, with d(a, p) < d(a, n): "These negatives are farther away from
    the anchor than the positive exemplar, but still hard because the squared distance is
    close to the anchor-positive distance." Where no negative is farther, the farthest
    negative is used. Mean over the positive pairs whose anchor has a negative (0 if none).

    The negatives are chosen without gradient by a loop over positive slots (step j handles
    every anchor's j-th positive at once, with a (B, B) comparison against all negatives),
    which counts how often each distance enters an active term; the loss is linear in the
    distances with those counts, so it has the definition's value and gradient. Negatives
    tied for a choice share its count.

    Args:
        labels: int tensor (B,). class ids.
        embeddings: tensor (B, D). embeddings.
        margin: float. margin of the hinge.
        squared: bool. use squared Euclidean distances (the paper's choice).

    Reference:
        Schroff, Kalenichenko, Philbin. FaceNet: A Unified Embedding for Face Recognition and
        Clustering. CVPR 2015.
    """
    labels, embeddings = _labels_embeddings(labels, embeddings)
    distances = pairwise_distances(embeddings, squared=squared)  # (B, B)
    positive, negative = label_masks(labels)
    rank, n_slots = _positive_ranks(positive)
    fixed = ops.stop_gradient(distances)
    fill = ops.max(fixed) + 1.0  # above every distance
    # One min picks the nearest farther negative, else the farthest negative: farther negatives
    # keep key d < fill, the others get 2 fill - d in (fill, 2 fill], non-negatives 3 fill.
    fallback_key = ops.where(negative, 2.0 * fill - fixed, 3.0 * fill)  # (B, B)
    negative_distances = ops.where(negative, fixed, -1.0)  # never farther than a positive
    has_negative = ops.any(negative, axis=1, keepdims=True)  # (B, 1)

    def choose(j, pair_counts, negative_counts):
        slot = rank == j + 1  # (B, B): at most one positive per anchor
        d_ap = ops.sum(ops.where(slot, fixed, 0.0), axis=1, keepdims=True)  # (B, 1)
        key = ops.where(negative_distances > d_ap, fixed, fallback_key)
        smallest = ops.min(key, axis=1, keepdims=True)  # (B, 1)
        d_an = ops.where(smallest < fill, smallest, 2.0 * fill - smallest)
        active = ops.logical_and(margin + d_ap - d_an > 0.0, has_negative)
        active = ops.cast(ops.logical_and(active, ops.any(slot, axis=1, keepdims=True)), "float32")
        # Negatives tied for the choice share it: their counts sum to 1.
        chosen = ops.cast(key == smallest, "float32")  # (B, B)
        share = active / ops.sum(chosen, axis=1, keepdims=True)  # (B, 1)
        return j + 1, ops.where(slot, active, pair_counts), negative_counts + share * chosen

    _, pair_counts, negative_counts = ops.while_loop(
        lambda j, *_: j < n_slots, choose, (0, ops.zeros_like(fixed), ops.zeros_like(fixed))
    )
    n_pairs = ops.sum(ops.cast(ops.logical_and(positive, has_negative), "float32"))
    return _safe_mean(_active_term_sum(distances, margin, pair_counts, negative_counts), n_pairs)
