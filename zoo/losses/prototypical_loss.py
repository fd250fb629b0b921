"""The prototypical loss of one few-shot episode (Snell et al. 2017)."""

from keras import ops

from zoo.losses._common import _float32
from zoo.ops import cross_distances

__all__ = ["prototypical"]


def prototypical(support, query):
    """Prototypical loss of one episode: queries classified by the nearest class mean.

    "p(y = k | x) = exp(-d(f(x), c_k)) / sum_k' exp(-d(f(x), c_k'))", d the squared
    Euclidean distance and c_k the mean of class k's support embeddings.

    Args:
        support: tensor (N, K, D). K support embeddings for each of the N classes.
        query: tensor (N, Q, D). Q query embeddings per class; row i belongs to class i.

    Returns:
        (loss, accuracy): float32 scalars, mean cross-entropy and accuracy over the N*Q queries.

    Reference:
        Snell, Swersky, Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017.
    """
    support, query = _float32(support), _float32(query)
    for name, x in (("support", support), ("query", query)):
        if len(x.shape) != 3:
            raise ValueError(
                f"{name} must be a rank-3 tensor (N, K, D), got shape {tuple(x.shape)}"
            )
    for axis, what in ((0, "number of classes N"), (2, "embedding size D")):
        s, q = support.shape[axis], query.shape[axis]
        if s is not None and q is not None and s != q:
            raise ValueError(
                f"support {tuple(support.shape)} and query {tuple(query.shape)} must have the "
                f"same {what}"
            )
    n_way = ops.shape(query)[0]
    prototypes = ops.mean(support, axis=1)  # (N, D)
    flat_query = ops.reshape(query, (-1, ops.shape(query)[2]))  # (N*Q, D)
    logits = -cross_distances(flat_query, prototypes, squared=True)  # (N*Q, N)
    log_probs = ops.reshape(
        logits - ops.logsumexp(logits, axis=1, keepdims=True), (n_way, -1, n_way)
    )  # (N, Q, N)
    classes = ops.arange(n_way)
    own_class = ops.cast(classes[:, None] == classes[None, :], "float32")[:, None, :]  # (N, 1, N)
    loss = -ops.mean(ops.sum(log_probs * own_class, axis=2))
    predicted = ops.reshape(ops.argmax(logits, axis=1), (n_way, -1))  # (N, Q)
    correct = predicted == ops.cast(classes, predicted.dtype)[:, None]
    return loss, ops.mean(ops.cast(correct, "float32"))
