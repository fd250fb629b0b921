"""`OnnxEmbedder`: a published image embedder on onnxruntime, through its card's preprocessing contract.

The onnxruntime session and its batched runner live here too, so every caller (the int8 gate, Beam's model
handler, `OnnxCLIP`'s text tower) runs a graph the same way.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import contract
from .cards import CARD_METADATA_KEY, read_card, read_checked, resolve, tower_file
from .cpu import int8_cpu_class
from .kernels import l2_normalize, nearest_neighbours, verify_embeddings

__all__ = ["OnnxEmbedder", "session", "run_batches", "check_numeric"]


def session(model: bytes, providers=None) -> ort.InferenceSession:
    """An onnxruntime session of an ONNX graph.

    Args:
        model: bytes. the graph, as read (and checked) from its file.
        providers: list[str] | None. onnxruntime execution providers (default: all available).
    """
    if providers is None:
        providers = ort.get_available_providers()
    return ort.InferenceSession(model, providers=list(providers))


def run_batches(session, inputs, batch_size, input_name=None, output_name=None) -> np.ndarray:
    """Run a session over `inputs` in batches of `batch_size` rows; float32 (N, D), rows in order.

    Args:
        session: onnxruntime.InferenceSession. the graph.
        inputs: array (N, ...). the graph's input, of its dtype.
        batch_size: int. rows per onnxruntime call.
        input_name: str | None. the graph input to feed (default: the first).
        output_name: str | None. the graph output to return (default: the first).
    """
    input_name = input_name or session.get_inputs()[0].name
    output_name = output_name or session.get_outputs()[0].name
    out = [
        session.run([output_name], {input_name: inputs[i : i + batch_size]})[0]
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(out).astype(np.float32, copy=False)  # (N, D)


def check_numeric(array: np.ndarray, what: str) -> None:
    """Raise a ValueError unless `array` holds finite uint8, int or float pixel values (or embeddings).

    Args:
        array: ndarray. the input.
        what: str. how the message names it, e.g. "images".
    """
    if array.dtype.kind not in "uif":
        raise ValueError(
            f"expected {what} as an array of uint8 or float pixel values, got dtype {array.dtype}"
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or Inf; expected finite pixel values 0..255")


class OnnxEmbedder:
    """Embed images with a published ONNX embedder: (B, H, W, C) pixels -> (B, D) L2-normalised.

    Args:
        path: str | Path. an export folder (with card.json), a `.onnx` file, an entry name found by
            `zoo.runtime.entries` (the local root, installed entry packages, the cache of pulled entries), or a
            hub URL (`hf://owner/repo[@rev]`, `file://`, `https://` ...), pulled into the cache and checked first.
        verify: bool. check the sha256 of the ONNX file against card.json before loading it.
        batch_size: int. images per onnxruntime call inside `embed`.
        providers: list[str] | None. onnxruntime execution providers (default: all available).
        int8: bool. run the statically quantised graph (`card["int8"]["file"]`) instead of the fp32 one.
            int8 answers depend on the CPU's instructions, so on a CPU class (`int8_cpu_class()`) that the
            card's int8 gate was not measured on, the int8 graph is first checked against fp32 on the
            entry's golden inputs; if a cosine falls below the card's `min_cosine`, it warns
            (RuntimeWarning) and runs the fp32 graph instead. `self.int8` says which graph runs and
            `self.int8_check` what the check measured (None where the card vouches for this CPU class).
    """

    def __init__(self, path, *, verify=True, batch_size=64, providers=None, int8=False):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.int8, self.int8_check = False, None
        path = resolve(path)
        if path.is_dir():
            card = read_card(path)
            relpath = tower_file(card, "images", path)
            model = read_checked(path, relpath, card, verify)
            self._session = session(model, providers)
            if int8:
                self._use_int8(path, card, verify, providers)
        elif path.is_file():
            if int8:
                raise ValueError("int8=True needs an export folder; pass the .int8.onnx file itself")
            folder, card = path.parent, None
            if (folder / "card.json").is_file():
                # A file inside an export folder is still checked against its card.
                card = read_card(folder)
                model = read_checked(folder, path.name, card, verify)
            else:
                model = path.read_bytes()
            self._session = session(model, providers)
        else:
            raise FileNotFoundError(f"no export folder or ONNX file at {path}")
        if card is None:
            meta = self._session.get_modelmeta().custom_metadata_map
            card = json.loads(meta[CARD_METADATA_KEY]) if CARD_METADATA_KEY in meta else {}
        self.card = card
        self.path = path
        graph_input = self._session.get_inputs()[0]
        self._input_name = graph_input.name
        self._output_name = self._session.get_outputs()[0].name
        shape = card.get("input_shape") or graph_input.shape[1:]
        if not all(isinstance(n, int) for n in shape) or len(shape) != 3:
            raise ValueError(f"cannot tell the input shape (H, W, C) of {path}: {shape}")
        self.input_shape = tuple(int(n) for n in shape)
        dim = card.get("embedding_dim") or self._session.get_outputs()[0].shape[-1]
        self.embedding_dim = int(dim)

    def _use_int8(self, folder, card, verify, providers) -> None:
        """Switch to the int8 graph, after checking it against fp32 where the card has not vouched for this CPU."""
        record = card.get("int8") or {}
        if not record.get("kept"):
            raise ValueError(f"{folder} ships no int8 graph: its int8 gate "
                             f"{'was not run' if not record else 'failed'} (card.json int8: {record or None}); "
                             "use int8=False")
        tower = next(iter(card["towers"]))
        relpath = record.get("file") or f"{tower}.int8.onnx"
        graph = session(read_checked(folder, relpath, card, verify), providers)
        cpu_class = int8_cpu_class()
        if cpu_class in record.get("validated_on", []):
            self._session, self.int8 = graph, True
            return
        with np.load(io.BytesIO(read_checked(folder, "golden.npz", card, verify))) as golden:
            inputs, fp32 = golden[f"{tower}__inputs"], golden[f"{tower}__embeddings"]
        int8 = graph.run(None, {graph.get_inputs()[0].name: inputs})[0]
        cosine = float(np.min(np.sum(l2_normalize(int8) * l2_normalize(fp32), axis=1)))
        minimum = float(record.get("min_cosine", 0.98))
        self.int8_check = {"cpu_class": cpu_class, "golden_min_cosine": cosine, "min_cosine": minimum}
        if cosine >= minimum:
            self._session, self.int8 = graph, True
            return
        warnings.warn(f"{folder / relpath}: on this CPU ({cpu_class}; the card validated int8 on "
                      f"{record.get('validated_on', [])}) the int8 graph disagrees with fp32 on the golden inputs "
                      f"(least cosine {cosine:.3f} < {minimum}); running the fp32 graph instead", RuntimeWarning,
                      stacklevel=3)

    @property
    def identity(self) -> dict:
        """{"name", "sha256"}: the entry and the sha256 of its image graph, which a gallery index records."""
        relpath = tower_file(self.card, "images", self.path) if self.card.get("towers") else None
        return {"name": self.card.get("name"), "sha256": (self.card.get("files") or {}).get(relpath)}

    @property
    def threshold(self):
        """Verification threshold on the Euclidean distance of L2-normalised embeddings, or None."""
        return self.card.get("threshold")

    @property
    def preprocessing(self) -> dict:
        """The card's preprocessing contract (see `zoo.runtime.contract`); cards older than the contract
        get plain Pillow BOX resizing with the aspect ratio stretched."""
        h, w, _ = self.input_shape
        return self.card.get("preprocessing") or {"resize": {"method": "box", "size": [h, w]}, "fit": "stretch"}

    def prepare(self, images, *, face_index=0, align=True, names=None) -> np.ndarray:
        """Images of any size -> the model input by the card's contract: float32 (B, H, W, C).

        A (B, H, W, C) array (or (B, H, W) for grey models) of the model's own shape is taken as prepared;
        a list of arrays, or one image of another size, goes through `contract.prepare` image by image
        (alpha flattened, face detected and aligned, colour, ink, aspect ratio, resize).

        Args:
            images: array | list of arrays. uint8 or float pixel values 0..255.
            face_index: int. face entries: which detected face, by area (0 = largest).
            align: bool. face entries: detect and align (True), or cut the card's fixed crop (False).
            names: list[str] | None. how errors name each image (default "image i").
        """
        h, w, c = self.input_shape
        if not isinstance(images, (list, tuple)):
            x = np.asarray(images)
            check_numeric(x, "images")
            if x.ndim == 4 and x.shape[1:] == (h, w, c) or c == 1 and x.ndim == 3 and x.shape[1:] == (h, w):
                if x.shape[0] == 0:
                    raise ValueError(f"expected at least one image, got an empty batch of shape {x.shape}")
                x = x.reshape(len(x), h, w, c).astype(np.float32, copy=False)
                return np.stack([contract.prepare(i, self.preprocessing, self.input_shape) for i in x]) \
                    if self.preprocessing.get("ink") else x
            if x.ndim == 3 and x.shape[-1] > 4:
                images = list(x)  # a grey batch (B, H, W) of another size
            elif x.ndim in (2, 3):
                images = [x]  # one image
            elif x.ndim == 4:
                images = list(x)  # a batch of another size
            else:
                raise ValueError(f"expected images as (B, H, W, C), (H, W, C), (H, W) or a list of those, "
                                 f"got shape {x.shape}")
        if len(images) == 0:
            raise ValueError("expected at least one image, got an empty list")
        names = names or [f"image {i}" for i in range(len(images))]
        return np.stack([contract.prepare(image, self.preprocessing, self.input_shape, face_index=face_index,
                                          align=align, name=name) for image, name in zip(images, names)])

    def embed(self, images, *, face_index=0, align=True) -> np.ndarray:
        """Embed images of any size; returns (B, D) float32, L2-normalised.

        Args:
            images: array | list of arrays. uint8 or float pixel values 0..255: a batch (B, H, W, C) of the
                model's shape, one image (H, W, C) or (H, W), or a list of images of any sizes (see `prepare`).
            face_index: int. face entries: which detected face, by area (0 = largest).
            align: bool. face entries: detect and align the face (True), or cut the card's fixed crop.
        """
        x = self.prepare(images, face_index=face_index, align=align)  # (B, H, W, C)
        return self._run(x)

    def embed_files(self, paths, *, face_index=0, align=True, skipped=None) -> np.ndarray:
        """Decode image files (Pillow) and embed them through the contract; (len(paths), D), in order.

        Args:
            paths: list of str | Path. image files (PNG, JPEG, ...; any size, grey, palette, alpha, 16-bit).
            face_index: int. face entries: which detected face, by area (0 = largest).
            align: bool. face entries: detect and align the face (True), or cut the card's fixed crop.
            skipped: list | None. None: a file that fails raises. A list: files that cannot be read or
                embedded are appended to it as (Path, error) and left out of the rows; if all fail, the
                first error is raised.
        """
        paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        if not paths:
            raise ValueError("expected at least one image file, got none")
        rows, failed = [], []
        for p in paths:  # one file decoded at a time: memory is one photo plus the (B, H, W, C) inputs
            try:
                rows.append(contract.prepare_file(p, self.preprocessing, self.input_shape, face_index=face_index,
                                                  align=align))
            except (ValueError, OSError) as err:  # not an image, truncated, no face, not a readable file
                if skipped is None:
                    raise
                failed.append((p, err))
        if skipped is not None:
            skipped.extend(failed)
            if not rows:
                raise failed[0][1]
        return self._run(np.stack(rows))

    def _run(self, x) -> np.ndarray:
        return run_batches(self._session, x, self.batch_size, self._input_name, self._output_name)  # (B, D)

    def verify(self, a, b, *, face_index=0, align=True, embedded=False):
        """Decide whether image pairs (a[i], b[i]) show the same identity.

        Returns (same: bool (B,), distances: float32 (B,)); same = distance of the L2-normalised embeddings
        <= card threshold (`kernels.verify_embeddings`).

        Args:
            a: array. B images (see `embed`), or with `embedded` their (B, D) embeddings.
            b: array. B images, paired with `a` row by row (or their embeddings).
            face_index: int. face entries: which detected face, by area (0 = largest).
            align: bool. face entries: detect and align the face (True), or cut the card's fixed crop.
            embedded: bool. `a` and `b` are embeddings already (e.g. of files, from `embed_files`).
        """
        if self.threshold is None:
            raise ValueError(f"the card of {self.path} has no verification threshold")
        if embedded:
            ea, eb = a, b
        else:
            ea = self.embed(a, face_index=face_index, align=align)  # (B, D)
            eb = self.embed(b, face_index=face_index, align=align)  # (B, D)
        if len(ea) != len(eb):
            raise ValueError(f"expected as many images in a as in b, got {len(ea)} and {len(eb)}")
        return verify_embeddings(ea, eb, self.threshold)

    def as_embeddings(self, gallery) -> np.ndarray:
        """(N, D) L2-normalised embeddings of a gallery: a 2-D float array with D columns is taken as embeddings
        already, anything else as images (see `embed`)."""
        g = np.asarray(gallery)
        if g.ndim == 2 and g.dtype.kind == "f" and g.shape[1] == self.embedding_dim:
            check_numeric(g, "gallery embeddings")
            if len(g) == 0:
                raise ValueError("expected a non-empty gallery")
            return l2_normalize(g.astype(np.float32, copy=False))
        return l2_normalize(self.embed(g))

    def search(self, queries, gallery, k=5):
        """Find the k gallery items nearest to each query (Euclidean on L2-normalised embeddings).

        A gallery given as a 2-D float array with D columns is taken as precomputed embeddings; a
        `zoo.runtime.index.GalleryIndex` is searched with faiss. Returns (indices: int64 (Q, k), distances: float32 (Q, k)), nearest first.

        Args:
            queries: array. Q images (see `embed`).
            gallery: array | GalleryIndex. N images, (N, D) float embeddings, or an index of them.
            k: int. neighbours per query, 1 <= k <= N.
        """
        if hasattr(gallery, "search") and hasattr(gallery, "paths"):  # a GalleryIndex (zoo.runtime.index)
            return gallery.search(self.embed(queries), k)
        return nearest_neighbours(self.embed(queries), self.as_embeddings(gallery), k)


