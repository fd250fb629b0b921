"""Multi-Similarity loss with its pair mining (Wang et al. 2019)."""

from keras import ops

from zoo.losses._common import _labels_embeddings
from zoo.losses._registry import register_loss
from zoo.ops import l2_normalize, label_masks

__all__ = ["multi_similarity"]

INF = float("inf")


def _log_one_plus_sum_exp(x, keep):
    """log(1 + sum of exp(x) over the kept entries of each row), stably: (B, B) -> (B,); 0 where none is kept."""
    x = ops.where(keep, x, -INF)
    top = ops.stop_gradient(ops.maximum(ops.max(x, axis=1), 0.0))  # (B,): exp(x - top) <= 1, and exp(-top) too
    return top + ops.log(ops.exp(-top) + ops.sum(ops.exp(x - top[:, None]), axis=1))


@register_loss("multi_similarity", inputs=("labels", "embeddings"))
def multi_similarity(labels, embeddings, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
    """Multi-Similarity loss: mined pairs weighted by their own and their neighbours' cosine similarities.

    S is the matrix of cosine similarities of the L2-normalised embeddings. Per anchor i, the
    pair mining keeps the positives p (p != i) with `S_ip < max_n S_in + epsilon` and the
    negatives n with `S_in > min_p S_ip - epsilon`; then
    "L_MS = 1/m sum_i { 1/alpha log[1 + sum_{k in P_i} exp(-alpha (S_ik - lambda))]
    + 1/beta log[1 + sum_{k in N_i} exp(beta (S_ik - lambda))] }" over the kept sets P_i, N_i
    (lambda is `base`). An empty set gives 0, and the mean is over every anchor of the batch.
    The mining is a selection, without gradient.

    Args:
        labels: int tensor (B,). class ids.
        embeddings: tensor (B, D). embeddings (normalised here).
        alpha: float. scale of the positive pairs' term.
        beta: float. scale of the negative pairs' term.
        base: float. lambda, the similarity that separates the two terms' pull and push.
        epsilon: float. margin of the pair mining.

    Reference:
        Wang, Han, Huang, Dong, Scott. Multi-Similarity Loss with General Pair Weighting for
        Deep Metric Learning. CVPR 2019: a negative pair is kept "if S_ij^- > min_{y_k = y_i}
        S_ik - epsilon", a positive pair "if S_ij^+ < max_{y_k != y_i} S_ik + epsilon".
    """
    labels, embeddings = _labels_embeddings(labels, embeddings)
    z = l2_normalize(embeddings)
    similarity = ops.matmul(z, ops.transpose(z))  # (B, B)
    positive, negative = label_masks(labels)
    fixed = ops.stop_gradient(similarity)
    # Without a negative the hardest one is -inf (no positive kept), without a positive +inf (no negative kept).
    hardest_negative = ops.max(ops.where(negative, fixed, -INF), axis=1, keepdims=True)  # (B, 1)
    hardest_positive = ops.min(ops.where(positive, fixed, INF), axis=1, keepdims=True)  # (B, 1)
    keep_positive = ops.logical_and(positive, fixed < hardest_negative + epsilon)
    keep_negative = ops.logical_and(negative, fixed > hardest_positive - epsilon)
    pull = _log_one_plus_sum_exp(-alpha * (similarity - base), keep_positive) / alpha  # (B,)
    push = _log_one_plus_sum_exp(beta * (similarity - base), keep_negative) / beta  # (B,)
    return ops.mean(pull + push)
