"""A gallery index: the embeddings of a folder of images in a faiss index, beside the paths they came from.

    index = GalleryIndex.build(embeddings, paths, kind="hnsw", entry=card_of_the_embedder)
    index.save("gallery.index/")                                 # overwrite=True replaces an index there
    index = GalleryIndex.load("gallery.index/")
    indices, distances = index.search(query_embeddings, k=5)     # nearest first, Euclidean
    index.paths[indices[0, 0]]

Kinds (faiss, over L2-normalised float32 embeddings, so Euclidean and cosine rankings agree):
    flat    exact search (IndexFlatL2): the same ranking as `zoo.runtime.nearest_neighbours`
    ivf     inverted lists (IndexIVFFlat): nlist = 4 sqrt(N) k-means cells (trained on <= 64 points per cell),
            `nprobe` (16) of them searched
    hnsw    a navigable small-world graph (IndexHNSWFlat, M = 32), `ef_search` candidates per query

A saved index is a folder: `index.faiss`, `paths.json` (one path per row) and `index.json` (kind, count,
dimension, search settings, the entry's name and the sha256 of its image graph, and the sha256 of the two
other files, checked at load). A save replaces nothing but an index folder, and that only when asked (`save`).
faiss is imported when an index is built or loaded (`pip install faiss-cpu`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .kernels import l2_normalize
from .writes import check_folder, write_folder

__all__ = ["GalleryIndex", "KINDS"]

KINDS = ("flat", "ivf", "hnsw")
INDEX_FILES = ("index.faiss", "paths.json", "index.json")  # all an index folder holds
FORMAT = "zoo-gallery-index"  # index.json's "format" (older indexes have none)
HNSW_M = 32
# Defaults chosen with benchmarks/search.py: at 1M embedding-like vectors (D=128) on 2 cores, recall@10 stays
# above 0.99 while searching an order of magnitude faster than exact search.
IVF_NPROBE = 16


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("the gallery index needs faiss: pip install faiss-cpu") from None
    return faiss


def _normalised(x) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    if x.ndim != 2 or not len(x):
        raise ValueError(f"expected (N, D) embeddings with N >= 1, got shape {x.shape}")
    return l2_normalize(x)


def _own_files(folder: Path) -> tuple:
    """The files of the gallery index in `folder`, recognised by its index.json; FileExistsError if none."""
    try:
        meta = json.loads((folder / "index.json").read_text())
        known = isinstance(meta, dict) and isinstance(meta.get("files"), dict) and "kind" in meta
    except (OSError, ValueError):
        known = False
    if not known:
        raise FileExistsError(f"{folder}: not empty and not a gallery index (no index.json written by zoo index); "
                              "refusing to write the index into it (choose a new or an empty folder)")
    return INDEX_FILES


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class GalleryIndex:
    """A faiss index over gallery embeddings, with the gallery's paths and what made them (see module doc)."""

    def __init__(self, index, paths, meta):
        self.index, self.paths, self.meta = index, list(paths), dict(meta)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @classmethod
    def build(cls, embeddings, paths, *, kind="flat", entry=None, nprobe=None, ef_search=128, seed=0):
        """Index (N, D) embeddings, row i from paths[i].

        Args:
            embeddings: (N, D) float. L2-normalised here (again).
            paths: sequence of N str. where each row came from.
            kind: str. "flat", "ivf" or "hnsw".
            entry: dict | None. {"name", "sha256"} of the embedder, recorded and checked by `zoo search --index`.
            nprobe: int | None. ivf: cells searched per query (default IVF_NPROBE).
            ef_search: int. hnsw: candidates kept per query.
            seed: int. ivf: the k-means seed.
        """
        faiss = _faiss()
        x = _normalised(embeddings)
        n, dim = x.shape
        if len(paths) != n:
            raise ValueError(f"expected one path per embedding ({n}), got {len(paths)}")
        meta = {"kind": kind, "count": int(n), "dim": int(dim), "entry": entry}
        if kind == "flat":
            index = faiss.IndexFlatL2(dim)
        elif kind == "ivf":
            nlist = int(max(1, min(n // 39, round(4 * np.sqrt(n)))))  # faiss wants >= 39 points per cell
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
            index.cp.seed = seed
            # k-means on a seeded sample of 64 points per cell: plenty for the centroids, minutes less at 1M.
            sample = np.random.default_rng(seed).choice(n, min(n, 64 * nlist), replace=False)
            index.train(x[np.sort(sample)])
            index.nprobe = int(nprobe or min(nlist, IVF_NPROBE))
            meta.update(nlist=nlist, nprobe=int(index.nprobe))
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, HNSW_M)
            index.hnsw.efSearch = int(ef_search)
            meta.update(m=HNSW_M, ef_search=int(ef_search))
        else:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        index.add(x)
        return cls(index, [str(p) for p in paths], meta)

    def search(self, queries, k=5):
        """The k nearest gallery rows of each query: (indices int64 (Q, k), distances float32 (Q, k)), nearest
        first, Euclidean between L2-normalised embeddings. Approximate kinds may return -1 (no neighbour found)."""
        q = _normalised(queries)
        if q.shape[1] != self.meta["dim"]:
            raise ValueError(f"expected queries of dimension {self.meta['dim']}, got {q.shape[1]}")
        if not 1 <= int(k) <= self.meta["count"]:
            raise ValueError(f"expected 1 <= k <= gallery size {self.meta['count']}, got k={k}")
        squared, indices = self.index.search(q, int(k))
        return indices.astype(np.int64), np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)

    def save(self, folder, overwrite=False) -> Path:
        """Write the index folder atomically (see `zoo.runtime.writes.write_folder`): a new or empty folder, or,
        with `overwrite`, one holding a zoo index and nothing else; anything else there is refused.

        Args:
            folder: str | Path. the index folder.
            overwrite: bool. replace a gallery index that is already there.
        """
        faiss = _faiss()

        def fill(tmp):
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            (tmp / "paths.json").write_text(json.dumps(self.paths, indent=0) + "\n")
            files = {name: _sha256(tmp / name) for name in INDEX_FILES[:2]}
            meta = {**self.meta, "format": FORMAT, "files": files}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2) + "\n")

        write_folder(folder, fill, _own_files, what="a gallery index", overwrite=overwrite)
        return Path(folder)

    @staticmethod
    def check_save(folder, overwrite=False) -> None:
        """Raise FileExistsError naming `folder` where `save(folder, overwrite)` would refuse it (to check
        before embedding a gallery).

        Args:
            folder: str | Path. the index folder.
            overwrite: bool. as for `save`.
        """
        check_folder(folder, _own_files, what="a gallery index", overwrite=overwrite)

    @classmethod
    def load(cls, folder):
        """Read an index folder, checking its files against the sha256 in index.json."""
        faiss = _faiss()
        folder = Path(folder)
        if not (folder / "index.json").is_file():
            raise FileNotFoundError(f"{folder}: no gallery index (index.json) there; build one with zoo index")
        meta = json.loads((folder / "index.json").read_text())
        meta.pop("format", None)
        for name, digest in meta.pop("files").items():
            if not (folder / name).is_file() or _sha256(folder / name) != digest:
                raise ValueError(f"{folder / name}: missing or modified (sha256 differs from index.json); "
                                 "rebuild the index with zoo index")
        paths = json.loads((folder / "paths.json").read_text())
        index = faiss.read_index(str(folder / "index.faiss"))
        if index.ntotal != len(paths) or index.ntotal != meta["count"]:
            raise ValueError(f"{folder}: the index holds {index.ntotal} rows, paths.json {len(paths)}")
        if meta["kind"] == "ivf":
            index.nprobe = meta["nprobe"]
        elif meta["kind"] == "hnsw":
            index.hnsw.efSearch = meta["ef_search"]
        return cls(index, paths, meta)
