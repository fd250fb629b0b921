"""Batch samplers for metric learning, few-shot and self-supervised training (keras PyDatasets).

Every sampler draws batch `i` of epoch `e` from `numpy.random.default_rng((seed, e, i))`, so the
same seed gives the same batches in any order of access, and `on_epoch_end` moves to the next
epoch's (equally reproducible) draws. `fit()` visits the indices of an epoch in an order shuffled
by Python's `random` (seeded by `keras.utils.set_random_seed`; pass `shuffle=False` to keep it).
Images leave every sampler as float32 raw pixel values (0..255): preprocessing lives in the
model graph. Extra keyword arguments (workers, use_multiprocessing, max_queue_size) go to
`keras.utils.PyDataset`.
"""

import keras
import numpy as np


def _check_images_labels(images, labels):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be ({len(images)},) to match images, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return images, labels


def _positive(**values):
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _members(labels, min_count):
    """Classes with at least `min_count` rows, and the row indices of each of them."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    rows = np.split(order, np.cumsum(counts)[:-1])
    keep = np.flatnonzero(counts >= min_count)
    return classes[keep], [rows[c] for c in keep]


def _float(images):
    return np.asarray(images, np.float32)


class _Sampler(keras.utils.PyDataset):
    """Shared epoch counter and per-batch generator."""

    def __init__(self, steps, seed, **kwargs):
        super().__init__(**kwargs)
        _positive(steps=steps)
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.steps = int(steps)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1

    def _rng(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch index {index} out of range [0, {self.steps})")
        return np.random.default_rng((self.seed, self.epoch, int(index)))


def _pk_rows(rng, members, class_ids, k):
    """Row indices (P*K,) of K distinct images from each class in `class_ids`, class-major."""
    return np.concatenate([rng.choice(members[c], k, replace=False) for c in class_ids])


class PKSampler(_Sampler):
    """P classes x K images per batch: (images (P*K, H, W, C) float32, labels (P*K,) int32).

    Classes with fewer than K images are skipped, so a batch never holds the same image twice.

    Args:
      images: array (N, H, W, C). Images, raw pixel values.
      labels: array (N,) int. Class of each image.
      p: int. Classes per batch.
      k: int. Images per class.
      steps: int. Batches per epoch.
      seed: int. Seed of every draw.

    Reference:
      Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017.
    """

    def __init__(self, images, labels, p, k, steps, seed=0, **kwargs):
        super().__init__(steps, seed, **kwargs)
        self.images, self.labels = _check_images_labels(images, labels)
        _positive(p=p, k=k)
        self.p, self.k = int(p), int(k)
        self.classes, self.members = _members(self.labels, self.k)
        if len(self.classes) < self.p:
            largest = np.unique(self.labels, return_counts=True)[1].max(initial=0)
            raise ValueError(
                f"p={p} classes with >= k={k} images are needed, found {len(self.classes)} "
                f"(largest class has {largest} images)"
            )

    def __getitem__(self, index):
        rng = self._rng(index)
        class_ids = rng.choice(len(self.classes), self.p, replace=False)
        rows = _pk_rows(rng, self.members, class_ids, self.k)
        return _float(self.images[rows]), self.labels[rows].astype(np.int32)


class PairSampler(_Sampler):
    """Pairs for a Siamese network: ((a, b), same) with half same-class and half different.

    `batch_size // 2` pairs are two distinct images of one class (drawn uniformly among classes
    with >= 2 images); the rest are one image from each of two distinct classes. Positions are
    shuffled within the batch. Shapes: a, b (B, H, W, C) float32; same (B,) float32 (1 = same).

    With `groups` (e.g. the alphabet of each Omniglot character), a `group_negatives` fraction
    of the different-class pairs is drawn from two classes of one group: the hard negatives
    that a within-alphabet test (Lake's one-shot runs) asks the model to tell apart.

    Args:
      images: array (N, H, W, C). Images, raw pixel values.
      labels: array (N,) int. Class of each image.
      batch_size: int. Pairs per batch, >= 2.
      steps: int. Batches per epoch.
      seed: int. Seed of every draw.
      groups: array (N,) int or None. Group of each image, constant within a class.
      group_negatives: float in [0, 1]. Fraction of different-class pairs drawn within a group
        (only groups of >= 2 classes); the others pair two classes drawn uniformly.

    Reference:
      Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image Recognition", 2015.
    """

    def __init__(self, images, labels, batch_size, steps, seed=0, groups=None, group_negatives=0.0, **kwargs):
        super().__init__(steps, seed, **kwargs)
        self.images, self.labels = _check_images_labels(images, labels)
        _positive(batch_size=batch_size)
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (half same, half different), got {batch_size}")
        self.batch_size = int(batch_size)
        self.classes, self.members = _members(self.labels, 1)
        self.pair_classes = np.flatnonzero([len(m) >= 2 for m in self.members])
        if len(self.classes) < 2 or len(self.pair_classes) == 0:
            raise ValueError("pairs need >= 2 classes and at least one class with >= 2 images")
        if not 0.0 <= group_negatives <= 1.0:
            raise ValueError(f"group_negatives must be in [0, 1], got {group_negatives!r}")
        self.group_negatives = float(group_negatives) if groups is not None else 0.0
        self.group_classes = []  # per group of >= 2 classes: the indices (into self.classes) of its classes
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != self.labels.shape:
                raise ValueError(f"groups must be ({len(self.labels)},) to match labels, got shape {groups.shape}")
            class_group = np.array([groups[m[0]] for m in self.members])
            if any(len(np.unique(groups[m])) != 1 for m in self.members):
                raise ValueError("groups must be constant within each class")
            for g in np.unique(class_group):
                in_group = np.flatnonzero(class_group == g)
                if len(in_group) >= 2:
                    self.group_classes.append(in_group)
            if self.group_negatives > 0 and not self.group_classes:
                raise ValueError("group_negatives needs at least one group with >= 2 classes")

    def __getitem__(self, index):
        rng = self._rng(index)
        n_same = self.batch_size // 2
        n_diff = self.batch_size - n_same
        a, b = [], []
        for c in rng.choice(self.pair_classes, n_same):
            i, j = rng.choice(self.members[c], 2, replace=False)
            a.append(i)
            b.append(j)
        within = rng.random(n_diff) < self.group_negatives
        for hard in within:
            pool = self.group_classes[rng.integers(len(self.group_classes))] if hard else len(self.classes)
            c1, c2 = rng.choice(pool, 2, replace=False)
            a.append(rng.choice(self.members[c1]))
            b.append(rng.choice(self.members[c2]))
        same = np.concatenate([np.ones(n_same, np.float32), np.zeros(n_diff, np.float32)])
        order = rng.permutation(self.batch_size)
        a, b = np.asarray(a)[order], np.asarray(b)[order]
        return (_float(self.images[a]), _float(self.images[b])), same[order]


def sample_episode(labels, way, shot, queries, rng):
    """Row indices of one N-way K-shot episode, (way, shot + queries), class-major.

    Row [c, j] is an image of the c-th drawn class; j < shot are support, the rest queries.
    Classes with fewer than shot + queries images are never drawn. For evaluation on fixed
    images or embeddings: `x = data[idx.ravel()]`, `y = np.repeat(np.arange(way), shot + queries)`.

    Args:
      labels: array (N,) int. Class of each row.
      way: int. Classes per episode.
      shot: int. Support images per class.
      queries: int. Query images per class.
      rng: numpy.random.Generator. Source of the draw.
    """
    members = _members(np.asarray(labels), shot + queries)[1]
    if len(members) < way:
        raise ValueError(f"way={way} classes with >= {shot + queries} images needed, found {len(members)}")
    return _episode_rows(rng, members, way, shot + queries)


def _episode_rows(rng, members, way, n):
    class_ids = rng.choice(len(members), way, replace=False)
    return _pk_rows(rng, members, class_ids, n).reshape(way, n)


class EpisodeSampler(_Sampler):
    """N-way K-shot episodes: (x (way*(shot+queries), H, W, C) float32, y (way*(shot+queries),) int32).

    Fixed class-major layout: row c*(shot+queries) + j is episode class c; j < shot are its
    support images, the rest its queries; y holds the episode-local class ids 0..way-1. With
    `rotations=True` every (class, rotation by k*90 degrees) is a distinct class, as in Snell et
    al.'s Omniglot training (square images only). Classes with fewer than shot + queries images
    are never drawn.

    Args:
      images: array (N, H, W, C). Images, raw pixel values.
      labels: array (N,) int. Class of each image.
      way: int. Classes per episode.
      shot: int. Support images per class.
      queries: int. Query images per class.
      episodes: int. Episodes per epoch.
      seed: int. Seed of every draw.
      rotations: bool. Treat the four 90-degree rotations of a class as four classes.

    Reference:
      Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017.
    """

    def __init__(self, images, labels, way, shot, queries, episodes, seed=0, rotations=False, **kwargs):
        super().__init__(episodes, seed, **kwargs)
        self.images, labels = _check_images_labels(images, labels)
        _positive(way=way, shot=shot, queries=queries)
        if rotations and self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"rotations need square images, got {self.images.shape[1:3]}")
        self.way, self.shot, self.queries = int(way), int(shot), int(queries)
        self.rotations = bool(rotations)
        # Expanded row i*4 + k is image i turned k times; its class is label*4 + k.
        if rotations:
            labels = np.repeat(labels.astype(np.int64), 4) * 4 + np.tile(np.arange(4), len(labels))
        self.members = _members(labels, self.shot + self.queries)[1]
        n_classes = len(self.members)
        if n_classes < self.way:
            raise ValueError(
                f"way={way} classes with >= shot+queries={shot + queries} images needed, "
                f"found {n_classes}" + (" (counting rotations)" if rotations else "")
            )

    def __getitem__(self, index):
        rng = self._rng(index)
        idx = _episode_rows(rng, self.members, self.way, self.shot + self.queries).ravel()
        if self.rotations:
            rows, turns = idx // 4, idx % 4
            x = np.stack([np.rot90(self.images[r], t, axes=(0, 1)) for r, t in zip(rows, turns)])
        else:
            x = self.images[idx]
        y = np.repeat(np.arange(self.way, dtype=np.int32), self.shot + self.queries)
        return _float(x), y


class HardClusterSampler(_Sampler):
    """P x K batches of mutually close classes: a random seed class and its P-1 nearest classes.

    Class centroids are the mean embeddings of (up to `pool`) images per class under `embed_fn`;
    `refresh()` recomputes them. In `fit()`, pass `callbacks=[sampler.refresh_callback()]`: it
    refreshes after every `refresh_every` training batches, once the model's current weights
    are in place (JAX keeps them outside the model during an epoch, so an embedding computed
    from inside `__getitem__` would read stale or deleted buffers there). Until the first
    refresh, or without `embed_fn`, batches are random P x K. Classes with fewer than K images
    are skipped. Output as `PKSampler`.

    Args:
      images, labels, p, k, steps, seed: as `PKSampler`.
      embed_fn: callable or None. float32 images (n, H, W, C) -> numpy embeddings (n, D), e.g.
        `lambda x: model.embedder.predict(x, verbose=0)`.
      refresh_every: int. Training batches between centroid refreshes.
      pool: int or None. Images per class embedded for its centroid (drawn once with the
        sampler's seed); None = all.

    Reference:
      Smirnov et al., "Doppelganger Mining for Face Representation Learning", ICCV 2017 workshops
      (batches of look-alike identities as hard examples).
    """

    def __init__(
        self, images, labels, p, k, steps, seed=0, embed_fn=None, refresh_every=100, pool=None, **kwargs
    ):
        super().__init__(steps, seed, **kwargs)
        self.pk = PKSampler(images, labels, p, k, steps, seed)
        _positive(refresh_every=refresh_every)
        if pool is not None:
            _positive(pool=pool)
        self.refresh_every = int(refresh_every)
        self.embed_fn = embed_fn
        rng = np.random.default_rng((self.seed, 2**32 - 1, 0))  # an epoch no batch ever reaches
        self.pool_rows = [rng.permutation(m)[:pool] for m in self.pk.members]
        self.neighbours = None  # (n_classes, P-1) nearest classes by centroid

    def set_embed_fn(self, embed_fn):
        """Use a new embedding function from the next refresh on.

        Args:
          embed_fn: callable or None. float32 images (n, H, W, C) -> numpy embeddings (n, D).
        """
        self.embed_fn = embed_fn

    def refresh(self):
        """Recompute the class centroids and each class's P-1 nearest classes now."""
        if self.embed_fn is None:
            raise ValueError("refresh() needs an embed_fn (pass one or call set_embed_fn)")
        rows = np.concatenate(self.pool_rows)
        chunks = [rows[i : i + 512] for i in range(0, len(rows), 512)]  # bounded memory per call
        emb = np.concatenate([np.asarray(self.embed_fn(_float(self.pk.images[c]))) for c in chunks])
        sizes = np.array([len(r) for r in self.pool_rows])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        centroids = np.add.reduceat(emb.astype(np.float64), starts) / sizes[:, None]  # (C, D)
        sq = (centroids**2).sum(1)
        dist = sq[:, None] + sq[None, :] - 2 * centroids @ centroids.T  # (C, C)
        np.fill_diagonal(dist, np.inf)
        self.neighbours = np.argsort(dist, axis=1, kind="stable")[:, : self.pk.p - 1]

    def refresh_callback(self):
        """A keras Callback that calls `refresh()` after every `refresh_every` training batches."""
        return _RefreshCallback(self)

    def __getitem__(self, index):
        if self.neighbours is None:
            return self.pk[index]
        rng = self._rng(index)
        first = rng.integers(len(self.pk.classes))
        class_ids = np.concatenate([[first], self.neighbours[first]])
        rows = _pk_rows(rng, self.pk.members, class_ids, self.pk.k)
        return _float(self.pk.images[rows]), self.pk.labels[rows].astype(np.int32)

    def on_epoch_end(self):
        super().on_epoch_end()
        self.pk.on_epoch_end()


class _RefreshCallback(keras.callbacks.Callback):
    """Refreshes a HardClusterSampler every `refresh_every` training batches."""

    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.sampler.embed_fn is None or self.batches % self.sampler.refresh_every:
            return
        self.model  # on JAX, reading Callback.model writes the in-flight weights back first
        self.sampler.refresh()


class TwoViewSampler(_Sampler):
    """Two views per instance for contrastive learning: ((x_a, x_b), dummy zeros (B,) float32).

    Without groups, x_b is x_a (SimCLR: the model augments each copy on its own). With groups,
    each batch holds B distinct groups, and x_b is another image of x_a's group when it has one
    (MICLe: a group is e.g. one Omniglot character drawn by different people; only the group
    ids are used, never class names).

    Args:
      images: array (N, H, W, C). Images, raw pixel values.
      batch_size: int. Instances (pairs of views) per batch.
      steps: int. Batches per epoch.
      seed: int. Seed of every draw.
      groups: array (N,) int or None. Group id of each image.

    Reference:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020;
      Azizi et al., "Big Self-Supervised Models Advance Medical Image Classification", 2021.
    """

    def __init__(self, images, batch_size, steps, seed=0, groups=None, **kwargs):
        super().__init__(steps, seed, **kwargs)
        _positive(batch_size=batch_size)
        self.batch_size = int(batch_size)
        ids = np.arange(len(np.asarray(images))) if groups is None else groups
        self.images, self.groups = _check_images_labels(images, ids)
        self.members = None if groups is None else _members(self.groups, 1)[1]
        count = len(self.images) if groups is None else len(self.members)
        if count < self.batch_size:
            what = "images" if groups is None else "groups"
            raise ValueError(f"batch_size={batch_size} distinct {what} needed, found {count}")

    def __getitem__(self, index):
        rng = self._rng(index)
        dummy = np.zeros(self.batch_size, np.float32)
        if self.members is None:
            x = _float(self.images[rng.choice(len(self.images), self.batch_size, replace=False)])
            return (x, x), dummy
        a, b = [], []
        for g in rng.choice(len(self.members), self.batch_size, replace=False):
            pair = rng.choice(self.members[g], min(2, len(self.members[g])), replace=False)
            a.append(pair[0])
            b.append(pair[-1])
        return (_float(self.images[a]), _float(self.images[b])), dummy


class CaptionSampler(_Sampler):
    """Image-caption batches for CLIP: each epoch shows every image once, in a seeded random order, with one of
    its captions (and one of its views) drawn at random.

    Yields `((inputs, token_ids), ids)`: inputs (B, ...) float32, token_ids (B, L) int32, and ids (B, 2) int32
    of (image group, caption) per row, so that `zoo.methods.clip.CLIP` counts rows that share an image (a
    duplicate picture under another name) or a caption (a category name) as matches. The last batch of an
    epoch holds the remainder.

    Args:
      inputs: array (N, ...) of images or features, or a callable returning (V, N, ...): V views of each
        (e.g. a locked tower's features of V augmented copies), called once, at the first batch, so a run
        that trains nothing never computes them.
      captions: sequence of N int sequences. The captions of each image, as rows of `token_ids`.
      token_ids: array (C, L) int32. Every caption, tokenized.
      batch_size: int. Rows per batch.
      groups: array (N,) int or None. Images with equal group are the same picture (default: all distinct).
      seed: int. Seed of the order and the draws.
    """

    def __init__(self, inputs, captions, token_ids, batch_size, groups=None, seed=0, **kwargs):
        _positive(batch_size=batch_size)
        self.captions = [np.asarray(c, np.int64) for c in captions]
        if not self.captions or min(len(c) for c in self.captions) == 0:
            raise ValueError("every image needs at least one caption")
        self.token_ids = np.asarray(token_ids, np.int32)
        if max(int(c.max()) for c in self.captions) >= len(self.token_ids):
            raise ValueError(f"caption ids must index the {len(self.token_ids)} rows of token_ids")
        n = len(self.captions)
        self.groups = np.arange(n) if groups is None else np.asarray(groups, np.int64)
        if len(self.groups) != n:
            raise ValueError(f"groups has {len(self.groups)} rows for {n} images")
        self._make_views, self._views = (inputs, None) if callable(inputs) else (None, _float(inputs)[None])
        if self._views is not None and self._views.shape[1] != n:
            raise ValueError(f"inputs has {self._views.shape[1]} rows for {n} images with captions")
        self.batch_size = int(batch_size)
        super().__init__(-(-n // self.batch_size), seed, **kwargs)

    def views(self):
        """(V, N, ...) float32: the views of every image (computed on first use for a callable)."""
        if self._views is None:
            views = _float(self._make_views())
            if views.ndim < 2 or views.shape[1] != len(self.captions):
                raise ValueError(f"inputs() gave shape {views.shape}; expected (V, {len(self.captions)}, ...)")
            self._views = views
        return self._views

    def __getitem__(self, index):
        self._rng(index)  # checks the index
        n = len(self.captions)
        rng = np.random.default_rng((self.seed, self.epoch))  # one draw per epoch: order, view, caption
        order, view, pick = rng.permutation(n), rng.integers(0, 2**31, n), rng.random(n)
        rows = order[index * self.batch_size:(index + 1) * self.batch_size]
        views = self.views()
        chosen = np.array([self.captions[r][int(pick[r] * len(self.captions[r]))] for r in rows])
        ids = np.stack([self.groups[rows], chosen], axis=1).astype(np.int32)
        return (views[view[rows] % len(views), rows], self.token_ids[chosen]), ids
