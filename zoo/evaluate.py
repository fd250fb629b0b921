"""Evaluation protocols over numpy embeddings, so they score Keras and ONNX outputs alike.

Pure numpy: this module imports neither Keras nor TensorFlow.

Conventions shared by the protocols:
- Embeddings are used as given. The zoo's embedders return L2-normalised vectors, for which
  the squared Euclidean distance is `2 - 2 cos`, so Euclidean and cosine rank identically;
  nothing here renormalises silently. Only the protocols defined by cosine similarity
  (`knn`, `zero_shot`, `retrieval(metric="cosine")`) normalise, because that is their metric.
- Labels may be any 1-D array whose values compare by equality (ints, strings).
- Nearest-neighbour searches are chunked over queries: memory is `chunk_size x N` scores plus
  argpartition's `chunk_size x N` int64 indices, never an N x N matrix. Ties in distance are
  broken by whatever order argpartition leaves them in.
"""

import numpy as np

from zoo.runtime.kernels import l2_normalize, paired_distances

__all__ = [
    "verification",
    "verification_pairs",
    "retrieval",
    "few_shot",
    "few_shot_accuracies",
    "oneshot_runs",
    "knn",
    "linear_probe",
    "zero_shot",
]


# ----------------------------------------------------------------------------- input checks


def _matrix(x, name):
    """Return `x` as a finite 2-D float array, or raise ValueError."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (N, D), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _labels(y, n, name):
    """Integer ids 0..C-1 and the class values of `y`, checked to be 1-D of length n (None: any)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != (len(y) if n is None else n):
        raise ValueError(f"{name} must be a 1-D array of length {'N' if n is None else n}, got shape {y.shape}")
    values, ids = np.unique(y, return_inverse=True)
    return ids.reshape(-1), values


def _members(ids):
    """Item indices of each class id 0..C-1, in one sort rather than a scan per class."""
    order = np.argsort(ids, kind="stable")
    return np.split(order, np.cumsum(np.bincount(ids))[:-1])


def _unit(x, name):
    """Rows of `x` divided by their L2 norm; zero rows have no direction and are an error."""
    if not np.all(np.any(x, axis=1)):
        raise ValueError(f"{name} has an all-zero row; cosine similarity is undefined for it")
    return l2_normalize(x)


def _unit_pair(a, b, name_a, name_b):
    """Two checked matrices (`_matrix`) of unit rows (`_unit`) with the same number of columns."""
    a, b = _unit(_matrix(a, name_a), name_a), _unit(_matrix(b, name_b), name_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same dim, got {a.shape[1]} and {b.shape[1]}")
    return a, b


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _ks(k, name="ks"):
    """A tuple of positive ints from an int or a sequence of ints."""
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    if not ks:
        raise ValueError(f"{name} must not be empty")
    return tuple(_positive_int(v, name) for v in ks)


# ----------------------------------------------------------------------------- verification


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


# ----------------------------------------------------------------------------- nearest neighbours


def _topk(queries, gallery, k, chunk_size, euclidean, exclude_self=False):
    """Yield (start, nearest): per chunk of queries, gallery indices of the k nearest, nearest first.

    Args:
        k: int or int array (Nq,). neighbours needed per query; each chunk takes its maximum.
        euclidean: bool. Euclidean distance; otherwise the rows are unit vectors and the
            score is minus the cosine similarity.
        exclude_self: bool. queries are the gallery itself; a query never finds itself.
    """
    n = len(gallery)
    k = np.broadcast_to(k, (len(queries),))
    sq = np.einsum("ij,ij->i", gallery, gallery) if euclidean else None  # (N,)
    for s in range(0, len(queries), chunk_size):
        q = queries[s:s + chunk_size]  # (c, D)
        score = q @ gallery.T  # (c, N)
        if euclidean:
            score *= -2
            score += sq  # ||q - g||^2 less ||q||^2, a per-row constant that cannot change the order
        else:
            np.negative(score, out=score)
        if exclude_self:
            score[np.arange(len(q)), s + np.arange(len(q))] = np.inf
        kk = min(int(k[s:s + chunk_size].max()), n - 1 if exclude_self else n)
        part = np.argpartition(score, kk - 1, axis=1)[:, :kk]  # (c, kk), unordered
        nearest = np.take_along_axis(
            part, np.argsort(np.take_along_axis(score, part, 1), axis=1, kind="stable"), 1)
        del score, part  # release the (c, N) arrays before the next chunk allocates its own
        yield s, nearest


def retrieval(embeddings, labels, ks=(1, 5, 10), chunk_size=1024, metric="euclidean"):
    """Leave-one-out retrieval: recall@k and MAP@R, each item querying all the others.

    A query hits at k when any of its k nearest other items shares its label. Queries whose
    label has no other item cannot hit and are excluded from every score (they stay in the
    gallery); `queries` reports how many were scored. MAP@R: with R the number of other items
    sharing the query's label, the mean over the first R retrieved of precision@i at each
    correct position i (zero elsewhere), averaged over queries. Computed in chunks of queries;
    peak memory is about `chunk_size x N x 12` bytes (float32 scores, int64 indices), e.g.
    2.3 GiB for N = 200,000 at the default chunk (lower `chunk_size` to cut it), plus a few
    `chunk_size x max(max(ks), R)` arrays for the ranked lists.

    Args:
        embeddings: array (N, D). items, each a query against the other N - 1.
        labels: array (N,). class of each item.
        ks: int or sequence of int. the k of recall@k, each <= N - 1.
        chunk_size: int. queries per chunk.
        metric: "euclidean" (embeddings as given) or "cosine" (rows normalised here).

    Returns:
        dict: "recall@k" for each k, "map_at_r", "queries" (number scored).

    Reference:
        Musgrave et al. 2020, "A Metric Learning Reality Check" (MAP@R).
    """
    x = _matrix(embeddings, "embeddings")
    ids, _ = _labels(labels, len(x), "labels")
    ks = _ks(ks)
    if max(ks) > len(x) - 1:
        raise ValueError(f"every k must be <= N - 1 = {len(x) - 1}, got ks={ks}")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    if metric == "cosine":
        x = _unit(x, "embeddings")
    r = np.bincount(ids)[ids] - 1  # (N,) other items sharing each item's label
    valid = r > 0
    if not valid.any():
        raise ValueError("retrieval needs at least one label with two or more items")
    hits = {k: 0 for k in ks}
    ap_sum = 0.0
    need = np.maximum(r, max(ks))
    for s, nearest in _topk(x, x, need, _positive_int(chunk_size, "chunk_size"), metric == "euclidean", exclude_self=True):
        rq, ok = r[s:s + len(nearest)], valid[s:s + len(nearest)]
        match = ids[nearest] == ids[s:s + len(nearest), None]  # (c, K)
        for k in ks:
            hits[k] += int(np.sum(match[ok, :k].any(axis=1)))
        within_r = np.arange(match.shape[1]) < rq[:, None]  # (c, K)
        precision = np.cumsum(match, axis=1) / np.arange(1, match.shape[1] + 1)
        ap = np.sum(precision * (match & within_r), axis=1)[ok] / rq[ok]
        ap_sum += float(ap.sum())
    n_q = int(valid.sum())
    out = {f"recall@{k}": hits[k] / n_q for k in ks}
    out["map_at_r"] = ap_sum / n_q
    out["queries"] = n_q
    return out


def knn(train_emb, train_labels, test_emb, test_labels, k=1, chunk_size=1024):
    """k-nearest-neighbour classification accuracy by cosine similarity.

    Each test item takes the majority label of its k most similar training items; a tie in
    votes goes to the tied label whose member is most similar. Rows are normalised here
    (cosine is the metric). Chunked over test items.

    Args:
        train_emb: array (N, D). labelled gallery.
        train_labels: array (N,). gallery labels.
        test_emb: array (M, D). items to classify.
        test_labels: array (M,). their true labels.
        k: int or sequence of int. neighbours voting, each <= N.
        chunk_size: int. test items per chunk.

    Returns:
        float accuracy for an int k; dict {k: accuracy} for a sequence.
    """
    tr, te = _matrix(train_emb, "train_emb"), _matrix(test_emb, "test_emb")
    if tr.shape[1] != te.shape[1]:
        raise ValueError(f"train_emb and test_emb must have the same dim, got {tr.shape[1]} and {te.shape[1]}")
    _labels(train_labels, len(tr), "train_labels")
    _labels(test_labels, len(te), "test_labels")
    ids, _ = _labels(np.r_[train_labels, test_labels], None, "labels")  # one id space for both
    y_tr, y_te = ids[:len(tr)], ids[len(tr):]
    ks = _ks(k, "k")
    if max(ks) > len(tr):
        raise ValueError(f"every k must be <= the number of training items {len(tr)}, got {k}")
    correct = {kk: 0 for kk in ks}
    tr, te = _unit(tr, "train_emb"), _unit(te, "test_emb")
    for s, nearest in _topk(te, tr, max(ks), _positive_int(chunk_size, "chunk_size"), euclidean=False):
        votes_for = y_tr[nearest]  # (c, K) neighbour labels, most similar first
        truth = y_te[s:s + len(nearest)]
        for kk in ks:
            v = votes_for[:, :kk]
            votes = (v[:, :, None] == v[:, None, :]).sum(2)  # (c, kk): votes for each position's label
            pred = v[np.arange(len(v)), np.argmax(votes, axis=1)]  # first max = most similar of the tied
            correct[kk] += int(np.sum(pred == truth))
    acc = {kk: correct[kk] / len(te) for kk in ks}
    return acc[ks[0]] if isinstance(k, (int, np.integer)) else acc


# ----------------------------------------------------------------------------- few-shot


def few_shot_accuracies(embeddings, labels, way, shot, queries=15, episodes=1000, seed=0):
    """Per-episode accuracy of nearest-prototype classification on random N-way K-shot episodes.

    Each episode samples `way` classes among those with at least `shot + queries` items, then
    `shot` support and `queries` query items per class without replacement. A query takes the
    class of the nearest prototype (mean support embedding) by squared Euclidean distance.

    Args:
        embeddings: array (N, D). frozen embeddings.
        labels: array (N,). class of each item.
        way: int. classes per episode.
        shot: int. support items per class.
        queries: int. query items per class.
        episodes: int. number of episodes.
        seed: int. seeds the episode sampling.

    Returns:
        array (episodes,) of accuracies.

    Reference:
        Snell et al. 2017, "Prototypical Networks for Few-shot Learning".
    """
    x = _matrix(embeddings, "embeddings")
    ids, _ = _labels(labels, len(x), "labels")
    way, shot = _positive_int(way, "way"), _positive_int(shot, "shot")
    queries, episodes = _positive_int(queries, "queries"), _positive_int(episodes, "episodes")
    members = _members(ids)
    eligible = np.flatnonzero(np.bincount(ids) >= shot + queries)
    if len(eligible) < way:
        raise ValueError(f"{way}-way episodes need {way} classes with >= shot + queries = "
                         f"{shot + queries} items; only {len(eligible)} have that many")
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(way), queries)
    acc = np.empty(episodes)
    for e in range(episodes):
        picks = np.stack([rng.choice(members[c], shot + queries, replace=False)
                          for c in rng.choice(eligible, way, replace=False)])  # (way, shot + queries)
        protos = x[picks[:, :shot]].mean(axis=1)  # (way, D)
        q = x[picks[:, shot:]].reshape(way * queries, -1)  # (way * queries, D)
        dist = np.sum(protos ** 2, axis=1) - 2 * q @ protos.T  # (way * queries, way), less ||q||^2
        acc[e] = np.mean(np.argmin(dist, axis=1) == truth)
    return acc


def few_shot(embeddings, labels, way, shot, queries=15, episodes=1000, seed=0):
    """Mean nearest-prototype accuracy over random episodes and its 95% confidence half-width.

    Args: as `few_shot_accuracies`.

    Returns:
        dict: mean, ci95 (1.96 * std / sqrt(episodes), population std), episodes.

    Reference:
        Snell et al. 2017, "Prototypical Networks for Few-shot Learning".
    """
    acc = few_shot_accuracies(embeddings, labels, way, shot, queries, episodes, seed)
    return {"mean": float(acc.mean()), "ci95": float(1.96 * acc.std() / np.sqrt(len(acc))),
            "episodes": len(acc)}


def oneshot_runs(train_embeddings, test_embeddings, answers):
    """Lake's one-shot runs: each test item takes its nearest training item's class, within its run.

    Args:
        train_embeddings: array (R, W, D). one training item per class of each run (W = 20).
        test_embeddings: array (R, W, D). the run's test items.
        answers: int array (R, W). index of the correct training item for each test item.

    Returns:
        dict: accuracy (over all R x W test items), per_run (array (R,)).

    Reference:
        Lake et al. 2015, "Human-level concept learning through probabilistic program induction".
    """
    tr, te = np.asarray(train_embeddings), np.asarray(test_embeddings)
    if tr.ndim != 3 or tr.shape != te.shape or tr.shape[1] < 2:
        raise ValueError("train_embeddings and test_embeddings must both have shape (R, W, D) with W >= 2, "
                         f"got {tr.shape} and {te.shape}")
    tr = _matrix(tr.reshape(-1, tr.shape[2]), "train_embeddings").reshape(tr.shape)
    te = _matrix(te.reshape(-1, te.shape[2]), "test_embeddings").reshape(te.shape)
    ans = np.asarray(answers)
    if ans.shape != tr.shape[:2] or not np.issubdtype(ans.dtype, np.integer) \
            or ans.min() < 0 or ans.max() >= tr.shape[1]:
        raise ValueError(f"answers must be integers in [0, {tr.shape[1]}) of shape {tr.shape[:2]}, "
                         f"got shape {ans.shape} and dtype {ans.dtype}")
    dist = np.sum((te[:, :, None, :] - tr[:, None, :, :]) ** 2, axis=-1)  # (R, W test, W train)
    per_run = np.mean(np.argmin(dist, axis=2) == ans, axis=1)  # (R,)
    return {"accuracy": float(per_run.mean()), "per_run": per_run}


# ----------------------------------------------------------------------------- probes


def _lbfgs(fun, x, iters, memory=10, gtol=1e-6):
    """Minimise a smooth function with L-BFGS and Armijo backtracking; fun(x) -> (value, gradient)."""
    f, g = fun(x)
    s_hist, y_hist = [], []
    for _ in range(iters):
        if np.max(np.abs(g)) < gtol:
            break
        q, alphas = g.copy(), []
        for s, y in reversed(list(zip(s_hist, y_hist))):  # two-loop recursion (Nocedal & Wright 7.4)
            a = (s @ q) / (y @ s)
            q -= a * y
            alphas.append(a)
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += (a - (y @ q) / (y @ s)) * s
        direction, slope, step = -q, -(g @ q), 1.0
        while True:
            f_new, g_new = fun(x + step * direction)
            if f_new <= f + 1e-4 * step * slope or step < 1e-12:
                break
            step /= 2
        s, y = step * direction, g_new - g
        if s @ y > 1e-12:  # keep the curvature pair only if it keeps the inverse Hessian positive
            s_hist, y_hist = (s_hist + [s])[-memory:], (y_hist + [y])[-memory:]
        x, f, g = x + s, f_new, g_new
    return x


def linear_probe(train_emb, train_labels, test_emb, test_labels, l2=1e-3, epochs=200):
    """Accuracy of a multinomial logistic regression trained on frozen embeddings.

    Features are standardised with the training mean and std. The loss is the mean
    cross-entropy plus `l2 / 2 * ||W||^2` (bias unpenalised), minimised by full-batch L-BFGS
    from zero, so the result is deterministic. Test items whose label never occurs in training
    count as errors.

    Args:
        train_emb: array (N, D). training embeddings.
        train_labels: array (N,). their labels.
        test_emb: array (M, D). test embeddings.
        test_labels: array (M,). their labels.
        l2: float. weight-decay strength, >= 0.
        epochs: int. L-BFGS iterations, each a full pass over the training set.

    Returns:
        dict: accuracy (test), train_accuracy.
    """
    tr, te = _matrix(train_emb, "train_emb"), _matrix(test_emb, "test_emb")
    if tr.shape[1] != te.shape[1]:
        raise ValueError(f"train_emb and test_emb must have the same dim, got {tr.shape[1]} and {te.shape[1]}")
    y_tr, classes = _labels(train_labels, len(tr), "train_labels")
    _labels(test_labels, len(te), "test_labels")
    if len(classes) < 2:
        raise ValueError("linear_probe needs at least two training classes")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    epochs = _positive_int(epochs, "epochs")
    tr, te = tr.astype(np.float64), te.astype(np.float64)  # L-BFGS needs float64 line searches
    mean, std = tr.mean(axis=0), tr.std(axis=0)
    std[std == 0] = 1.0  # constant features carry nothing; leave them at zero
    xtr, xte = (tr - mean) / std, (te - mean) / std  # (N, D), (M, D)
    n, dim, c = len(xtr), xtr.shape[1], len(classes)
    onehot = np.eye(c)[y_tr]  # (N, C)

    def loss_grad(theta):
        w, b = theta[:dim * c].reshape(dim, c), theta[dim * c:]
        logits = xtr @ w + b  # (N, C)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        err = (np.exp(logp) - onehot) / n  # (N, C): d(mean CE)/d(logits)
        loss = -np.sum(onehot * logp) / n + l2 / 2 * np.sum(w ** 2)
        return loss, np.r_[(xtr.T @ err + l2 * w).ravel(), err.sum(axis=0)]

    theta = _lbfgs(loss_grad, np.zeros(dim * c + c), epochs)
    w, b = theta[:dim * c].reshape(dim, c), theta[dim * c:]
    pred_tr = classes[np.argmax(xtr @ w + b, axis=1)]
    pred_te = classes[np.argmax(xte @ w + b, axis=1)]
    return {"accuracy": float(np.mean(pred_te == np.asarray(test_labels))),
            "train_accuracy": float(np.mean(pred_tr == np.asarray(train_labels)))}


def zero_shot(image_embeddings, labels, class_text_embeddings):
    """Zero-shot classification: each image takes the class whose text embedding is most cosine-similar.

    Args:
        image_embeddings: array (N, D). image embeddings.
        labels: int array (N,). true class of each image, an index into the text rows.
        class_text_embeddings: array (C, D). one text embedding per class (e.g. the mean over
            prompts), rows normalised here.

    Returns:
        dict: accuracy, top5 (only when C >= 5), predictions (int array (N,)).

    Reference:
        Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision".
    """
    img, txt = _unit_pair(image_embeddings, class_text_embeddings, "image_embeddings", "class_text_embeddings")
    y = np.asarray(labels)
    if y.shape != (len(img),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(txt):
        raise ValueError(f"labels must be {len(img)} integers in [0, {len(txt)}) (rows of "
                         f"class_text_embeddings), got shape {y.shape} and dtype {y.dtype}")
    sim = img @ txt.T  # (N, C)
    pred = np.argmax(sim, axis=1)
    out = {"accuracy": float(np.mean(pred == y))}
    if len(txt) >= 5:
        # The true class's rank, ties going to the lower index as in argmax: top-5 when < 5.
        s_true = sim[np.arange(len(y)), y][:, None]  # (N, 1)
        rank = np.sum((sim > s_true) | ((sim == s_true) & (np.arange(len(txt)) < y[:, None])), axis=1)
        out["top5"] = float(np.mean(rank < 5))
    out["predictions"] = pred
    return out


def paired_recall(queries, gallery, ks=(1, 5, 10), query_ids=None, gallery_ids=None, chunk_size=1024):
    """Cross-modal retrieval recall@k: query i's match is gallery i (or every gallery item with its id).

    Image-to-text retrieval among captions (and back), as in CLIP's evaluation: a query hits at k
    when one of its k most cosine-similar gallery items is a match. Ids let identical captions
    count as the same answer.

    Args:
        queries: array (N, D). query embeddings (e.g. images).
        gallery: array (M, D). gallery embeddings (e.g. captions); rows normalised here.
        ks: tuple of int. the cut-offs.
        query_ids: int array (N,) or None. match id of each query (default: its row, so M == N).
        gallery_ids: int array (M,) or None. match id of each gallery item (default: its row).
        chunk_size: int. queries per chunk (memory chunk x M).

    Returns:
        dict: recall@k for each k.

    Reference:
        Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision".
    """
    q, g = _unit_pair(queries, gallery, "queries", "gallery")
    if query_ids is None and gallery_ids is None and len(q) != len(g):
        raise ValueError(f"without ids, queries and gallery pair row by row: got {len(q)} and {len(g)} rows")
    qi, gi = (np.arange(len(x)) if ids is None else np.asarray(ids) for x, ids in ((q, query_ids), (g, gallery_ids)))
    if qi.shape != (len(q),) or gi.shape != (len(g),):
        raise ValueError(f"query_ids and gallery_ids need one id per row: ({len(q)},) and ({len(g)},), "
                         f"got {qi.shape} and {gi.shape}")
    ks = _ks(ks)
    hits = np.zeros((len(q), len(ks)), bool)
    for s, nearest in _topk(q, g, min(max(ks), len(g)), _positive_int(chunk_size, "chunk_size"), euclidean=False):
        match = gi[nearest] == qi[s:s + len(nearest), None]  # (c, k)
        for j, k in enumerate(ks):
            hits[s:s + len(nearest), j] = match[:, :k].any(axis=1)
    return {f"recall@{k}": float(hits[:, j].mean()) for j, k in enumerate(ks)}
