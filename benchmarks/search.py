"""Gallery search at scale: the index kinds of zoo.runtime.index (faiss) against exact search.

    python benchmarks/search.py [--sizes 100000 1000000] [--dim 128] [--queries 1000]

For each gallery size, synthetic unit vectors at D=128 (seeded) with the structure of embeddings: a mixture
of 1,000 Gaussian clusters in a 16-dimensional latent space, mapped by a random linear map to 128 dimensions,
plus isotropic noise (5% of the signal's scale), then L2-normalised; 1,000 queries drawn the same way. For
each kind (flat, ivf, hnsw) and each search setting (ivf nprobe, hnsw efSearch): build time, queries per
second (all queries in one call, faiss on all cores) and recall@10 against the exact top 10 (the flat index,
which gives numpy's exact ranking). Prints a table headed by the CPU; writes benchmarks/results/search.json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from zoo.runtime import cpu_features
from zoo.runtime.index import KINDS, GalleryIndex


LATENT = 16


def embeddings_like(n, dim, rng, mixture):
    """n unit vectors: a Gaussian-mixture latent (LATENT dims) through a fixed linear map, plus 5% noise."""
    centres, spread, lift = mixture
    z = centres[rng.integers(0, len(centres), n)] + spread * rng.normal(size=(n, LATENT))
    x = z @ lift
    x += 0.05 * x.std() * rng.normal(size=x.shape)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/search.json")
    args = parser.parse_args(argv)
    results = {"cpu": cpu_features(), "dim": args.dim, "queries": args.queries, "sizes": {}}
    print(f"CPU: {results['cpu']['model']} ({' '.join(results['cpu']['flags'])})")
    print(f"{'gallery':>9} {'kind':>14} {'build s':>8} {'queries/s':>10} {'recall@10':>9} {'x exact q/s':>11}")
    for n in args.sizes:
        rng = np.random.default_rng(n)
        mixture = (rng.normal(size=(1000, LATENT)), 0.5, rng.normal(size=(LATENT, args.dim)))
        gallery, queries = embeddings_like(n, args.dim, rng, mixture), embeddings_like(args.queries, args.dim, rng,
                                                                                       mixture)
        rows, exact = {}, None
        for kind in KINDS:
            start = time.perf_counter()
            index = GalleryIndex.build(gallery, np.arange(n).astype(str), kind=kind)
            built = time.perf_counter() - start
            settings = {"flat": [None], "ivf": [8, 16, 32], "hnsw": [64, 128, 256]}[kind]  # 16, 128: defaults
            for setting in settings:
                if kind == "ivf":
                    index.index.nprobe = setting
                elif kind == "hnsw":
                    index.index.hnsw.efSearch = setting
                start = time.perf_counter()
                found, _ = index.search(queries, k=10)
                seconds = time.perf_counter() - start
                if exact is None:
                    exact = found  # flat comes first: the exact top 10
                recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))
                name = kind if setting is None else f"{kind} {'nprobe' if kind == 'ivf' else 'ef'}={setting}"
                rows[name] = {"build_seconds": round(built, 2),
                              "queries_per_second": round(args.queries / seconds, 1), "recall@10": recall}
            del index
        for kind, row in rows.items():
            row["speedup_over_exact"] = round(row["queries_per_second"] / rows["flat"]["queries_per_second"], 1)
            print(f"{n:>9} {kind:>14} {row['build_seconds']:>8.1f} {row['queries_per_second']:>10.1f} "
                  f"{row['recall@10']:>9.3f} {row['speedup_over_exact']:>11.1f}", flush=True)
        results["sizes"][str(n)] = rows
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
