"""zoo.evaluate against hand-worked answers and naive numpy loops."""

import time
import tracemalloc

import numpy as np
import pytest

from zoo import metrics as ev
from zoo.metrics import pairs as verification_metrics


def pairs_at(distances):
    """Pairs of 1-D embeddings whose Euclidean distances are exactly `distances`."""
    d = np.asarray(distances, dtype=np.float64)
    return np.zeros((len(d), 1)), d[:, None]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def angles(deg, norm=1.0):
    rad = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], 1) * np.asarray(norm, dtype=np.float64).reshape(-1, 1)


# ----------------------------------------------------------------------------- verification


def test_verification_hand_worked_leave_one_out():
    # Positives at distances 1, 2, 4; negatives at 3, 5, 6. folds=6 is leave-one-out, so the
    # (random) fold assignment cannot matter. Rule: same iff d <= t; ties -> smallest t.
    #   held out   training optimum (first max)        t     held-out decision
    #   pos 1      <=2 : 4/5 (also <=4)               2.5    1 <= 2.5 same      correct
    #   pos 2      <=1 : 4/5 (also <=4)               2.0    2 <= 2.0 same      correct
    #   pos 4      <=2 : 5/5                          2.5    4 >  2.5 diff      wrong
    #   neg 3      <=4 : 5/5                          4.5    3 <= 4.5 same      wrong
    #   neg 5      <=2 : 4/5 (also <=4)               2.5    5 >  2.5 diff      correct
    #   neg 6      <=2 : 4/5 (also <=4)               2.5    6 >  2.5 diff      correct
    a, b = pairs_at([1, 2, 4, 3, 5, 6])
    same = [1, 1, 1, 0, 0, 0]
    r = ev.verification(a, b, same, folds=6, far_targets=(1e-3, 1e-1, 0.5))
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["accuracy_std"] == pytest.approx(np.sqrt(2) / 3)
    assert r["threshold"] == pytest.approx(2.5)  # all pairs: <=2 and <=4 both 5/6, first wins
    assert r["auc"] == pytest.approx(8 / 9)  # pos 1, 2 beat all 3 negatives, pos 4 beats two
    # ROC over thresholds (none), 1..6: fpr 0,0,0,1/3,1/3,2/3,1 ; tpr 0,1/3,2/3,2/3,1,1,1
    np.testing.assert_allclose(r["roc"]["fpr"], [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(r["roc"]["tpr"], [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(r["roc"]["thresholds"][1:], [1, 2, 3, 4, 5, 6])
    assert r["eer"] == pytest.approx(1 / 3)  # at t=3: FAR 1/3 = FRR 1/3
    assert r["tar_at_far"] == pytest.approx({"1e-03": 2 / 3, "1e-01": 2 / 3, "5e-01": 1.0})


def test_verification_threshold_is_picked_on_the_other_folds():
    # Folds 1..9: a positive at d=1 and a negative at d=3. Fold 0: positive 2.5, negative 4.
    # Held out fold 0: the other nine give t = mid(1, 3) = 2, so 2.5 is rejected: 1/2.
    # Held out fold k: the others hold 1 (8p), 2.5 (1p), 3 (8n), 4 (1n): t = 2.75, fold k: 2/2.
    # Mean 0.95. A threshold picked on all pairs (2.75) or on the held-out fold itself would
    # score fold 0 perfectly and give 1.0.
    d = np.r_[2.5, 4, np.tile([1.0, 3.0], 9)]
    same = np.r_[1, 0, np.tile([1, 0], 9)].astype(bool)
    fold_ids = np.repeat(np.arange(10), 2)
    a, b = pairs_at(d)
    r = ev.verification(a, b, same, folds=fold_ids)
    assert r["accuracy"] == pytest.approx(0.95)
    assert r["accuracy_std"] == pytest.approx(np.std([0.5] + [1.0] * 9))
    assert r["threshold"] == pytest.approx(2.75)
    # Integer folds are stratified (one positive and one negative per fold); wherever the odd
    # positive and negative land, the held-out fold with the 2.5 positive scores 1/2, the others 1.
    for seed in range(3):
        assert ev.verification(a, b, same, folds=10, seed=seed)["accuracy"] == pytest.approx(0.95)


def test_verification_perfect_random_adversarial():
    rng = np.random.default_rng(0)
    n = 400
    a = unit(rng.normal(size=(n, 16)))
    same = np.arange(n) % 2 == 0
    near = unit(a + 0.05 * rng.normal(size=a.shape))
    far = -near
    perfect = ev.verification(a, np.where(same[:, None], near, far), same)
    assert perfect["accuracy"] == 1.0 and perfect["auc"] == 1.0 and perfect["eer"] == 0.0
    assert perfect["tar_at_far"]["1e-03"] == 1.0
    assert 0.2 < perfect["threshold"] < 1.9

    adversarial = ev.verification(a, np.where(same[:, None], far, near), same)
    assert adversarial["auc"] == 0.0 and adversarial["eer"] == 1.0
    assert adversarial["tar_at_far"]["1e-03"] == 0.0
    assert adversarial["accuracy"] <= 0.5

    m = 20000
    x, y = unit(rng.normal(size=(m, 8))), unit(rng.normal(size=(m, 8)))
    rand = ev.verification(x, y, rng.random(m) < 0.5)
    assert abs(rand["auc"] - 0.5) < 0.02  # AUC std here is ~0.004
    assert abs(rand["eer"] - 0.5) < 0.02
    assert abs(rand["accuracy"] - 0.5) < 0.03


def test_verification_auc_and_tar_match_naive_loops_with_ties():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 8, size=300).astype(float)  # many ties
    same = rng.random(300) < 0.4 + 0.05 * (8 - d)
    a, b = pairs_at(d)
    r = ev.verification(a, b, same, far_targets=(0.0, 0.1, 0.3))
    dp, dn = d[same], d[~same]
    naive_auc = np.mean((dp[:, None] < dn[None]) + 0.5 * (dp[:, None] == dn[None]))
    assert r["auc"] == pytest.approx(naive_auc)
    assert r["auc"] == pytest.approx(np.trapezoid(r["roc"]["tpr"], r["roc"]["fpr"]))
    for key, target in (("0e+00", 0.0), ("1e-01", 0.1), ("3e-01", 0.3)):
        best = max([np.mean(dp <= t) for t in np.r_[-1, np.unique(d)] if np.mean(dn <= t) <= target])
        assert r["tar_at_far"][key] == pytest.approx(best)


def test_integer_folds_are_stratified_and_seeded():
    # 23 positives dealt round-robin fill folds 0-2 with 3 and folds 3-9 with 2; the 17
    # negatives continue from fold 3: folds 3-9 get 2, folds 0-2 get 1. Every fold holds 4.
    same = np.r_[np.ones(23, bool), np.zeros(17, bool)]
    ids = verification_metrics._fold_ids(10, same, seed=0)
    np.testing.assert_array_equal(np.bincount(ids[same]), [3, 3, 3, 2, 2, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(np.bincount(ids[~same]), [1, 1, 1, 2, 2, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(ids, verification_metrics._fold_ids(10, same, seed=0))
    assert not np.array_equal(ids, verification_metrics._fold_ids(10, same, seed=1))


@pytest.mark.parametrize(
    "a, b, same, kwargs, match",
    [
        (np.zeros((4, 2)), np.zeros((3, 2)), [1, 0, 1, 0], {}, "same shape"),
        (np.zeros(4), np.zeros(4), [1, 0, 1, 0], {}, "2-D"),
        (np.zeros((4, 2)), np.zeros((4, 3)), [1, 0, 1, 0], {}, "same shape"),
        (np.zeros((4, 2)), np.zeros((4, 2)), [1, 0, 2, 0], {}, "0/1"),
        (np.zeros((4, 2)), np.zeros((4, 2)), [1, 0, 1], {}, "one flag per pair"),
        (np.zeros((4, 2)), np.zeros((4, 2)), [1, 1, 1, 1], {}, "both same and different"),
        (np.zeros((4, 2)), np.zeros((4, 2)), [1, 0, 1, 0], {"folds": 5}, "folds"),
        (np.zeros((4, 2)), np.zeros((4, 2)), [1, 0, 1, 0], {"folds": 1}, "folds"),
        (np.zeros((4, 2)), np.zeros((4, 2)), [1, 0, 1, 0], {"folds": np.zeros(4, int)}, "2 distinct"),
        (np.full((4, 2), np.nan), np.zeros((4, 2)), [1, 0, 1, 0], {"folds": 2}, "NaN"),
        (np.zeros((4, 2)), np.zeros((4, 2)), [1, 0, 1, 0], {"folds": 2, "far_targets": (2.0,)}, "far_targets"),
    ],
)
def test_verification_rejects_bad_input(a, b, same, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ev.verification(a, b, np.asarray(same), **kwargs)


def test_verification_pairs_enumerates_positives_and_balances_negatives():
    labels = np.array([0, 0, 0, 1, 1, 2])
    ia, ib, same = ev.verification_pairs(labels)
    got = {(int(i), int(j)) for i, j, s in zip(ia, ib, same) if s}
    assert got == {(0, 1), (0, 2), (1, 2), (3, 4)}
    assert same.sum() == 4 and (~same).sum() == 4
    assert np.all(ia < ib) and np.all((labels[ia] == labels[ib]) == same)
    assert len({(int(i), int(j)) for i, j in zip(ia, ib)}) == 8  # distinct pairs
    again = ev.verification_pairs(labels)
    assert all(np.array_equal(x, y) for x, y in zip(again, (ia, ib, same)))

    ia, ib, same = ev.verification_pairs(labels, n_pairs=2, seed=3)
    assert same.sum() == 2 and (~same).sum() == 2 and np.all((labels[ia] == labels[ib]) == same)

    # Sparse case (rejection sampling): 100 classes x 10 items -> 4500 positives.
    many = np.repeat(np.arange(100), 10)
    ia, ib, same = ev.verification_pairs(many, seed=1)
    assert same.sum() == 4500 and (~same).sum() == 4500
    assert np.all((many[ia] == many[ib]) == same) and np.all(ia < ib)
    assert len(np.unique(ia * 1000 + ib)) == 9000


def test_verification_pairs_errors():
    with pytest.raises(ValueError, match="two or more"):
        ev.verification_pairs([0, 1, 2])
    with pytest.raises(ValueError, match="n_pairs <= 4"):  # 6 positives, only 4 negatives exist
        ev.verification_pairs([0, 0, 0, 0, 1])
    assert ev.verification_pairs([0, 0, 0, 0, 1], n_pairs=4)[2].sum() == 4
    with pytest.raises(ValueError, match="1-D"):
        ev.verification_pairs(np.zeros((2, 2)))


# ----------------------------------------------------------------------------- retrieval


def naive_retrieval(x, labels, ks, cosine=False):
    """Full N x N reference with explicit per-query loops."""
    if cosine:
        x = unit(x)
        dist = -(x @ x.T)
    else:
        dist = np.linalg.norm(x[:, None] - x[None], axis=2)
    recall, aps = {k: [] for k in ks}, []
    for q in range(len(x)):
        others = np.array([i for i in np.argsort(dist[q], kind="stable") if i != q])
        match = labels[others] == labels[q]
        r = int(match.sum())
        if r == 0:
            continue
        for k in ks:
            recall[k].append(match[:k].any())
        aps.append(sum(match[:i + 1].mean() for i in range(r) if match[i]) / r)
    return {f"recall@{k}": np.mean(recall[k]) for k in ks} | {"map_at_r": np.mean(aps)}


def test_retrieval_hand_worked():
    # 1-D points; the item at 100 is the only one labelled 2: never a query, always last.
    # query  x   neighbours (label match)   R   first hit   AP@R
    #   0    0   1 T, 3 F, 4 T, 10 F        2   1           (1 + 0) / 2   = 0.5
    #   1    1   0 T, 3 F, 4 T, 10 F        2   1           0.5
    #   2    3   4 F, 1 F, 0 F, 10 T        1   4           0
    #   3    4   3 F, 1 T, 0 T, 10 F        2   2           (0 + 1/2) / 2 = 0.25
    #   4   10   4 F, 3 T, 1 F, 0 F         1   2           0
    x = np.array([[0.0], [1], [3], [4], [10], [100]])
    labels = np.array([0, 0, 1, 0, 1, 2])
    r = ev.retrieval(x, labels, ks=(1, 2, 3, 4), chunk_size=2)
    assert r["queries"] == 5
    assert r["recall@1"] == pytest.approx(2 / 5)
    assert r["recall@2"] == pytest.approx(4 / 5)
    assert r["recall@3"] == pytest.approx(4 / 5)
    assert r["recall@4"] == pytest.approx(1.0)
    assert r["map_at_r"] == pytest.approx(1.25 / 5)


def test_retrieval_map_at_r_hand_worked_r3():
    # Points 0, 1, 4, 9, 16, 25 labelled 0, 1, 0, 0, 1, 0 (no distance ties within a query).
    # query  order of the others (match)           R   AP@R
    #   0    1 F, 4 T, 9 T, 16 F, 25 T             3   (1/2 + 2/3) / 3 = 7/18
    #   1    0 F, 4 F, 9 F, 16 T, 25 F             1   0
    #   4    1 F, 0 T, 9 T, 16 F, 25 T             3   7/18
    #   9    4 T, 16 F, 1 F, 0 T, 25 T             3   1/3
    #  16    9 F, 25 F, 4 F, 1 T, 0 F              1   0
    #  25    16 F, 9 T, 4 T, 1 F, 0 T              3   7/18
    # MAP@R = (7 + 0 + 7 + 6 + 0 + 7) / 18 / 6 = 1/4; recall@1: only 9 hits -> 1/6.
    x = np.array([[0.0], [1], [4], [9], [16], [25]])
    r = ev.retrieval(x, [0, 1, 0, 0, 1, 0], ks=(1,), chunk_size=4)
    assert r["map_at_r"] == pytest.approx(0.25)
    assert r["recall@1"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_retrieval_matches_naive_reference(metric):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 12, size=150)
    x = rng.normal(size=(12, 6))[labels] + rng.normal(size=(150, 6))
    r = ev.retrieval(x.astype(np.float64), labels, ks=(1, 5, 10), chunk_size=7, metric=metric)
    ref = naive_retrieval(x, labels, (1, 5, 10), cosine=metric == "cosine")
    for key, value in ref.items():
        assert r[key] == pytest.approx(value), key


@pytest.mark.slow
def test_retrieval_large_is_chunked_and_bounded():
    n, dim = 20000, 64
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(n // 10), 10)
    centers = unit(rng.normal(size=(n // 10, dim)))
    x = unit(centers[labels] + 0.01 * rng.normal(size=(n, dim))).astype(np.float32)
    start = time.perf_counter()
    tracemalloc.start()
    try:
        r = ev.retrieval(x, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n * n * 4 / 4, f"peak {peak / 2**20:.0f} MiB suggests an N x N allocation"
    assert time.perf_counter() - start < 40  # ~10 s on 2 busy cores
    assert r["recall@1"] == 1.0 and r["map_at_r"] == 1.0 and r["queries"] == n


def test_retrieval_errors():
    x = np.eye(4)
    with pytest.raises(ValueError, match="N - 1"):
        ev.retrieval(x, [0, 0, 1, 1], ks=(4,))
    with pytest.raises(ValueError, match="two or more"):
        ev.retrieval(x, [0, 1, 2, 3], ks=1)
    with pytest.raises(ValueError, match="metric"):
        ev.retrieval(x, [0, 0, 1, 1], ks=1, metric="manhattan")
    with pytest.raises(ValueError, match="length 4"):
        ev.retrieval(x, [0, 0, 1], ks=1)
    with pytest.raises(ValueError, match="positive integer"):
        ev.retrieval(x, [0, 0, 1, 1], ks=(0,))


# ----------------------------------------------------------------------------- knn, zero-shot


def test_knn_hand_worked_cosine_and_tie_break():
    # Train at 0 deg (label 0, norm 10), 30 and 40 deg (label 1), 90 deg (label 2).
    # test  true  k=1          k=2 (tie -> nearest)         k=3
    #  5    0     0 (5 deg)    0 vs 1 tie -> 0  correct     1,1,0 -> 1 wrong
    # 50    1     1 (10 deg)   1,1 -> 1 correct             1,1,2 -> 1 correct
    # 80    2     2 (10 deg)   2 vs 1 tie -> 2  correct     1,1,2 -> 1 wrong
    # By Euclidean distance the 5-degree item would be nearest to 30 deg (the 0-deg item has norm 10).
    train = angles([0, 30, 40, 90], norm=[10, 1, 1, 1])
    test = angles([5, 50, 80])
    acc = ev.knn(train, [0, 1, 1, 2], test, [0, 1, 2], k=(1, 2, 3), chunk_size=2)
    assert acc == pytest.approx({1: 1.0, 2: 1.0, 3: 1 / 3})
    assert ev.knn(train, [0, 1, 1, 2], test, [0, 1, 2], k=3) == pytest.approx(1 / 3)
    assert ev.knn(train, ["a", "b", "b", "c"], test, ["a", "b", "c"], k=1) == 1.0


def test_knn_matches_naive_reference():
    rng = np.random.default_rng(3)
    tr, te = rng.normal(size=(80, 5)), rng.normal(size=(30, 5))
    ytr, yte = rng.integers(0, 4, 80), rng.integers(0, 4, 30)
    sim = unit(te) @ unit(tr).T
    for k in (1, 4, 7):
        preds = []
        for row in sim:
            near = ytr[np.argsort(-row)[:k]]
            counts = {c: np.sum(near == c) for c in near}
            top = max(counts.values())
            preds.append(next(c for c in near if counts[c] == top))
        assert ev.knn(tr, ytr, te, yte, k=k, chunk_size=8) == pytest.approx(np.mean(np.array(preds) == yte))
    with pytest.raises(ValueError, match="<= the number of training items"):
        ev.knn(tr, ytr, te, yte, k=81)
    with pytest.raises(ValueError, match="same dim"):
        ev.knn(tr, ytr, te[:, :3], yte)


def test_zero_shot_hand_worked():
    # Classes at 0, 90, 180 deg. Images at 10, 80, 170, 260 deg (norm 3) -> predictions 0, 1, 2, 2
    # (260 deg is 80 deg from class 2, 100 deg from class 0). True labels 0, 1, 1, 0 -> 2/4.
    text = angles([0, 90, 180])
    r = ev.zero_shot(angles([10, 80, 170, 260], norm=3), np.array([0, 1, 1, 0]), text)
    np.testing.assert_array_equal(r["predictions"], [0, 1, 2, 2])
    assert r["accuracy"] == 0.5 and "top5" not in r
    # Six classes every 60 deg; an image at 0 deg ranks class 3 (180 deg) last: outside the top 5.
    six = angles(np.arange(0, 360, 60))
    r6 = ev.zero_shot(angles([0, 0, 0]), np.array([0, 1, 3]), six)
    assert r6["accuracy"] == pytest.approx(1 / 3) and r6["top5"] == pytest.approx(2 / 3)
    # Ties rank by class index, as argmax does: classes 1-6 coincide, so an image on them is
    # predicted 1, class 5 ranks 5th (top-5 hit) and class 6 ranks 6th (miss).
    seven = angles([0, 90, 90, 90, 90, 90, 90])
    r7 = ev.zero_shot(angles([90, 90, 90]), np.array([1, 5, 6]), seven)
    np.testing.assert_array_equal(r7["predictions"], [1, 1, 1])
    assert r7["accuracy"] == pytest.approx(1 / 3) and r7["top5"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        ev.zero_shot(angles([0]), np.array([3]), text)
    with pytest.raises(ValueError, match="all-zero"):
        ev.zero_shot(np.zeros((1, 2)), np.array([0]), text)


# ----------------------------------------------------------------------------- few-shot, one-shot


def clustered(n_classes, per_class, dim=8, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    return rng.normal(size=(n_classes, dim))[labels] + noise * rng.normal(size=(len(labels), dim)), labels


def test_few_shot_perfect_clusters():
    x, y = clustered(10, 20)
    r = ev.few_shot(x, y, way=5, shot=1, queries=15, episodes=200)
    assert r == {"mean": 1.0, "ci95": 0.0, "episodes": 200}


def test_few_shot_skips_classes_too_small_and_random_is_chance():
    # Class 2 sits on class 0 but has 3 items (< shot + queries = 16): never sampled, so 2-way
    # episodes only ever see classes 0 and 1 and are perfect.
    x, y = clustered(2, 20, dim=4, seed=1)
    x = np.r_[x, x[:3]]
    y = np.r_[y, [2, 2, 2]]
    assert ev.few_shot(x, y, way=2, shot=1, episodes=50)["mean"] == 1.0
    with pytest.raises(ValueError, match="only 2 have"):
        ev.few_shot(x, y, way=3, shot=1)

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(600, 16)), np.repeat(np.arange(20), 30)
    r = ev.few_shot(x, y, way=5, shot=5, episodes=400, seed=1)
    assert abs(r["mean"] - 0.2) < 2 * r["ci95"]  # chance is exactly 1/5; ci95 ~ 2 sigma
    acc = ev.few_shot_accuracies(x, y, way=5, shot=5, episodes=400, seed=1)
    assert r["ci95"] == pytest.approx(1.96 * acc.std() / np.sqrt(400))


def test_few_shot_uses_the_prototype_not_the_nearest_support():
    # 2-way 3-shot 1-query, 4 items per class, so each episode splits all items at random.
    # Class A at -3, -1, 1, 3 (sum 0): a query q leaves prototype -q/3, at distance 4|q|/3.
    # Class B all at 6: its query is always right. A's query at 3 is 4 from its prototype and
    # 3 from B's: wrong (episode 1/2); at -3, -1, 1 it is right (episode 1). The nearest
    # *support* item would always be right (1 is 2 away from 3), so 1/2 proves prototypes.
    x = np.array([[-3.0], [-1], [1], [3], [6], [6], [6], [6]])
    y = np.repeat([0, 1], 4)
    acc = ev.few_shot_accuracies(x, y, way=2, shot=3, queries=1, episodes=400)
    assert set(np.unique(acc)) == {0.5, 1.0}
    assert abs(np.mean(acc == 0.5) - 0.25) < 0.08  # A's query is the 3 one time in four


def test_oneshot_runs_hand_worked():
    # Run 0: train 0, 5, 10; test 1, 6, 9 -> all nearest right. Run 1: test 4 is nearest 5 -> 2/3.
    train = np.array([[[0.0], [5], [10]], [[0.0], [5], [10]]])
    test = np.array([[[1.0], [6], [9]], [[4.0], [6], [9]]])
    r = ev.oneshot_runs(train, test, np.array([[0, 1, 2], [0, 1, 2]]))
    np.testing.assert_allclose(r["per_run"], [1.0, 2 / 3])
    assert r["accuracy"] == pytest.approx(5 / 6)
    # Lake's shape: 20 runs of 20 classes; test items are shuffled noisy copies of train items.
    rng = np.random.default_rng(5)
    train = rng.normal(size=(20, 20, 8))
    answers = np.stack([rng.permutation(20) for _ in range(20)])
    test = np.take_along_axis(train, answers[:, :, None], 1) + 0.01 * rng.normal(size=train.shape)
    assert ev.oneshot_runs(train, test, answers)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="answers"):
        ev.oneshot_runs(train, test, answers[:, :19])
    with pytest.raises(ValueError, match="answers"):
        ev.oneshot_runs(train, test, answers + 1)
    with pytest.raises(ValueError, match=r"\(R, W, D\)"):
        ev.oneshot_runs(train, test[:, :, :4], answers)


# ----------------------------------------------------------------------------- linear probe


def test_linear_probe_separable_blobs():
    rng = np.random.default_rng(6)
    centers = 6 * rng.normal(size=(3, 10))
    ytr, yte = np.repeat(np.arange(3), 50), np.repeat(np.arange(3), 30)
    xtr = centers[ytr] + rng.normal(size=(150, 10))
    xte = centers[yte] + rng.normal(size=(90, 10))
    r = ev.linear_probe(xtr, ytr, xte, yte)
    assert r == {"accuracy": 1.0, "train_accuracy": 1.0}


def test_linear_probe_boundary_and_standardisation():
    # Symmetric classes around 10 (train 8, 9 vs 11, 12): the optimum puts the boundary at 10,
    # so 9.9 -> class "lo" and 10.1 -> "hi". Off-centre data checks the bias/standardisation.
    xtr = np.array([[8.0], [9], [11], [12]])
    r = ev.linear_probe(xtr, ["lo", "lo", "hi", "hi"], np.array([[9.9], [10.1], [0.0], [30]]),
                        ["lo", "hi", "lo", "hi"])
    assert r["accuracy"] == 1.0
    # Standardisation makes the probe blind to per-feature affine rescaling: the informative
    # feature shrunk by 1e-4 (which the L2 penalty would otherwise suppress) scores the same.
    rng = np.random.default_rng(7)
    y2 = np.repeat([0, 1], 100)
    x2 = np.c_[rng.normal(size=200), y2 + 0.6 * rng.normal(size=200)]
    xt, yt = x2[::2], y2[::2]
    base = ev.linear_probe(x2[1::2], y2[1::2], xt, yt)["accuracy"]
    scale = np.array([3.0, 1e-4])
    shifted = ev.linear_probe(x2[1::2] * scale + 50, y2[1::2], xt * scale + 50, yt)["accuracy"]
    assert base > 0.75 and shifted == base
    # A test label never seen in training is an error, not a crash.
    r = ev.linear_probe(xtr, [0, 0, 1, 1], np.array([[9.0], [11.0]]), [0, 7])
    assert r["accuracy"] == 0.5
    with pytest.raises(ValueError, match="two training classes"):
        ev.linear_probe(xtr, [0, 0, 0, 0], xtr, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="same dim"):
        ev.linear_probe(xtr, [0, 0, 1, 1], np.zeros((2, 2)), [0, 1])


def test_paired_recall_hand_example():
    # Query 0 is nearest its own caption; query 1 is nearest caption 0, its own is second.
    queries = np.array([[1.0, 0.0], [0.8, 0.6]])
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = ev.paired_recall(queries, gallery, ks=(1, 2))
    assert out == {"recall@1": 0.5, "recall@2": 1.0}
    # With ids, the caption 0 equal to caption 1's text counts as a match for query 1.
    out = ev.paired_recall(queries, gallery, ks=(1,), query_ids=[0, 7], gallery_ids=[7, 7])
    assert out == {"recall@1": 0.5}
    with pytest.raises(ValueError, match="row by row"):
        ev.paired_recall(queries, gallery[:1])
