"""Pair verification metrics: pairs of embeddings, same or not; accuracy over folds, ROC, EER, TAR@FAR."""

import numpy as np

from zoo.runtime.kernels import paired_distances

from .checks import _labels, _matrix, _members, _positive_int


def _roc_counts(d, same):
    """Distinct distances u (ascending) and the positives/negatives with distance <= each u."""
    order = np.argsort(d, kind="stable")
    ds, ss = d[order], same[order]
    u, start = np.unique(ds, return_index=True)
    last = np.r_[start[1:], len(ds)] - 1  # last sorted position of each distinct distance
    return u, np.cumsum(ss)[last], np.cumsum(~ss)[last]


def _best_threshold(d, same):
    """The accuracy-maximising threshold for the rule `same iff d <= t` (smallest one on ties).

    Candidates are one per interval between distinct distances: just below the smallest
    (nothing accepted), the midpoints between neighbours, and the largest (all accepted).
    """
    u, tp, fp = _roc_counts(d, same)
    n_neg = len(d) - tp[-1]
    correct = np.r_[0, tp] + (n_neg - np.r_[0, fp])  # (len(u) + 1,)
    candidates = np.r_[np.nextafter(u[0], -np.inf), (u[:-1] + u[1:]) / 2, u[-1]]
    return float(candidates[np.argmax(correct)])  # argmax: first, i.e. smallest, on ties


def _midranks(x):
    """1-based ranks of `x` in ascending order, tied values sharing their average rank."""
    order = np.argsort(x, kind="stable")
    _, start, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(start + (counts + 1) / 2, counts)
    return ranks


def _fold_ids(folds, same, seed):
    """Each pair's fold: the given ids, or positives then negatives shuffled and dealt round-robin."""
    n = len(same)
    if np.ndim(folds) == 0:
        if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= n:
            raise ValueError(f"folds must be an integer in [2, {n}] (the number of pairs), got {folds!r}")
        rng = np.random.default_rng(seed)
        order = np.r_[rng.permutation(np.flatnonzero(same)), rng.permutation(np.flatnonzero(~same))]
        ids = np.empty(n, dtype=np.int64)
        ids[order] = np.arange(n) % folds  # stratified: every fold gets its share of each class
        return ids
    ids = np.asarray(folds)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"folds as an array must hold one integer fold id per pair, shape ({n},), "
                         f"got shape {ids.shape} and dtype {ids.dtype}")
    if len(np.unique(ids)) < 2:
        raise ValueError("folds as an array must name at least 2 distinct folds")
    return ids


def verification(emb_a, emb_b, same, folds=10, far_targets=(1e-3,), seed=0):
    """Pair verification by Euclidean distance: k-fold accuracy, ROC AUC, EER and TAR@FAR.

    A pair is declared "same" when `||a - b|| <= threshold`. Accuracy follows the LFW
    protocol: for each fold, the threshold that maximises accuracy on the *other* folds is
    applied to the held-out fold; the result is the mean (and std) of the fold accuracies.
    Integer `folds` are stratified: positives, then negatives, are shuffled with `seed` and
    dealt round-robin, so folds differ in size by at most one pair of each class. The threshold
    picked on each training set is the smallest among those of maximal accuracy, placed at the
    midpoint between neighbouring distances (see `_best_threshold`).

    AUC is the Mann-Whitney statistic with similarity `-distance`: the probability that a
    random positive pair is closer than a random negative one, ties counting one half. EER is
    read off the ROC by linear interpolation between its points, where FAR = 1 - TAR. TAR@FAR
    is the TAR at the largest threshold whose FAR <= target; pairs at equal distance are accepted
    or rejected together (no interpolation), so with fewer than 1/target negative pairs the only
    admissible FAR is 0.

    Args:
        emb_a: array (N, D). first embedding of each pair, used as given (see module notes).
        emb_b: array (N, D). second embedding of each pair.
        same: array (N,) of bool or 0/1. whether the pair shows the same identity.
        folds: int or int array (N,). number of folds (2..N), or each pair's fold id (e.g.
            LFW's ten official sets).
        far_targets: sequence of float in [0, 1]. false-accept rates for TAR@FAR.
        seed: int. seeds the assignment of pairs to folds when `folds` is an int.

    Returns:
        dict: accuracy, accuracy_std, threshold (picked on all pairs), auc, eer, tar_at_far
        ({"1e-03": tar, ...}), roc ({"fpr", "tpr", "thresholds"}: arrays, one point per distinct
        distance plus the origin).

    Reference:
        Huang et al. 2007, "Labeled Faces in the Wild" (10-fold protocol); Hanley & McNeil 1982
        (AUC as the Mann-Whitney statistic).
    """
    a, b = _matrix(emb_a, "emb_a"), _matrix(emb_b, "emb_b")
    if a.shape != b.shape:
        raise ValueError(f"emb_a and emb_b must have the same shape (N, D), got {a.shape} and {b.shape}")
    same = np.asarray(same)
    if same.shape != (len(a),):
        raise ValueError(f"same must have shape ({len(a)},), one flag per pair, got {same.shape}")
    if same.dtype != bool:
        if not np.issubdtype(same.dtype, np.number) or not np.all(np.isin(same, (0, 1))):
            raise ValueError("same must be boolean or 0/1")
        same = same.astype(bool)
    n_pos = int(same.sum())
    n_neg = len(same) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"verification needs both same and different pairs, got {n_pos} and {n_neg}")
    targets = tuple(float(t) for t in far_targets)
    keys = [f"{t:.0e}" for t in targets]
    if any(not 0 <= t <= 1 for t in targets) or len(set(keys)) != len(keys):
        raise ValueError(f"far_targets must be distinct rates in [0, 1] (as keyed to one digit), got {far_targets!r}")
    fold_of = _fold_ids(folds, same, seed)

    d = paired_distances(a.astype(np.float64), b)  # (N,)
    fold_acc = []
    for f in np.unique(fold_of):
        test = fold_of == f
        t = _best_threshold(d[~test], same[~test])
        fold_acc.append(np.mean((d[test] <= t) == same[test]))

    u, tp, fp = _roc_counts(d, same)
    fpr, tpr = np.r_[0, fp] / n_neg, np.r_[0, tp] / n_pos
    ranks = _midranks(-d)
    auc = (ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    g = fpr + tpr - 1  # FAR - FRR: nondecreasing along the ROC, -1 at the origin, 0 at the EER
    i = int(np.argmax(g >= 0))
    lam = -g[i - 1] / (g[i] - g[i - 1]) if g[i] > 0 else 1.0
    eer = fpr[i - 1] + lam * (fpr[i] - fpr[i - 1])
    tar = {k: float(tpr[np.searchsorted(fpr, t, side="right") - 1]) for k, t in zip(keys, targets)}
    return {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "threshold": _best_threshold(d, same),
        "auc": float(auc),
        "eer": float(eer),
        "tar_at_far": tar,
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": np.r_[np.nextafter(u[0], -np.inf), u]},
    }


def verification_pairs(labels, n_pairs=None, seed=0):
    """All same-label pairs and as many random different-label pairs, as in the LFW entries' protocol.

    Same-label pairs are enumerated (sum over classes of n_c (n_c - 1) / 2 of them); `n_pairs`
    keeps a random subset of that many. Different-label pairs are distinct unordered pairs drawn
    uniformly at random. The returned pairs are shuffled.

    Args:
        labels: array (N,). class of each item.
        n_pairs: int or None. cap on the number of same-label pairs (None: all of them).
        seed: int. seeds every random choice.

    Returns:
        (idx_a, idx_b, same): int64 arrays (M,), (M,) and bool array (M,), idx_a < idx_b.

    Raises:
        ValueError: when there is no same-label pair, or fewer different-label pairs exist
            than same-label pairs requested.
    """
    ids, _ = _labels(labels, None, "labels")
    n = len(ids)
    rng = np.random.default_rng(seed)
    pos = []
    for members in _members(ids):
        i, j = np.triu_indices(len(members), 1)
        pos.append(np.stack([members[i], members[j]], 1))
    pos = np.concatenate(pos)  # (P, 2)
    if len(pos) == 0:
        raise ValueError("verification_pairs needs at least one label with two or more items")
    if n_pairs is not None and _positive_int(n_pairs, "n_pairs") < len(pos):
        pos = pos[np.sort(rng.choice(len(pos), n_pairs, replace=False))]
    need = len(pos)
    counts = np.bincount(ids).astype(np.int64)
    n_diff = n * (n - 1) // 2 - int(np.sum(counts * (counts - 1) // 2))
    if n_diff < need:
        raise ValueError(f"only {n_diff} different-label pairs exist for {need} same-label pairs; "
                         f"pass n_pairs <= {n_diff}")
    if n_diff <= 4 * need:
        # Dense request: enumerate every pair (at most 5x the same-label pairs already listed).
        i, j = np.triu_indices(n, 1)
        keep = ids[i] != ids[j]
        neg = np.stack([i[keep], j[keep]], 1)
        neg = neg[rng.choice(len(neg), need, replace=False)]
    else:
        # Sparse request: more than 80% of all pairs differ, so rejection sampling is quick.
        codes = np.empty(0, dtype=np.int64)
        while len(codes) < need:
            i, j = rng.integers(n, size=(2, 2 * need))
            keep = ids[i] != ids[j]
            lo, hi = np.minimum(i, j)[keep], np.maximum(i, j)[keep]
            codes = np.unique(np.r_[codes, lo.astype(np.int64) * n + hi])
        codes = codes[rng.choice(len(codes), need, replace=False)]
        neg = np.stack([codes // n, codes % n], 1)
    pairs = np.concatenate([pos, neg]).astype(np.int64)
    same = np.r_[np.ones(need, bool), np.zeros(need, bool)]
    order = rng.permutation(2 * need)
    return pairs[order, 0], pairs[order, 1], same[order]
