"""Nearest-neighbour metrics: leave-one-out retrieval (recall@k, MAP@R), kNN classification, paired recall."""

import numpy as np

from .checks import _ks, _labels, _matrix, _positive_int, _unit, _unit_pair


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
