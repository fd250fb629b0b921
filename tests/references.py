"""Naive numpy references of the zoo's losses and ops, written from each paper's definition.

They compute in float64 with explicit loops over pairs, triplets and queries (the library sorts,
masks and uses the Gram matrix instead), so a test compares the library against an independent
computation. Inputs are numpy arrays; read backend tensors with `keras.ops.convert_to_numpy` first.
"""

import itertools

import numpy as np

# ---------------------------------------------------------------- distances


def ref_cross_distances(a, b, squared=False):
    """(A, D), (B, D) -> (A, B) Euclidean distances, one pair at a time."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.array([[np.sum((u - v) ** 2) for v in b] for u in a]).reshape(len(a), len(b))
    return d if squared else np.sqrt(d)


def ref_distances(x, squared=False):
    """(B, D) -> (B, B) Euclidean distances between all rows."""
    return ref_cross_distances(x, x, squared)


# ---------------------------------------------------------------- metric learning


def ordered_pairs(labels, x):
    """(same, distance) of every ordered pair (i, j), i != j, row by row: float32 (B(B-1),) each."""
    d = ref_distances(x)
    pairs = [(i, j) for i in range(len(labels)) for j in range(len(labels)) if i != j]
    same = np.array([float(labels[i] == labels[j]) for i, j in pairs], np.float32)
    return same, np.array([d[i, j] for i, j in pairs], np.float32)


def ref_contrastive(same, distance, margin):
    """Hadsell et al. 2006 without the 1/2: same * d^2 + (1 - same) * max(0, margin - d)^2, mean over pairs."""
    terms = [s * d**2 + (1 - s) * max(0.0, margin - d) ** 2 for s, d in zip(same, distance)]
    return np.mean(terms)


def ref_triplets(labels, x, margin, squared):
    """Every valid (a, p, n) term of Hermans et al.: (positive terms, number of valid triplets)."""
    d = ref_distances(x, squared)
    n = len(labels)
    positive_terms, valid = [], 0
    for a, p, neg in itertools.product(range(n), repeat=3):
        if p != a and labels[p] == labels[a] and labels[neg] != labels[a]:
            valid += 1
            term = margin + d[a, p] - d[a, neg]
            if term > 0:
                positive_terms.append(term)
    return positive_terms, valid


def ref_batch_all(labels, x, margin, squared):
    terms, _ = ref_triplets(labels, x, margin, squared)
    return np.mean(terms) if terms else 0.0


def ref_active_fraction(labels, x, margin, squared):
    terms, valid = ref_triplets(labels, x, margin, squared)
    return len(terms) / valid if valid else 0.0


def ref_batch_hard(labels, x, margin, squared):
    d = ref_distances(x, squared)
    n = len(labels)
    terms = []
    for a in range(n):
        pos = [d[a, p] for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [d[a, k] for k in range(n) if labels[k] != labels[a]]
        if pos and neg:
            terms.append(max(0.0, margin + max(pos) - min(neg)))
    return np.mean(terms) if terms else 0.0


def ref_semi_hard(labels, x, margin, squared):
    d = ref_distances(x, squared)
    n = len(labels)
    terms = []
    for a in range(n):
        neg = [d[a, k] for k in range(n) if labels[k] != labels[a]]
        if not neg:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [v for v in neg if v > d[a, p]]
            chosen = min(farther) if farther else max(neg)
            terms.append(max(0.0, margin + d[a, p] - chosen))
    return np.mean(terms) if terms else 0.0


def ref_hard_cluster(labels, x, margin):
    x = np.asarray(x, np.float64)
    classes = sorted(set(labels.tolist()))
    centroid = {c: x[labels == c].mean(axis=0) for c in classes}
    terms = []
    for c in classes:
        others = [k for k in classes if k != c]
        if not others:
            continue
        intra = max(np.sum((m - centroid[c]) ** 2) for m in x[labels == c])
        inter = min(np.sum((centroid[c] - centroid[k]) ** 2) for k in others)
        terms.append(max(0.0, intra - inter + margin))
    return np.mean(terms) if terms else 0.0


def ref_multi_similarity(labels, x, alpha, beta, base, epsilon):
    """Wang et al. 2019: per anchor, the positives closer than the hardest negative + epsilon and the negatives
    closer than the hardest positive - epsilon, in the two soft-max terms of L_MS; the mean over every anchor."""
    x = np.asarray(x, np.float64)
    z = x / np.sqrt(np.maximum(np.sum(x**2, axis=1, keepdims=True), 1e-12))  # as tf.math.l2_normalize
    n = len(labels)
    total = 0.0
    for i in range(n):
        s = {k: z[i] @ z[k] for k in range(n)}
        positives = [k for k in range(n) if k != i and labels[k] == labels[i]]
        negatives = [k for k in range(n) if labels[k] != labels[i]]
        kept_p = [k for k in positives if negatives and s[k] < max(s[m] for m in negatives) + epsilon]
        kept_n = [k for k in negatives if positives and s[k] > min(s[p] for p in positives) - epsilon]
        total += np.log(1 + sum(np.exp(-alpha * (s[k] - base)) for k in kept_p)) / alpha
        total += np.log(1 + sum(np.exp(beta * (s[k] - base)) for k in kept_n)) / beta
    return total / n


def ref_arcface(labels, x, centres, scale, margin):
    """Deng et al. 2019: softmax cross-entropy over s cos(theta_j), the label's angle widened to theta_y + m where
    that stays below pi, else the label's cosine minus m sin(pi - m) (the authors' code); one row at a time."""
    x, centres = np.asarray(x, np.float64), np.asarray(centres, np.float64)
    z = x / np.sqrt(np.maximum(np.sum(x**2, axis=1, keepdims=True), 1e-12))  # as tf.math.l2_normalize
    w = centres / np.sqrt(np.maximum(np.sum(centres**2, axis=1, keepdims=True), 1e-12))
    total = 0.0
    for row, label in zip(z, labels):
        cos = np.array([row @ centre for centre in w])
        theta = np.arccos(np.clip(cos[label], -1.0, 1.0))
        if theta + margin < np.pi:
            target = np.cos(theta + margin)
        else:
            target = cos[label] - margin * np.sin(np.pi - margin)
        logits = scale * np.where(np.arange(len(w)) == label, target, cos)
        top = logits.max()
        total += top + np.log(np.sum(np.exp(logits - top))) - logits[label]
    return total / len(labels)


def ref_cross_entropy(logits, labels, smoothing=0.0):
    """Mean softmax cross-entropy, one row at a time, against (1 - s) one-hot + s / C targets."""
    logits = np.asarray(logits, np.float64)
    n_classes = logits.shape[1]
    total = 0.0
    for row, label in zip(logits, labels):
        log_p = row - row.max() - np.log(np.sum(np.exp(row - row.max())))
        targets = np.full(n_classes, smoothing / n_classes)
        targets[label] += 1 - smoothing
        total += -np.sum(targets * log_p)
    return total / len(logits)


# ---------------------------------------------------------------- self-supervised, few-shot, CLIP


def ref_nt_xent(z_a, z_b, temperature):
    """Chen et al. 2020, eq. (1), averaged over all 2N anchors."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        twin = (i + n2 // 2) % n2
        denominator = sum(np.exp(z[i] @ z[k] / temperature) for k in range(n2) if k != i)
        total += -np.log(np.exp(z[i] @ z[twin] / temperature) / denominator)
    return total / n2


def ref_barlow_twins(z_a, z_b, lambd):
    """Zbontar et al. 2021, with the authors' batch standardisation (biased variance, eps 1e-5)."""

    def standardise(z):
        z = np.asarray(z, np.float64)
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # biased variance, as BatchNorm1d

    a, b = standardise(z_a), standardise(z_b)
    n, dim = a.shape
    loss = 0.0
    for i in range(dim):
        for j in range(dim):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return loss


def ref_prototypical(support, query):
    """Snell et al. 2017: (N, K, D) support, (N, Q, D) queries -> (mean query loss, accuracy)."""
    support, query = np.asarray(support, np.float64), np.asarray(query, np.float64)
    prototypes = support.mean(axis=1)
    n_way, n_query = query.shape[:2]
    total, correct = 0.0, 0
    for i in range(n_way):
        for q in range(n_query):
            logits = np.array([-np.sum((query[i, q] - c) ** 2) for c in prototypes])
            total += -(logits[i] - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max())
            correct += int(np.argmax(logits) == i)
    return total / (n_way * n_query), correct / (n_way * n_query)


def ref_clip(images, texts, logit_scale, positives=None):
    """Radford et al. 2021: symmetric cross-entropy over the scaled cosine similarities; with `positives`
    (Yang et al. 2022, UniCL) the cross-entropy of each row and column averaged over its positive pairs."""
    images = np.asarray(images, np.float64)
    texts = np.asarray(texts, np.float64)
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    n = len(images)
    positives = np.eye(n, dtype=bool) if positives is None else np.asarray(positives, bool)
    logits = np.array([[logit_scale * images[i] @ texts[j] for j in range(n)] for i in range(n)])
    rows = np.mean([np.mean([np.log(np.sum(np.exp(logits[i]))) - logits[i, j] for j in range(n) if positives[i, j]])
                    for i in range(n)])
    cols = np.mean([np.mean([np.log(np.sum(np.exp(logits[:, j]))) - logits[i, j] for i in range(n) if positives[i, j]])
                    for j in range(n)])
    return (rows + cols) / 2


# ---------------------------------------------------------------- gradients


def ref_hashed_ngrams(token_ids, table, sizes, space=34):
    """(B, L) byte-tokenizer ids -> (B, W): the mean of `table`'s rows of every n-gram of " " + text + end token.

    One text and one n-gram at a time: the n-gram's bytes t_1..t_n hash to ((n * 258 + t_1) * 258 + t_2 ...)
    mod len(table), computed in Python integers and reduced once at the end."""
    out = np.zeros((len(token_ids), table.shape[1]))
    for row, ids in enumerate(np.asarray(token_ids)):
        text = [space] + [int(t) for t in ids if t != 0]  # the real tokens: the text's bytes and its end token
        rows = []
        for n in sizes:
            for start in range(len(text) - n + 1):
                bucket = n
                for t in text[start:start + n]:
                    bucket = bucket * 258 + t
                rows.append(table[bucket % len(table)])
        out[row] = np.mean(rows, axis=0)
    return out


def numeric_grad(fn, x, eps=1e-4):
    """Central differences of a float64 numpy function."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (fn(x + step) - fn(x - step)) / (2 * eps)
    return grad
