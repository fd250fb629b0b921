"""Batch embedding on Apache Beam: image files matched by a glob -> Parquet shards of (path, embedding).

    zoo batch-embed facenet_triplet 'photos/*.jpg' --output out/faces
    zoo batch-embed clip 'gs://bucket/images/*.png' --output gs://bucket/emb/clip --runner DataflowRunner \
        --model-uri gs://bucket/zoo/clip/image_encoder.onnx --project=P --region=R --temp_location=gs://bucket/tmp

The pipeline, on any Beam runner:

    MatchFiles(glob) -> Reshuffle -> ReadMatches -> PrepareImage -> RunInference -> WriteToParquet(PREFIX)
                                                        \\-> errors ------------------> WriteToParquet(PREFIX.errors)

PrepareImage decodes each file with Pillow (`zoo.runtime.files.read_image`) and turns it into the model input by the
card's preprocessing contract (`zoo.runtime.contract.prepare`: alpha, face detection and alignment for face entries,
colour, ink, fit, resize), exactly as `OnnxEmbedder.embed_files` does; RunInference batches the prepared images and
runs the entry's image graph with Beam's ONNX model handler (onnxruntime). Multi-tower entries (clip) use their image
tower.

Files that cannot be embedded (not an image, truncated, no face for a face entry) do not vanish: each becomes a row
(`path`, `error`) of `PREFIX.errors-SSSSS-of-NNNNN.parquet`, the other files are embedded all the same, and `run`
reports how many failed (the CLI then exits with status 1). Embeddings are `PREFIX-SSSSS-of-NNNNN.parquet`, columns
`path` (string, as the filesystem matched it) and `embedding` (list<float32>, L2-normalised, D values). Rows are
in no particular order. Workers need the `zoo` package (the MTCNN face detector ships in `zoo.runtime`) and
read the ONNX graph from `model_uri`, whose sha256 each worker checks against the card.
"""

from __future__ import annotations

import difflib
import logging
import re

import pyarrow as pa
import pyarrow.parquet as pq

from zoo import registry
from zoo.runtime import OnnxEmbedder, cards, contract
from zoo.runtime.embedder import session


def _import_beam():
    """Import Beam without its import-time log line: when the [gcp] extra is absent (it is needed on Dataflow only),
    Beam's BigQuery client module calls logging.warning("apitools not found ...") on the root logger, which also
    installs a stderr handler on an unconfigured root logger. A NullHandler held during the import swallows both."""
    root = logging.getLogger()
    hold = logging.NullHandler() if not root.handlers else None
    if hold:
        root.addHandler(hold)
    try:
        import apache_beam
        import apache_beam.io.fileio
        import apache_beam.io.parquetio
        import apache_beam.ml.inference.base
        import apache_beam.ml.inference.onnx_inference  # noqa: F401
    finally:
        if hold:
            root.removeHandler(hold)
    return apache_beam


beam = _import_beam()
from apache_beam.io import fileio  # noqa: E402
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference  # noqa: E402
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

__all__ = ["SCHEMA", "ERRORS_SCHEMA", "EntryOnnxModelHandler", "PrepareImage", "BatchEmbed", "run"]

# Parquet schemas of the two outputs.
SCHEMA = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32()))])
ERRORS_SCHEMA = pa.schema([("path", pa.string()), ("error", pa.string())])
SHARDS = "-*-of-*.parquet"  # glob of the shards Beam writes: -SSSSS-of-NNNNN plus our suffix
# RunInference batches between these sizes (Beam's BatchElements grows the batch within them while the time per
# element falls): one image per onnxruntime call forgoes the graph's batching; 64 is OnnxEmbedder's own batch size.
DEFAULT_BATCH_SIZE = 64
MIN_BATCH_SIZE = 8


class EntryOnnxModelHandler(OnnxModelHandlerNumpy):
    """Beam's ONNX model handler for a zoo entry's image graph: loads it only after checking its sha256.

    Its batches are prepared images (H, W, C) float32, stacked to the graph's `images` (B, H, W, C); each
    PredictionResult's inference is one row (D,) float32 of the graph's `embeddings`.

    Args:
        model_uri: str. where workers read the ONNX file (a local path, gs://, s3://, hdfs:// ...).
        sha256: str. the digest the entry's card records for that file.
        min_batch_size: int. smallest batch RunInference forms (a bundle's remainder may be smaller).
        max_batch_size: int. largest batch.
    """

    def __init__(self, model_uri: str, sha256: str, *, min_batch_size: int, max_batch_size: int):
        super().__init__(model_uri, providers=None, min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._sha256 = sha256

    def load_model(self):
        with FileSystems.open(self._model_uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            model = f.read()
        actual = cards.sha256(model)
        if actual != self._sha256:
            raise ValueError(f"sha256 mismatch for {self._model_uri}: expected {self._sha256} (the entry's card), "
                             f"got {actual}; copy the entry's ONNX file there unchanged")
        return session(model, None)  # onnxruntime with every available provider, as zoo.runtime does


class PrepareImage(beam.DoFn):
    """A matched file -> (path, model input float32 (H, W, C)) by the card's contract, or a row of the errors output.

    Args:
        preprocessing: dict. the card's preprocessing contract (`OnnxEmbedder.preprocessing`).
        input_shape: (H, W, C) of the model.
        face_index: int. face entries: which detected face, by area (0 = largest).
        align: bool. face entries: detect and align (True), or cut the card's fixed crop (False).
    """

    ERRORS = "errors"

    def __init__(self, preprocessing: dict, input_shape, face_index: int = 0, align: bool = True):
        self.preprocessing, self.input_shape = preprocessing, tuple(input_shape)
        self.face_index, self.align = face_index, align

    def process(self, readable_file):
        path = readable_file.metadata.path
        data = readable_file.read()  # an I/O error here is raised, for the runner to retry the bundle
        try:
            x = contract.prepare_file(path, self.preprocessing, self.input_shape, data=data,
                                      face_index=self.face_index, align=self.align)  # float32 (H, W, C)
        except ValueError as err:  # not an image, truncated, corrupt, no face (NoFaceError): the file's own fault
            yield beam.pvalue.TaggedOutput(self.ERRORS, {"path": path, "error": str(err)})
            return
        yield path, x


def _row(keyed):
    path, result = keyed
    return {"path": path, "embedding": result.inference}  # (D,) float32


class BatchEmbed(beam.PTransform):
    """glob (a PBegin) -> writes the embeddings and errors Parquet shards under `output`.

    Args:
        glob: str. files to embed, on any filesystem Beam knows (local, gs://, s3://, hdfs://).
        output: str. prefix of the shards: `{output}-SSSSS-of-NNNNN.parquet` and `{output}.errors-...parquet`.
        handler: EntryOnnxModelHandler. the entry's image graph.
        prepare: PrepareImage. the entry's contract.
    """

    def __init__(self, glob: str, output: str, handler: EntryOnnxModelHandler, prepare: PrepareImage):
        super().__init__()
        self.glob, self.output, self.handler, self.prepare = glob, output, handler, prepare

    def expand(self, pbegin):
        prepared = (
            pbegin
            | "Match" >> fileio.MatchFiles(self.glob)
            # One glob is one element: without a reshuffle its matches stay on one worker.
            | "Spread" >> beam.Reshuffle()
            | "Read" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "Prepare" >> beam.ParDo(self.prepare).with_outputs(PrepareImage.ERRORS, main="images"))
        (prepared.images
         | "Embed" >> RunInference(KeyedModelHandler(self.handler))
         | "Rows" >> beam.Map(_row)
         | "Write" >> beam.io.WriteToParquet(self.output, SCHEMA, file_name_suffix=".parquet"))
        (prepared[PrepareImage.ERRORS]
         | "WriteErrors" >> beam.io.WriteToParquet(self.output + ".errors", ERRORS_SCHEMA, file_name_suffix=".parquet"))


def _pipeline_options(runner: str, pipeline_args) -> PipelineOptions:
    """Beam's options from the command line; an option no Beam runner knows is refused (Beam would only log it)."""
    options = PipelineOptions([f"--runner={runner}", *(pipeline_args or [])])
    known = options.get_all_options()  # every option of every runner Beam has, by dest name
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    if unknown:
        hints = [f"--{u} (did you mean --{close[0]}?)" if (close := difflib.get_close_matches(u, known, 1)) else f"--{u}"
                 for u in unknown]
        raise ValueError(f"unknown pipeline option(s): {', '.join(hints)}")
    return options


def _shards(pattern: str) -> list[str]:
    return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)


def _parquet(path: str, read=pq.read_table):
    """`read` (pq.read_table or pq.read_metadata) of a Parquet file on any filesystem Beam knows (seekable files)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return read(f)


def run(name: str, glob: str, output: str, *, runner: str = "DirectRunner", pipeline_args=None,
        model_uri: str | None = None, face_index: int = 0, align: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE, overwrite: bool = False, root=None) -> dict:
    """Embed every file matched by `glob` with entry `name` on a Beam runner; waits for the pipeline to finish.

    Returns {"embedded": rows written, "failed": files that could not be embedded, "first_error": str | None,
    "output": glob of the embedding shards, "errors": glob of the error shards, "embedding_dim": D}.

    Args:
        name: str. a published entry (`zoo list`).
        glob: str. image files to embed (quote it in a shell).
        output: str. prefix of the Parquet shards; refused if shards of an earlier run are there.
        runner: str. Beam runner: DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, PrismRunner ...
        pipeline_args: list[str] | None. further Beam pipeline options, e.g. ["--project=P", "--region=R"].
        model_uri: str | None. where workers read the entry's ONNX graph (default: the local export folder's file);
            its sha256 is checked against the card on every worker.
        face_index: int. face entries: which detected face, by area (0 = largest).
        align: bool. face entries: detect and align (True), or cut the card's fixed crop (False).
        batch_size: int. largest RunInference batch.
        overwrite: bool. delete the shards of an earlier run under `output` first: only files named as Beam names
            them, PREFIX[.errors]-SSSSS-of-NNNNN.parquet; any other match of the shards' glob is refused.
        root: str | Path | None. zoo root (default: exports/ or $ZOO_EXPORTS).
    """
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    folder = registry.entry_folder(name, root)  # KeyError with suggestions for an unknown name
    embedder = OnnxEmbedder(folder)  # checks the image graph's sha256 here, before any worker starts
    sha256 = embedder.identity["sha256"]
    model_uri = model_uri or str(folder / cards.tower_file(embedder.card, "images", folder))
    options = _pipeline_options(runner, pipeline_args)
    if not _shards(glob):
        raise ValueError(f"{glob}: no files match")
    outputs, errors = output + SHARDS, output + ".errors" + SHARDS
    earlier = _shards(outputs) + _shards(errors)
    if earlier:
        # Shards of an earlier run would mix with this run's (and its counts); only files named as Beam names
        # this writer's shards are ever deleted.
        own = re.compile(re.escape(output) + r"(\.errors)?-\d{5,}-of-\d{5,}\.parquet")
        foreign = [p for p in earlier if not own.fullmatch(p)]
        if foreign:
            raise FileExistsError(f"{foreign[0]}: named like a shard, but not as batch-embed names them; refusing "
                                  "to write shards beside it (choose another --output)")
        if not overwrite:
            raise FileExistsError(f"{earlier[0]}: shards of an earlier run are there ({len(earlier)} files); pass "
                                  "--overwrite to delete them first, or choose another --output")
        FileSystems.delete(earlier)

    handler = EntryOnnxModelHandler(model_uri, sha256, min_batch_size=min(MIN_BATCH_SIZE, int(batch_size)),
                                    max_batch_size=int(batch_size))
    prepare = PrepareImage(embedder.preprocessing, embedder.input_shape, face_index, align)
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "BatchEmbed" >> BatchEmbed(glob, output, handler, prepare)
    pipeline.run().wait_until_finish()

    # Count from the shards themselves (no runner-specific metrics); the pre-check above means they are this run's.
    embedded = sum(_parquet(p, pq.read_metadata).num_rows for p in _shards(outputs))  # footers only
    failed, first_error = 0, None
    for path in _shards(errors):
        table = _parquet(path)
        failed += table.num_rows
        if first_error is None and table.num_rows:
            first_error = table.column("error")[0].as_py()
    return {"embedded": embedded, "failed": failed, "first_error": first_error, "output": outputs,
            "errors": errors, "embedding_dim": embedder.embedding_dim}
