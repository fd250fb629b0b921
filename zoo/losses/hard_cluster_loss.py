"""The hard-cluster term (Alex et al. 2018): each class's widest member against the nearest other centroid."""

from keras import ops

from zoo.losses._common import _labels_embeddings, _safe_mean
from zoo.losses._registry import register_loss
from zoo.ops import cross_distances, pairwise_distances

__all__ = ["hard_cluster"]


@register_loss("hard_cluster", inputs=("labels", "embeddings"))
def hard_cluster(labels, embeddings, margin=0.2):
    """Cluster loss: each class's widest member against its nearest other class's centroid.

    Per class present in the batch: intra = max squared distance of its members to its
    centroid, inter = min squared distance from its centroid to another class's centroid;
    mean over the classes (that have another class in the batch) of
    `max(0, intra - inter + margin)`, 0 if none.

    Args:
        labels: int tensor (B,). class ids.
        embeddings: tensor (B, D). embeddings.
        margin: float. margin of the hinge.

    Reference:
        Alex, Sami, Banerjee, Panda. Cluster Loss for Person Re-Identification.
        ICVGIP 2018, arXiv:1812.10325 (its batch-hard intra/inter-cluster distances).
    """
    labels, embeddings = _labels_embeddings(labels, embeddings)
    same = labels[:, None] == labels[None, :]  # (B, B)
    same_f = ops.cast(same, "float32")
    # One centroid row per sample (its class's); each class is then counted at its first sample.
    centroids = ops.matmul(same_f, embeddings) / ops.sum(same_f, axis=1, keepdims=True)  # (B, D)
    index = ops.arange(ops.shape(labels)[0])
    earlier_same = ops.logical_and(same, index[None, :] < index[:, None])
    first = ops.logical_not(ops.any(earlier_same, axis=1))  # (B,)
    intra = ops.max(
        ops.where(same, cross_distances(centroids, embeddings, squared=True), 0.0), axis=1
    )
    centroid_distances = pairwise_distances(centroids, squared=True)  # (B, B)
    other = ops.logical_not(same)
    fill = ops.stop_gradient(ops.max(centroid_distances))
    inter = ops.min(ops.where(other, centroid_distances, fill), axis=1)
    valid = ops.logical_and(first, ops.any(other, axis=1))
    hinge = ops.relu(intra - inter + margin)
    return _safe_mean(
        ops.sum(ops.where(valid, hinge, 0.0)), ops.sum(ops.cast(valid, "float32"))
    )
