"""`zoo` command line: list, inspect and run published embedders; build the report; benchmark.

    zoo list
    zoo info facenet_triplet
    zoo embed facenet_triplet a.png b.jpg batch.npy --out embeddings.npy
    zoo verify facenet_triplet a.png b.png
    zoo search protonet --gallery chars/ query.png -k 5
    zoo report [--out report] [--quick]
    zoo bench [--entry NAME] [--quick]

`embed`, `verify` and `search` run on onnxruntime (zoo.runtime) and import neither Keras nor
TensorFlow. The zoo root is `exports/`, or $ZOO_EXPORTS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from zoo import registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")


def read_images(path, input_shape) -> np.ndarray:
    """Read images from a .npy/.npz array or a PNG/JPEG file, as float32 (B, H, W, C) pixels 0..255.

    Grey files feed colour models by repeating the channel; colour files feed grey models by
    averaging RGB. The size is not changed: a file of another size is an error.

    Args:
        path: str | Path. the file; a .npz holds its images under "images" or as its only array.
        input_shape: tuple[int, int, int]. (H, W, C) the embedder expects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "images" in archive.files:
                x = archive["images"]
            elif len(archive.files) == 1:
                x = archive[archive.files[0]]
            else:
                raise ValueError(f"{path}: expected an 'images' array or a single array, got {archive.files}")
    elif suffix in IMAGE_SUFFIXES:
        import matplotlib.image

        x = matplotlib.image.imread(path)
        # matplotlib reads PNG as float 0..1 and JPEG as uint8 0..255.
        if x.dtype.kind == "f":
            x = np.round(x * 255.0)
        x = _match_channels(x, input_shape[2], path)[None]
    else:
        raise ValueError(f"{path}: expected a {', '.join(ARRAY_SUFFIXES + IMAGE_SUFFIXES)} file")
    return np.asarray(x)


def _match_channels(x, channels, path):
    if x.ndim == 3 and x.shape[2] == 4:
        x = x[..., :3]  # alpha dropped
    if channels == 1:
        return x.mean(axis=2, keepdims=True) if x.ndim == 3 else x[..., None]
    if channels == 3 and x.ndim == 2:
        return np.repeat(x[..., None], 3, axis=2)
    if x.ndim == 3 and x.shape[2] == channels:
        return x
    raise ValueError(f"{path}: image of shape {x.shape} cannot feed a model with {channels} channels")


def _read_many(paths, input_shape) -> np.ndarray:
    arrays = []
    for p in paths:
        x = read_images(p, input_shape)
        if x.ndim == len(input_shape):  # one image in a .npy
            x = x[None]
        arrays.append(x.astype(np.float32))
    return np.concatenate(arrays)


def _embedder(name):
    from zoo.runtime import OnnxEmbedder

    registry.info(name)  # KeyError with suggestions for an unknown name
    return OnnxEmbedder(registry.exports_dir() / name)


def _gallery_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + (".npy",))
    if not files:
        raise ValueError(f"{directory}: expected image files ({', '.join(IMAGE_SUFFIXES)}, .npy), found none")
    return files


def cmd_list(args):
    if args.markdown:
        print(registry.model_table(), end="")
        return
    names = registry.list_models()
    if not names:
        print(f"no published entries in {registry.exports_dir()} (run a recipe, e.g. python recipes/protonet.py)")
        return
    print(f"{'name':<22}{'method':<18}{'dataset':<28}{'protocol':<17}{'primary metric':<34}{'D':>5}")
    for name in names:
        card = registry.info(name)
        value = card.metrics[card.primary_metric]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        shown = f"{card.primary_metric}={value:.4f}" if number else card.primary_metric
        print(f"{name:<22}{card.method:<18}{card.dataset:<28}{card.protocol:<17}{shown:<34}{card.embedding_dim:>5}")


def cmd_readme(args):
    path = Path(args.path)
    text = path.read_text()
    begin, end = "<!-- models:begin -->\n", "<!-- models:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"{path}: expected the markers {begin.strip()} and {end} around the model table")
    head, rest = text.split(begin, 1)
    path.write_text(head + begin + registry.model_table() + end + rest.split(end, 1)[1])
    print(f"{path}: model table regenerated from {len(registry.list_models())} cards")


def cmd_info(args):
    print(registry.info(args.name).to_json(), end="")


def cmd_embed(args):
    embedder = _embedder(args.name)
    embeddings = embedder.embed(_read_many(args.images, embedder.input_shape))
    np.save(args.out, embeddings)
    print(f"wrote {args.out}: {embeddings.shape[0]} embeddings of dimension {embeddings.shape[1]}")


def cmd_verify(args):
    embedder = _embedder(args.name)
    a = _read_many([args.a], embedder.input_shape)
    b = _read_many([args.b], embedder.input_shape)
    same, distances = embedder.verify(a, b)
    for s, d in zip(same, distances):
        verdict = "same" if s else "different"
        print(f"{verdict}: distance {d:.4f} (threshold {embedder.threshold:.4f})")


def cmd_search(args):
    embedder = _embedder(args.name)
    gallery_path = Path(args.gallery)
    if gallery_path.is_dir():
        files = _gallery_files(gallery_path)
        labels = [f.name for f in files]
        gallery = _read_many(files, embedder.input_shape)
    elif gallery_path.is_file():
        gallery = np.load(gallery_path, allow_pickle=False)  # images or (N, D) embeddings
        labels = [str(i) for i in range(len(gallery))]
    else:
        raise FileNotFoundError(f"no gallery folder or .npy file at {gallery_path}")
    queries = _read_many(args.queries, embedder.input_shape)
    indices, distances = embedder.search(queries, gallery, k=args.k)
    for q, (row, dist) in enumerate(zip(indices, distances)):
        print(f"query {q}:")
        for rank, (i, d) in enumerate(zip(row, dist), 1):
            print(f"  {rank:>2}. {labels[i]}  distance {d:.4f}")


def cmd_report(args):
    from zoo import report

    results = report.run(out=args.out, quick=args.quick)
    return 1 if any("error" in r for r in results) else 0


def cmd_bench(args):
    from zoo import bench

    bench.run(args.entry, out=args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Keras embedding zoo: published embedders.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the published entries")
    p.add_argument("--markdown", action="store_true", help="the README's model table")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("readme", help="regenerate the README's model table from the cards")
    p.add_argument("--path", default=str(Path(__file__).resolve().parent.parent / "README.md"))
    p.set_defaults(fn=cmd_readme)
    p = sub.add_parser("info", help="print an entry's card.json")
    p.add_argument("name")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("embed", help="embed images with onnxruntime and save them as .npy")
    p.add_argument("name")
    p.add_argument("images", nargs="+", help="PNG/JPEG files or .npy/.npz arrays")
    p.add_argument("--out", required=True, help="output .npy file, (B, D) float32")
    p.set_defaults(fn=cmd_embed)
    p = sub.add_parser("verify", help="same identity or not, with the card's threshold")
    p.add_argument("name")
    p.add_argument("a", help="first image (or .npy batch)")
    p.add_argument("b", help="second image (or .npy batch of the same size)")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("search", help="nearest gallery images of each query")
    p.add_argument("name")
    p.add_argument("queries", nargs="+", help="query images")
    p.add_argument("--gallery", required=True, help="folder of images, or .npy of images or (N, D) embeddings")
    p.add_argument("-k", type=int, default=5, help="neighbours per query")
    p.set_defaults(fn=cmd_search)
    p = sub.add_parser("report", help="evaluate every entry on its held-out protocol; write report/index.html")
    p.add_argument("--out", default="report", help="output folder")
    p.add_argument("--quick", action="store_true", help="fewer episodes and images (minutes -> seconds)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("bench", help="inference benchmark: keras, tf.function, SavedModel, onnxruntime")
    p.add_argument("--entry", action="append", help="entry name (repeatable); default: all")
    p.add_argument("--out", default="benchmarks/results/inference.json")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.set_defaults(fn=cmd_bench)
    return parser


def main(argv=None) -> int:
    """Run the `zoo` command line; returns the exit status (errors print one line, status 1;
    `report` returns 1 when an entry failed).

    Args:
        argv: list[str] | None. arguments (default: sys.argv[1:]).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
