"""Samplers: batch composition against the labels, reproducibility, validation, and fit()."""

import keras
import numpy as np
import pytest

from zoo.data.samplers import (
    CaptionSampler,
    EpisodeSampler,
    HardClusterSampler,
    PairSampler,
    PKSampler,
    TwoViewSampler,
    sample_episode,
)


def _toy(counts):
    """Images (N, 3, 3, 1) whose top-left pixel is 1000 + row id, labels from class counts."""
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.zeros((len(labels), 3, 3, 1), np.float32)
    images[:, 0, 0, 0] = 1000 + np.arange(len(labels))
    return images, labels


def _rows(x):
    return (x[:, 0, 0, 0] - 1000).astype(int)


def _same_batches(a, b):
    return all(np.array_equal(u, v) for u, v in zip(keras.tree.flatten(a), keras.tree.flatten(b)))


def test_pk_sampler_batches():
    images, labels = _toy([6, 6, 6, 2, 6, 6])  # class 3 has fewer than k images
    s = PKSampler(images, labels, p=3, k=4, steps=20, seed=5)
    assert len(s) == 20
    for i in range(len(s)):
        x, y = s[i]
        assert x.shape == (12, 3, 3, 1) and x.dtype == np.float32 and y.dtype == np.int32
        rows = _rows(x)
        assert np.array_equal(labels[rows], y)
        assert len(set(rows)) == 12  # no image twice
        blocks = y.reshape(3, 4)
        assert np.all(blocks == blocks[:, :1]) and len(set(blocks[:, 0])) == 3
        assert 3 not in y  # skipped: fewer than k images
    assert _same_batches(s[7], PKSampler(images, labels, 3, 4, 20, seed=5)[7])
    assert not _same_batches(s[7], PKSampler(images, labels, 3, 4, 20, seed=6)[7])
    before = s[0]
    s.on_epoch_end()
    assert not _same_batches(before, s[0])
    other = PKSampler(images, labels, 3, 4, 20, seed=5)
    other.on_epoch_end()
    assert _same_batches(s[0], other[0])  # the reshuffle is deterministic too


def test_pk_sampler_validation():
    images, labels = _toy([4, 4, 4])
    with pytest.raises(ValueError, match="k=5"):
        PKSampler(images, labels, p=2, k=5, steps=1)
    with pytest.raises(ValueError, match="p=4"):
        PKSampler(images, labels, p=4, k=2, steps=1)
    with pytest.raises(ValueError, match="match images"):
        PKSampler(images, labels[:-1], p=2, k=2, steps=1)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        PKSampler(images[..., 0], labels, p=2, k=2, steps=1)
    with pytest.raises(ValueError, match="steps"):
        PKSampler(images, labels, p=2, k=2, steps=0)
    with pytest.raises(IndexError):
        PKSampler(images, labels, p=2, k=2, steps=3)[3]


def test_pair_sampler():
    images, labels = _toy([1, 5, 5, 5])  # class 0 can only be a "different" image
    s = PairSampler(images, labels, batch_size=10, steps=30, seed=0)
    seen_zero = False
    for i in range(len(s)):
        (a, b), same = s[i]
        assert a.shape == b.shape == (10, 3, 3, 1) and same.shape == (10,) and same.dtype == np.float32
        ra, rb = _rows(a), _rows(b)
        assert np.array_equal(same, (labels[ra] == labels[rb]).astype(np.float32))
        assert same.sum() == 5
        assert np.all(ra != rb)
        seen_zero |= 0 in labels[ra] or 0 in labels[rb]
    assert seen_zero
    assert _same_batches(s[3], PairSampler(images, labels, 10, 30, seed=0)[3])
    with pytest.raises(ValueError, match=">= 2"):
        PairSampler(images, labels, batch_size=1, steps=1)
    with pytest.raises(ValueError, match="at least one class"):
        PairSampler(*_toy([1, 1, 1]), batch_size=4, steps=1)


def test_pair_sampler_group_negatives():
    images, labels = _toy([3] * 8)
    groups = labels // 4  # two groups ("alphabets") of four classes
    for fraction, expected in ((1.0, 1.0), (0.0, None)):
        s = PairSampler(images, labels, batch_size=20, steps=20, seed=0, groups=groups, group_negatives=fraction)
        within = []
        for i in range(len(s)):
            (a, b), same = s[i]
            ra, rb = _rows(a)[same == 0], _rows(b)[same == 0]
            assert np.all(labels[ra] != labels[rb])
            within.extend(groups[ra] == groups[rb])
        if expected is not None:
            assert np.mean(within) == expected
        else:  # uniform pairs of classes: 3 of the 7 other classes share the group
            assert 0.3 < np.mean(within) < 0.55
    with pytest.raises(ValueError, match="constant within each class"):
        PairSampler(images, labels, 4, 1, groups=np.arange(len(labels)) % 2, group_negatives=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PairSampler(images, labels, 4, 1, groups=groups, group_negatives=1.5)
    with pytest.raises(ValueError, match="at least one group"):
        PairSampler(images, labels, 4, 1, groups=labels, group_negatives=0.5)


def test_episode_sampler_layout():
    images, labels = _toy([5, 5, 5, 5, 5, 3])
    s = EpisodeSampler(images, labels, way=4, shot=2, queries=2, episodes=10, seed=1)
    for i in range(len(s)):
        x, y = s[i]
        assert x.shape == (16, 3, 3, 1) and x.dtype == np.float32
        assert np.array_equal(y, np.repeat(np.arange(4), 4)) and y.dtype == np.int32
        rows = _rows(x).reshape(4, 4)  # row c * (shot + queries) + j
        cls = labels[rows]
        assert np.all(cls == cls[:, :1]) and len(set(cls[:, 0])) == 4
        assert 5 not in cls  # 3 images < shot + queries
        assert len(set(rows.ravel())) == 16  # support and queries are distinct images
    rng = np.random.default_rng(0)
    idx = sample_episode(labels, 3, 1, 4, rng)
    assert idx.shape == (3, 5) and np.all(labels[idx] == labels[idx][:, :1])
    with pytest.raises(ValueError, match="way=6"):
        EpisodeSampler(images, labels, way=6, shot=2, queries=2, episodes=1)
    with pytest.raises(ValueError, match="way=3"):
        sample_episode(labels, 3, 5, 1, rng)


def test_episode_sampler_rotations():
    images, labels = _toy([4, 4, 4])
    s = EpisodeSampler(images, labels, way=6, shot=1, queries=1, episodes=20, seed=0, rotations=True)
    classes_seen = set()
    for i in range(len(s)):
        x, _ = s[i]
        found = []
        for image in x:  # decode (row, rotation) against np.rot90 of every candidate
            match = [(r, k) for r in range(len(images)) for k in range(4) if np.array_equal(image, np.rot90(images[r], k))]
            assert len(match) == 1
            found.append(match[0])
        rows, turns = np.array(found).T.reshape(2, 6, 2)
        assert np.all(turns == turns[:, :1])  # one rotation per episode class
        pairs = {(labels[r[0]], t[0]) for r, t in zip(rows, turns)}
        assert len(pairs) == 6 and np.all(labels[rows] == labels[rows][:, :1])
        classes_seen |= pairs
    assert len({c for c, _ in classes_seen}) == 3 and len({t for _, t in classes_seen}) == 4
    with pytest.raises(ValueError, match="counting rotations"):
        EpisodeSampler(images, labels, way=13, shot=1, queries=1, episodes=1, rotations=True)
    with pytest.raises(ValueError, match="square"):
        EpisodeSampler(np.zeros((12, 3, 4, 1)), labels, way=2, shot=1, queries=1, episodes=1, rotations=True)


def _clustered(n_classes=10, per_class=6):
    """Images (N, 1, 2, 1) holding 2-D points scattered tightly around one centre per class."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n_classes, 2)) * 10
    labels = np.repeat(np.arange(n_classes), per_class)
    images = (centres[labels] + rng.normal(size=(len(labels), 2)) * 0.1)[:, None, :, None]
    return images.astype(np.float32), labels


def test_hard_cluster_sampler():
    images, labels = _clustered()
    n_classes, p, k = 10, 3, 2
    calls = []

    def embed(x):
        calls.append(len(x))
        return x.reshape(len(x), -1)

    s = HardClusterSampler(images, labels, p, k, steps=12, seed=0, embed_fn=embed, refresh_every=4)
    callback = s.refresh_callback()
    centroids = np.array([images[labels == c].reshape(-1, 2).mean(0) for c in range(n_classes)])
    for i in range(len(s)):
        x, y = s[i]
        assert x.shape == (p * k, 1, 2, 1) and np.array_equal(y, np.repeat(y[::k], k))
        if i >= 4:  # after the first refresh
            first = y[0]
            dist = [np.sum((centroids[first] - centroids[c]) ** 2) for c in range(n_classes)]
            assert set(y[k::k]) == set(np.argsort(dist)[1:p])
        callback.on_train_batch_end(i)
    assert calls == [len(images)] * 3  # refreshed after batches 4, 8 and 12

    s = HardClusterSampler(images, labels, p, k, steps=5, embed_fn=None, pool=2)
    assert s.neighbours is None  # no embed_fn: random P x K
    with pytest.raises(ValueError, match="embed_fn"):
        s.refresh()
    calls.clear()
    s.set_embed_fn(embed)
    s.refresh()
    assert sum(calls) == n_classes * 2 and s.neighbours.shape == (n_classes, p - 1)


@pytest.mark.multibackend
def test_hard_cluster_refresh_inside_fit():
    images, labels = _clustered(8, 4)
    model = keras.Sequential([keras.Input((1, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(8)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernels = []

    def embed(x):
        kernels.append(_np_copy(model.layers[-1].kernel))
        return model.predict(x, verbose=0)

    s = HardClusterSampler(images, labels, p=2, k=2, steps=4, embed_fn=embed, refresh_every=2)
    model.fit(s, epochs=2, verbose=0, callbacks=[s.refresh_callback()])
    assert len(kernels) == 4 and s.neighbours is not None
    assert all(np.abs(a - b).max() > 0 for a, b in zip(kernels, kernels[1:]))  # current weights


def _np_copy(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


def test_two_view_sampler():
    images, _ = _toy([12])
    (a, b), dummy = TwoViewSampler(images, batch_size=8, steps=2, seed=0)[1]
    assert np.array_equal(a, b) and len(set(_rows(a))) == 8 and np.all(dummy == 0) and dummy.shape == (8,)
    groups = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])  # 2, 4, 5 have one image
    s = TwoViewSampler(images, batch_size=6, steps=4, seed=0, groups=groups)
    for i in range(len(s)):
        (a, b), _ = s[i]
        ra, rb = _rows(a), _rows(b)
        assert np.array_equal(groups[ra], groups[rb]) and len(set(groups[ra])) == 6
        sizes = np.bincount(groups)[groups[ra]]
        assert np.all((ra != rb) == (sizes > 1))
    with pytest.raises(ValueError, match="7 distinct groups"):
        TwoViewSampler(images, batch_size=7, steps=1, groups=groups)
    with pytest.raises(ValueError, match="match images"):
        TwoViewSampler(images, batch_size=2, steps=1, groups=groups[:-1])


@pytest.mark.multibackend
def test_samplers_feed_fit():
    images, labels = _toy([6, 6, 6, 6])
    images = images / 1000.0
    pk = PKSampler(images, labels, p=2, k=3, steps=3, seed=0)
    model = keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(pk, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and pk.epoch >= 1

    a, b = keras.Input((3, 3, 1)), keras.Input((3, 3, 1))
    dense = keras.layers.Dense(1)
    out = dense(keras.layers.Flatten()(a)) - dense(keras.layers.Flatten()(b))
    siamese = keras.Model([a, b], keras.ops.squeeze(out, -1))
    siamese.compile("sgd", "mse")
    siamese.fit(PairSampler(images, labels, batch_size=4, steps=2), epochs=1, verbose=0)
    siamese.fit(TwoViewSampler(images, batch_size=4, steps=2), epochs=1, verbose=0)


def test_caption_sampler_shows_every_image_once_per_epoch_with_one_of_its_captions():
    images, _ = _toy([7, 6])  # 13 images
    captions = [[i, 13 + i % 2] for i in range(13)]  # its own caption, and one of two it shares
    token_ids = np.arange(15 * 3, dtype=np.int32).reshape(15, 3)
    groups = np.arange(13) // 2  # pairs of identical pictures
    sampler = CaptionSampler(images, captions, token_ids, batch_size=5, groups=groups, seed=3)
    assert len(sampler) == 3
    drawn = {}
    for epoch in range(4):
        sampler.epoch = epoch
        batches = [sampler[i] for i in range(len(sampler))]
        rows = np.concatenate([_rows(x) for (x, _), _ in batches])
        assert sorted(rows) == list(range(13)) and [len(_rows(x)) for (x, _), _ in batches] == [5, 5, 3]
        for (x, tokens), ids in batches:
            r = _rows(x)
            assert np.array_equal(ids[:, 0], groups[r]) and ids.dtype == np.int32
            assert all(c in captions[i] for i, c in zip(r, ids[:, 1]))
            assert np.array_equal(tokens, token_ids[ids[:, 1]])
            drawn.update({(epoch, i): c for i, c in zip(r, ids[:, 1])})
        assert _same_batches(batches[1], sampler[1])  # reproducible
    assert {c >= 13 for c in drawn.values()} == {True, False}  # both kinds of caption are drawn


def test_caption_sampler_views_are_computed_once_when_first_needed():
    calls = []

    def views():
        calls.append(1)
        return np.stack([np.full((4, 2), v, np.float32) for v in (10.0, 20.0)])  # (V=2, N=4, F=2)

    sampler = CaptionSampler(views, [[0], [1], [2], [3]], np.zeros((4, 2), np.int32), batch_size=4, seed=0)
    assert calls == []  # nothing computed until a batch is read
    seen = set()
    for epoch in range(8):
        sampler.epoch = epoch
        (x, _), _ = sampler[0]
        seen |= set(x[:, 0].tolist())
    assert calls == [1] and seen == {10.0, 20.0}
    with pytest.raises(ValueError, match="at least one caption"):
        CaptionSampler(np.zeros((2, 1)), [[0], []], np.zeros((1, 2), np.int32), batch_size=2)
    with pytest.raises(ValueError, match="index the 1 rows"):
        CaptionSampler(np.zeros((1, 1)), [[3]], np.zeros((1, 2), np.int32), batch_size=2)
    with pytest.raises(ValueError, match="rows for 2 images"):
        CaptionSampler(np.zeros((3, 1)), [[0], [0]], np.zeros((1, 2), np.int32), batch_size=2)
