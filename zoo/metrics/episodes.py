"""Few-shot metrics: nearest-prototype episodes and Lake's one-shot runs."""

import numpy as np

from .checks import _labels, _matrix, _members, _positive_int


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
