"""The losses of the zoo as pure `keras.ops` functions returning float32 scalars.

Every loss casts its float inputs to float32 first, so float16/bfloat16 activations under
mixed precision give a finite float32 loss. Terms that do not exist in a batch (an anchor
without a positive or a negative, a class alone in the batch) are left out of the mean, and
a mean over no term is 0. No loss builds a (B, B, B) tensor: the triplet losses that compare
every (a, p, n) loop over "positive slots" instead, step j taking every anchor's j-th
positive at once: O(B^2) memory and O(B^2 K) time for K images per class (P x K batches).
On JAX, call those inside `jax.jit` (as `fit()` does): run eagerly, the loop is re-traced and
re-compiled at every call.
"""

from keras import ops

from zoo.ops import (
    check_labels_embeddings,
    cross_distances,
    l2_normalize,
    label_masks,
    pairwise_distances,
)


def _float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _labels_embeddings(labels, embeddings):
    """Validated (int labels, float32 embeddings)."""
    labels = ops.convert_to_tensor(labels)
    embeddings = ops.convert_to_tensor(embeddings)
    check_labels_embeddings(labels, embeddings)
    return labels, ops.cast(embeddings, "float32")


def _two_views(z_a, z_b, name_a="z_a", name_b="z_b"):
    """Validated float32 (N, D) pair of views of the same shape."""
    z_a, z_b = _float32(z_a), _float32(z_b)
    for name, z in ((name_a, z_a), (name_b, z_b)):
        if len(z.shape) != 2:
            raise ValueError(f"{name} must be a rank-2 tensor (N, D), got shape {tuple(z.shape)}")
    for axis in (0, 1):
        n_a, n_b = z_a.shape[axis], z_b.shape[axis]
        if n_a is not None and n_b is not None and n_a != n_b:
            raise ValueError(
                f"{name_a} and {name_b} must have the same shape (N, D), got "
                f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
            )
    return z_a, z_b


def _safe_mean(total, count):
    """total / count, and 0 where count is 0."""
    return total / ops.maximum(count, 1.0)


def _positive_ranks(positive):
    """Number each anchor's positives: rank[a, p] = k for a's k-th positive p (from 1), else 0.

    Args:
        positive: bool tensor (B, B). positive-pair mask.

    Returns:
        (rank int32 (B, B), int32 scalar: the largest number of positives of an anchor).
    """
    positive = ops.cast(positive, "int32")
    return ops.cumsum(positive, axis=1) * positive, ops.max(ops.sum(positive, axis=1))


def contrastive(same, distance, margin=1.0):
    """Contrastive loss over pairs: pull same pairs together, push others beyond `margin`.

    "L(W, Y, X1, X2) = (1 - Y) 1/2 (D_W)^2 + (Y) 1/2 {max(0, m - D_W)}^2" (Y = 0 for similar
    pairs). As the zoo's design defines it: `same * d^2 + (1 - same) * max(0, margin - d)^2`,
    without the 1/2, averaged over pairs.

    Args:
        same: tensor (N,). 1 (or True) for a pair of the same class, 0 otherwise.
        distance: tensor (N,). distance between the two embeddings of each pair.
        margin: float. distance beyond which a different pair costs nothing.

    Reference:
        Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an Invariant Mapping.
        CVPR 2006.
    """
    same, distance = _float32(same), _float32(distance)
    if len(same.shape) != len(distance.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(same.shape, distance.shape)
    ):
        raise ValueError(
            "same and distance must have the same shape (N,), got "
            f"{tuple(same.shape)} and {tuple(distance.shape)}"
        )
    hinge = ops.relu(margin - distance)
    return ops.mean(same * ops.square(distance) + (1.0 - same) * ops.square(hinge))


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


def nt_xent(z_a, z_b, temperature=0.1):
    """NT-Xent: each of the 2N views must pick its twin among the other 2N - 1 by cosine.

    "l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k=1}^{2N} 1[k != i] exp(sim(z_i, z_k)/tau)
    [...] The final loss is computed across all positive pairs, both (i, j) and (j, i)."

    Args:
        z_a: tensor (N, D). first view of each example.
        z_b: tensor (N, D). second view, row i paired with row i of z_a.
        temperature: float. tau, the softmax temperature.

    Reference:
        Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive Learning of
        Visual Representations. ICML 2020.
    """
    z_a, z_b = _two_views(z_a, z_b)
    z_a, z_b = l2_normalize(z_a), l2_normalize(z_b)
    z = ops.concatenate([z_a, z_b], axis=0)  # (2N, D)
    logits = ops.matmul(z, ops.transpose(z)) / temperature  # (2N, 2N)
    index = ops.arange(ops.shape(z)[0])
    # A large finite value rather than -inf: exp underflows to 0 and no inf reaches a gradient.
    logits = ops.where(index[:, None] == index[None, :], -1e9, logits)
    twin = ops.sum(z_a * z_b, axis=1) / temperature  # (N,)
    positive = ops.concatenate([twin, twin], axis=0)  # (2N,)
    return ops.mean(ops.logsumexp(logits, axis=1) - positive)


def barlow_twins(z_a, z_b, lambd=5e-3):
    """Barlow Twins: drive the cross-correlation of the two views' features to the identity.

    "L_BT = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2", with C computed, as in
    the authors' code, from features standardised over the batch (biased variance,
    eps 1e-5) and divided by the batch size.

    Args:
        z_a: tensor (N, D). projector output for the first view.
        z_b: tensor (N, D). projector output for the second view.
        lambd: float. weight of the redundancy-reduction (off-diagonal) term.

    Reference:
        Zbontar, Jing, Misra, LeCun, Deny. Barlow Twins: Self-Supervised Learning via
        Redundancy Reduction. ICML 2021.
    """
    z_a, z_b = _two_views(z_a, z_b)

    def standardise(z):
        mean = ops.mean(z, axis=0, keepdims=True)
        variance = ops.mean(ops.square(z - mean), axis=0, keepdims=True)
        return (z - mean) / ops.sqrt(variance + 1e-5)

    n = ops.cast(ops.shape(z_a)[0], "float32")
    c = ops.matmul(ops.transpose(standardise(z_a)), standardise(z_b)) / n  # (D, D)
    diagonal = ops.diagonal(c)
    on_diagonal = ops.sum(ops.square(1.0 - diagonal))
    off_diagonal = ops.sum(ops.square(c)) - ops.sum(ops.square(diagonal))
    return on_diagonal + lambd * off_diagonal


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


def clip(image_embeddings, text_embeddings, logit_scale, positives=None):
    """Symmetric InfoNCE of CLIP: each image picks its caption and each caption its image.

    From the paper's pseudocode: "logits = np.dot(I_e, T_e.T) * np.exp(t) [...]
    loss = (loss_i + loss_t)/2" with L2-normalised I_e, T_e and pairs on the diagonal.
    The multiplier is taken as given; learning and clamping its log is the model's job.

    With `positives`, every marked pair counts as a match, as UniCL does for image-text pairs that share a
    label: row i's loss is the mean over its positives j of -log softmax(logits[i])[j] (and so for columns).
    A batch where one caption ("smileys and emotion") describes several images, or one image comes with
    several captions, then asks for no impossible choice between them. The identity gives CLIP exactly.

    Args:
        image_embeddings: tensor (N, D). image tower outputs.
        text_embeddings: tensor (N, D). text tower outputs, row i describing image i.
        logit_scale: float scalar or scalar tensor. the multiplier exp(t), e.g. 1/0.07.
        positives: bool tensor (N, N) or None. positives[i, j]: caption j describes image i; must hold on the
            diagonal. None: the identity.

    Reference:
        Radford et al. Learning Transferable Visual Models From Natural Language Supervision.
        ICML 2021. Yang et al. Unified Contrastive Learning in Image-Text-Label Space. CVPR 2022.
    """
    images, texts = _two_views(
        image_embeddings, text_embeddings, "image_embeddings", "text_embeddings"
    )
    logits = _float32(logit_scale) * ops.matmul(
        l2_normalize(images), ops.transpose(l2_normalize(texts))
    )  # (N, N)
    if positives is None:
        matched = ops.diagonal(logits)
        image_to_text = ops.mean(ops.logsumexp(logits, axis=1) - matched)
        text_to_image = ops.mean(ops.logsumexp(logits, axis=0) - matched)
        return (image_to_text + text_to_image) / 2.0
    weights = ops.cast(positives, "float32")  # (N, N)
    matched = ops.sum(weights * logits, axis=1) / ops.sum(weights, axis=1)  # mean positive logit per row
    image_to_text = ops.mean(ops.logsumexp(logits, axis=1) - matched)
    matched = ops.sum(weights * logits, axis=0) / ops.sum(weights, axis=0)  # per column
    text_to_image = ops.mean(ops.logsumexp(logits, axis=0) - matched)
    return (image_to_text + text_to_image) / 2.0
