"""The gallery index (zoo.runtime.index, faiss): flat = numpy's exact ranking; the approximate kinds' recall;
atomic save, checked load."""

import json

import numpy as np
import pytest

from zoo.runtime import nearest_neighbours
from zoo.runtime.index import GalleryIndex

pytest.importorskip("faiss")


def clustered(n, dim=32, centres=50, seed=0):
    """Unit vectors around `centres` random directions: a gallery with structure, as embeddings have."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_gives_numpys_exact_ranking():
    gallery, queries = clustered(600), clustered(40, seed=1)
    index = GalleryIndex.build(gallery, [f"g{i}" for i in range(600)], kind="flat")
    got_i, got_d = index.search(queries, k=10)
    want_i, want_d = nearest_neighbours(queries, gallery, k=10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_find_most_true_neighbours(kind):
    gallery, queries = clustered(5000), clustered(100, seed=2)
    index = GalleryIndex.build(gallery, range(5000), kind=kind)
    got, _ = index.search(queries, k=10)
    want, _ = nearest_neighbours(queries, gallery, k=10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall >= 0.9, recall
    own, distance = index.search(gallery[:50], k=1)
    assert list(own[:, 0]) == list(range(50)) and distance.max() < 1e-3  # each vector finds itself


def test_save_load_round_trip_and_checks(tmp_path):
    gallery = clustered(300)
    built = GalleryIndex.build(gallery, [f"p{i}.png" for i in range(300)], kind="hnsw",
                               entry={"name": "x", "sha256": "ab"})
    folder = built.save(tmp_path / "gallery.index")
    built.save(folder, overwrite=True)  # replacing an index leaves one folder, no leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.index"]
    loaded = GalleryIndex.load(folder)
    assert loaded.paths == built.paths and loaded.meta["entry"] == {"name": "x", "sha256": "ab"}
    np.testing.assert_array_equal(loaded.search(gallery[:5], 3)[0], built.search(gallery[:5], 3)[0])
    paths = json.loads((folder / "paths.json").read_text())
    (folder / "paths.json").write_text(json.dumps(paths[::-1]))
    with pytest.raises(ValueError, match="paths.json: missing or modified"):
        GalleryIndex.load(folder)
    with pytest.raises(FileNotFoundError, match="no gallery index"):
        GalleryIndex.load(tmp_path / "none")
    with pytest.raises(ValueError, match="unknown index kind"):
        GalleryIndex.build(gallery, range(300), kind="lsh")
    with pytest.raises(ValueError, match="1 <= k <= gallery size 300"):
        built.search(gallery[:1], k=301)
