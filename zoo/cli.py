"""`zoo` command line: list, inspect and run published embedders on files; build the report; benchmark.

    zoo list
    zoo info facenet_triplet
    zoo embed facenet_triplet a.jpg b.png --out embeddings.npy [--overwrite]
    zoo verify facenet_triplet a.jpg b.jpg [--json]
    zoo classify protonet --support examples/ query.png [--json]
    zoo zero-shot clip --classes "cat,dog,car" photo.png [--json]
    zoo search protonet query.png --gallery chars/ -k 5 [--json]
    zoo index protonet chars/ --out chars.index [--kind flat|ivf|hnsw] [--overwrite]
    zoo search protonet query.png --index chars.index -k 5 [--json]
    zoo batch-embed protonet 'chars/*.png' --output out/chars [--runner DirectRunner] [Beam pipeline options]
    zoo serve [--host 127.0.0.1] [--port 8000] [--galleries DIR]
    zoo report [--out report] [--quick]
    zoo bench [--entry NAME] [--quick]
    zoo package protonet [--root R] --out dist/
    zoo push protonet hf://owner/protonet        (or file:///srv/zoo/protonet, s3://bucket/protonet ...)
    zoo pull hf://owner/protonet[@rev] [--name NAME]

Files of any size and format go through the entry's preprocessing contract (`zoo.runtime.contract`):
decoded with Pillow, alpha flattened, faces detected and aligned for face entries, resized as the
training data was. `embed`, `verify`, `classify`, `zero-shot` and `search` run on onnxruntime
(zoo.runtime) and import neither Keras nor TensorFlow. Bad input gets one line on stderr and exit
status 1. ENTRY is a name found in the local root (`exports/` in a checkout, or $ZOO_EXPORTS), the installed
entry packages or the cache of pulled entries (`zoo list` shows which), an entry folder, an .onnx file, or a
hub URL (pulled into the cache first; $ZOO_OFFLINE=1 reads the cache only). Outputs never replace a file or
folder the zoo did not write, and replace one it wrote only with --overwrite (`zoo report` and a publish
replace their own folders). A file of a --gallery folder that cannot be read is skipped, with one warning
that counts them. File names print as their own bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from zoo import protocols, registry

ARRAY_SUFFIXES = (".npy", ".npz")


def read_array(path) -> np.ndarray:
    """Images stored as an array: a .npy, or a .npz holding "images" or a single array."""
    from zoo.runtime.files import check_regular_file

    path = Path(path)
    check_regular_file(path, "file")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            if "images" in archive.files:
                return archive["images"]
            if len(archive.files) == 1:
                return archive[archive.files[0]]
            raise ValueError(f"{path}: expected an 'images' array or a single array, got {archive.files}")
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable numpy file ({err})") from None


def _embed_paths(embedder, paths, face_index=0, align=True) -> np.ndarray:
    """(N, D) embeddings of image files and .npy/.npz image arrays, rows in argument order."""
    rows, files = [], []

    def flush():
        if files:
            rows.append(embedder.embed_files(files, face_index=face_index, align=align))
            files.clear()

    for path in map(Path, paths):
        if path.suffix.lower() in ARRAY_SUFFIXES:
            flush()
            rows.append(embedder.embed(read_array(path), face_index=face_index, align=align))
        else:
            files.append(path)
    flush()
    return np.concatenate(rows)


def _embed_gallery(embedder, files, args) -> tuple[np.ndarray, list[Path]]:
    """(N, D) embeddings of the gallery files that could be embedded, and those files, in order; the others are
    skipped with one warning on stderr that counts them (if every file fails, the first error is raised)."""
    skipped = []
    embeddings = embedder.embed_files(files, face_index=args.face, align=not args.no_align, skipped=skipped)
    if skipped:
        print(f"zoo {args.command}: warning: skipped {len(skipped)} of {len(files)} gallery files that could not be "
              f"embedded, e.g. {skipped[0][1]}", file=sys.stderr)
    left_out = {p for p, _ in skipped}
    return embeddings, [f for f in files if f not in left_out]


def _embedder(name, cls=None):
    from zoo.runtime import OnnxEmbedder, entries

    # A folder, an .onnx file, an entry name (KeyError with suggestions when unknown) or a hub URL.
    return (cls or OnnxEmbedder)(entries.resolve(name))


def _print_json(value) -> None:
    print(json.dumps(value, indent=2))


def cmd_list(args):
    if args.markdown:
        print(registry.model_table(), end="")
        return
    from zoo.runtime import entries

    found = entries.found()
    if not found:
        print(f"no published entries in {entries.roots_description()} (run a recipe, e.g. python recipes/protonet.py, "
              "pip install an entry package, or zoo pull URL)")
        return
    rows = [("name", "method", "input", "D", "primary metric", "int8", "dataset", "source")]
    for name in sorted(found):
        card = registry.Card.from_json(found[name][0].folder)
        value = protocols.headline(card)  # few-shot: the mean over episodes
        dataset = card.dataset if len(card.dataset) <= 48 else card.dataset[:45] + "..."
        rows.append((name, card.method, "x".join(map(str, card.input_shape)), str(card.embedding_dim),
                     f"{card.primary_metric} {value:.3f}",
                     "yes" if (card.int8 or {}).get("kept") else "no", dataset, found[name][0].describe()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              .rstrip())


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
    from zoo.runtime import entries

    entry = registry.locate(args.name)
    print(registry.Card.from_json(entry.folder).to_json(), end="")
    # Where it came from goes to stderr, so stdout stays the card's JSON.
    shadowed = [e.describe() for e in entries.found().get(entry.name, [])[1:]] if not entries.is_url(args.name) else []
    print(f"{entry.name}: source {entry.describe()}, {entry.folder}"
          + (f" (also in, not used: {'; '.join(shadowed)})" if shadowed else ""), file=sys.stderr)


def cmd_package(args):
    from zoo import package

    wheel = package.build_wheel(args.name, args.out, root=args.root, version=args.version)
    print(f"wrote {wheel}: pip install it, then zoo list shows {args.name} (source package)")


def cmd_push(args):
    from zoo.runtime import entries, hub

    folder = entries.resolve(args.name)
    if not folder.is_dir():
        raise ValueError(f"{args.name}: push takes an entry (a name or its folder), not a single file")
    count = hub.push(folder, args.url, message=args.message)
    print(f"pushed {args.name} ({count} files, from {folder}) to {args.url}; "
          f"load it with zoo.load({args.url!r}) or zoo pull {args.url}")


def cmd_pull(args):
    from zoo.runtime import hub

    folder = hub.pull(args.url, name=args.name)
    print(f"pulled {folder.parent.name} (revision {folder.name}) from {args.url} into {folder}, every file "
          "checked against card.json")


def cmd_embed(args):
    from zoo.runtime.writes import check_file, write_file

    out = Path(args.out)
    check_file(out, overwrite=args.overwrite)  # before the work, not after it
    embedder = _embedder(args.name)
    embeddings = _embed_paths(embedder, args.images, args.face, not args.no_align)
    write_file(out, lambda f: np.save(f, embeddings), overwrite=args.overwrite)
    print(f"wrote {out}: {embeddings.shape[0]} embeddings of dimension {embeddings.shape[1]}")


def cmd_verify(args):
    embedder = _embedder(args.name)
    if embedder.threshold is None:
        raise ValueError(f"entry {args.name!r} has no verification threshold; pick a verification entry "
                         "(zoo list: protocol verification)")
    a, b = _embed_paths(embedder, [args.a], args.face, not args.no_align), \
        _embed_paths(embedder, [args.b], args.face, not args.no_align)
    if len(a) != len(b):
        raise ValueError(f"expected as many images in {args.a} as in {args.b}, got {len(a)} and {len(b)}")
    same, distances = embedder.verify(a, b, embedded=True)  # (N,), (N,)
    results = [{"same": bool(s), "distance": float(d), "threshold": embedder.threshold}
               for s, d in zip(same, distances)]
    if args.json:
        _print_json(results[0] if len(results) == 1 else results)
        return
    for r in results:
        print(f"{'same' if r['same'] else 'different'}: distance {r['distance']:.4f} "
              f"(threshold {r['threshold']:.4f})")


def support_folder(folder) -> tuple[list[Path], list[str]]:
    """Few-shot examples from a folder of class subfolders: (files, class names), each class's files sorted."""
    from zoo.runtime import image_files

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected DIR/<class>/<images>)")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{folder}: no class subfolders (expected DIR/<class>/<images>, one folder per class)")
    files, labels = [], []
    for c in classes:
        found = image_files(c)
        files += found
        labels += [c.name] * len(found)
    return files, labels


def cmd_classify(args):
    from zoo.runtime import nearest_prototypes

    embedder = _embedder(args.name)
    files, labels = support_folder(args.support)
    support = embedder.embed_files(files, face_index=args.face, align=not args.no_align)  # (S, D)
    queries = _embed_paths(embedder, args.queries, args.face, not args.no_align)  # (Q, D)
    # Confidence: a prototypical network's class probability; distances: to each class prototype.
    classes, predictions, probabilities, distances = nearest_prototypes(support, labels, queries)  # (C,), (Q, ...)
    results = [{"query": query, "class": str(classes[best]), "confidence": float(p[best]),
                "distances": {str(c): float(v) for c, v in zip(classes, d)}}
               for query, best, p, d in zip(args.queries, predictions, probabilities, distances)]
    if args.json:
        _print_json(results)
        return
    for r in results:
        print(f"{r['query']}: {r['class']} (confidence {r['confidence']:.2f})")


def cmd_zero_shot(args):
    from zoo.runtime import OnnxCLIP, read_image

    clip = _embedder(args.name, OnnxCLIP)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if len(classes) < 2:
        raise ValueError(f"--classes: expected at least two comma-separated class names, got {args.classes!r}")
    templates = args.template or (clip.card.get("extras") or {}).get("templates") or ["{}"]
    images = [read_image(path) for path in args.images]
    predictions, probabilities = clip.zero_shot(images, classes, templates)
    results = [{"image": image, "class": classes[int(i)], "probability": float(p.max()),
                "probabilities": {c: float(v) for c, v in zip(classes, p)}}
               for image, i, p in zip(args.images, predictions, probabilities)]
    if args.json:
        _print_json(results)
        return
    for r in results:
        print(f"{r['image']}: {r['class']} (probability {r['probability']:.2f})")


def _index_for(embedder, folder):
    from zoo.runtime.index import GalleryIndex

    index = GalleryIndex.load(folder)
    built_with = index.meta.get("entry") or {}
    if built_with.get("sha256") != embedder.identity["sha256"]:
        raise ValueError(f"--index {folder} was built with entry {built_with.get('name')!r} "
                         f"(sha256 {built_with.get('sha256')}), not {embedder.identity['name']!r} as published now; "
                         "rebuild it with zoo index")
    return index


def cmd_index(args):
    from zoo.runtime import image_files
    from zoo.runtime.index import GalleryIndex

    GalleryIndex.check_save(args.out, overwrite=args.overwrite)  # before the work, not after it
    embedder = _embedder(args.name)
    embeddings, files = _embed_gallery(embedder, image_files(args.gallery), args)
    index = GalleryIndex.build(embeddings, [str(f) for f in files], kind=args.kind, entry=embedder.identity)
    index.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: a {args.kind} index of {len(files)} images of {args.gallery} ({args.name})")


def cmd_search(args):
    from zoo.runtime import image_files, nearest_neighbours

    embedder = _embedder(args.name)
    queries = _embed_paths(embedder, args.queries, args.face, not args.no_align)
    if args.index:
        index = _index_for(embedder, args.index)
        labels = index.paths
        indices, distances = index.search(queries, min(args.k, len(labels)))
    else:
        if not args.gallery:
            raise ValueError("give --gallery DIR (or .npy) or --index DIR (built by zoo index)")
        gallery_path = Path(args.gallery)
        if gallery_path.is_dir():
            gallery, files = _embed_gallery(embedder, image_files(gallery_path), args)
            labels = [str(f) for f in files]
        elif gallery_path.is_file():
            gallery = embedder.as_embeddings(read_array(gallery_path))  # images or (N, D) embeddings
            labels = [f"{gallery_path}[{i}]" for i in range(len(gallery))]
        else:
            raise FileNotFoundError(f"{gallery_path}: no gallery folder or .npy file")
        indices, distances = nearest_neighbours(queries, gallery, min(args.k, len(labels)))
    results = [{"query": q, "neighbours": [{"path": labels[i], "distance": float(d)}
                                           for i, d in zip(row, dist) if i >= 0]}
               for q, row, dist in zip(args.queries, indices, distances)]
    if args.json:
        _print_json(results)
        return
    for r in results:
        print(f"{r['query']}:")
        for rank, n in enumerate(r["neighbours"], 1):
            print(f"  {rank:>2}. {n['path']}  distance {n['distance']:.4f}")


def cmd_batch_embed(args):
    import logging

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        # Beam logs a worker's failure with its traceback before raising it (printed here as one line), and
        # unknown options before they are refused: keep its log off stderr unless asked.
        beam_log = logging.getLogger("apache_beam")
        beam_log.addHandler(logging.NullHandler())
        beam_log.propagate = False
    from zoo import batch_embed

    result = batch_embed.run(args.name, args.glob, args.output, runner=args.runner, pipeline_args=args.pipeline_args,
                             model_uri=args.model_uri, face_index=args.face, align=not args.no_align,
                             batch_size=args.batch_size, overwrite=args.overwrite)
    print(f"wrote {result['output']}: {result['embedded']} embeddings of dimension {result['embedding_dim']} "
          f"({args.name}, {args.runner})")
    if result["failed"]:
        # The other files are embedded; the failed ones are listed (path, error), not dropped.
        print(f"zoo batch-embed: error: {result['failed']} file(s) could not be embedded, e.g. {result['first_error']}; "
              f"all are listed in {result['errors']}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args):
    from zoo.serve import serve

    if args.galleries and not Path(args.galleries).is_dir():
        raise FileNotFoundError(f"--galleries {args.galleries}: no such folder")
    serve(host=args.host, port=args.port, root=args.root, galleries=args.galleries, max_pixels=args.max_pixels,
          allowed_hosts=args.allow_host or ())


def cmd_report(args):
    from zoo import report

    results = report.run(out=args.out, quick=args.quick)
    return 1 if any("error" in r for r in results) else 0


def cmd_bench(args):
    from zoo import bench

    bench.run(args.entry, out=args.out, quick=args.quick)


def _face_options(p) -> None:
    p.add_argument("--face", type=int, default=0, metavar="K",
                   help="face entries: which face of a photo with several, by size (0 = the largest)")
    p.add_argument("--no-align", action="store_true",
                   help="face entries: cut the card's fixed crop instead of detecting and aligning the face")


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
    p = sub.add_parser("package", help="build the wheel keras-embedding-zoo-<name> holding one entry")
    p.add_argument("name")
    p.add_argument("--out", required=True, help="folder for the wheel (e.g. dist/)")
    p.add_argument("--root", default=None, help="local root to take the entry from (default: exports/ or $ZOO_EXPORTS)")
    p.add_argument("--version", default=None, help="the package version (default: from the card's created time)")
    p.set_defaults(fn=cmd_package)
    p = sub.add_parser("push", help="upload an entry to a hub: hf://owner/repo[@rev], file://, s3://, gs:// ...")
    p.add_argument("name", help="an entry name (zoo list) or an entry folder")
    p.add_argument("url")
    p.add_argument("--message", default=None, help="commit message (hf://)")
    p.set_defaults(fn=cmd_push)
    p = sub.add_parser("pull", help="download an entry from a hub into the cache, every file sha256-checked")
    p.add_argument("url", help="hf://owner/repo[@rev], file:///..., https://..., s3://..., gs://...")
    p.add_argument("--name", default=None, help="the name to keep it under (default: the card's name)")
    p.set_defaults(fn=cmd_pull)
    p = sub.add_parser("embed", help="embed image files of any size and save them as .npy")
    p.add_argument("name")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or .npy/.npz image arrays")
    p.add_argument("--out", required=True, help="output .npy file, (N, D) float32, rows in argument order")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    _face_options(p)
    p.set_defaults(fn=cmd_embed)
    p = sub.add_parser("verify", help="same identity or not, with the card's threshold")
    p.add_argument("name")
    p.add_argument("a", help="first image file")
    p.add_argument("b", help="second image file")
    p.add_argument("--json", action="store_true", help='print {"same", "distance", "threshold"}')
    _face_options(p)
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("classify", help="few-shot: nearest class prototype of a folder of examples")
    p.add_argument("name")
    p.add_argument("queries", nargs="+", help="image files to classify")
    p.add_argument("--support", required=True, help="folder of class subfolders, a few images each")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per query")
    _face_options(p)
    p.set_defaults(fn=cmd_classify)
    p = sub.add_parser("zero-shot", help="CLIP: classify images among class names given as text")
    p.add_argument("name")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat,dog,car"')
    p.add_argument("--template", action="append", help="prompt with {} for the class (repeatable; default: the "
                   "card's prompt ensemble)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    p.set_defaults(fn=cmd_zero_shot)
    p = sub.add_parser("search", help="nearest gallery images of each query")
    p.add_argument("name")
    p.add_argument("queries", nargs="+", help="query image files")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gallery", help="folder of images, or .npy of images or (N, D) embeddings")
    where.add_argument("--index", help="a gallery index folder built by zoo index (faiss)")
    p.add_argument("-k", type=int, default=5, help="neighbours per query")
    p.add_argument("--json", action="store_true", help='print [{"query", "neighbours": [{"path", "distance"}]}]')
    _face_options(p)
    p.set_defaults(fn=cmd_search)
    p = sub.add_parser("index", help="embed a folder of images into a faiss gallery index for zoo search --index")
    p.add_argument("name")
    p.add_argument("gallery", help="folder of images")
    p.add_argument("--out", required=True, help="index folder to write (new or empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the gallery index at --out (only a folder zoo index wrote is ever replaced)")
    p.add_argument("--kind", choices=("flat", "ivf", "hnsw"), default="flat",
                   help="flat: exact; ivf / hnsw: approximate, for large galleries")
    _face_options(p)
    p.set_defaults(fn=cmd_index)
    p = sub.add_parser("batch-embed", allow_abbrev=False,
                       help="embed the files of a glob with Apache Beam (RunInference, ONNX); Parquet shards",
                       description="Apache Beam pipeline: RunInference with the ONNX model handler over the files "
                       "matched by GLOB, through the entry's preprocessing contract; writes PREFIX-SSSSS-of-NNNNN.parquet "
                       "(path, embedding) and PREFIX.errors-SSSSS-of-NNNNN.parquet (path, error) for files that could "
                       "not be embedded (exit status 1 if any). Options it does not know, after ENTRY and GLOB, go to "
                       "Beam (e.g. --project=P --region=R --temp_location=gs://B/tmp, --flink_master=HOST:8081).")
    p.add_argument("name")
    p.add_argument("glob", help="files to embed, quoted: 'photos/*.jpg', 'gs://bucket/images/*.png'")
    p.add_argument("--output", required=True, help="prefix of the Parquet shards (local, gs://, s3:// ...)")
    p.add_argument("--runner", default="DirectRunner",
                   help="Beam runner: DirectRunner (default), DataflowRunner, FlinkRunner, SparkRunner, PrismRunner")
    p.add_argument("--model-uri", default=None,
                   help="where workers read the entry's ONNX graph (default: the local exports/ file); sha256-checked")
    p.add_argument("--batch-size", type=int, default=64, help="largest RunInference batch")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the shards of an earlier run under --output first (else they are refused)")
    p.add_argument("--verbose", action="store_true", help="show Beam's log (job ids, progress, worker errors)")
    _face_options(p)
    p.set_defaults(fn=cmd_batch_embed, pipeline_args=[])
    p = sub.add_parser("serve", help="the web page and its JSON API (verify, classify, search)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--root", default=None, help="zoo root (default: exports/ or $ZOO_EXPORTS)")
    p.add_argument("--galleries", default=None, help="folder whose subfolders the page may search as galleries")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="decode budget of one uploaded image, width x height (default 25000000)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="a host name requests may name besides loopback and --host (repeatable)")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("report", help="evaluate every entry on its held-out protocol; write report/index.html")
    p.add_argument("--out", default="report", help="output folder (new, empty, or a report zoo report wrote)")
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
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "pipeline_args"):  # only batch-embed passes options on (to Beam)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.pipeline_args = unknown
    # A file name that is not valid in the filesystem's encoding reaches Python with lone surrogates (PEP 383):
    # written with surrogateescape it comes out as its own bytes, where a strict encoding would fail. JSON
    # output escapes it (\udcff) and stays valid.
    streams = [(s, s.errors) for s in (sys.stdout, sys.stderr) if hasattr(s, "reconfigure")]
    for stream, _ in streams:
        stream.reconfigure(errors="surrogateescape")
    try:
        return args.fn(args) or 0
    except (ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        for stream, errors in streams:
            stream.reconfigure(errors=errors)


if __name__ == "__main__":
    sys.exit(main())
