"""Run published embedders with numpy and onnxruntime alone (no TensorFlow, no Keras).

This package is self-contained on purpose: it reads `card.json`, checks sha256 digests, applies the
card's preprocessing contract (`contract.py`, `images.py`: numpy), finds faces (`faces.py`: MTCNN on
onnxruntime, weights in `mtcnn/`) and tokenises text with the standard library, so an app can copy
`exports/<name>/` and this folder and depend only on `numpy` and `onnxruntime` (and Pillow to decode
files, `files.py`). Entries are found by name in the same order as `zoo.registry` (`entries.py`: the local
root, installed entry packages, the cache) and pulled from hub URLs into the verified cache (`hub.py`, with
fsspec or huggingface_hub imported only then).

    from zoo.runtime import OnnxEmbedder
    e = OnnxEmbedder("exports/facenet_triplet")  # or "facenet_triplet", "hf://owner/repo", "file:///srv/entry"
    e.embed(images)                    # (B, D) float32, L2-normalised; images of any size
    e.embed_files(["a.jpg", "b.png"])  # decoded with Pillow, then the same contract
    e.verify(a, b)                     # (same, distances) with the card's threshold
    e.search(queries, gallery, k=5)    # (indices, distances)
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import contract, entries
from .contract import NoFaceError
from .files import read_image, image_files

__all__ = ["OnnxEmbedder", "OnnxCLIP", "Tokenizer", "few_shot_classify", "read_card", "cpu_features",
           "int8_cpu_class", "read_image", "image_files", "NoFaceError", "nearest_neighbours",
           "prototype_distances", "few_shot_scores", "softmax"]

_CARD_METADATA_KEY = "zoo_card"
# Entries of the (rows, N) distance block per chunk in `search`: bounds memory for large galleries.
_SEARCH_CHUNK_ELEMENTS = 4_000_000


# CPU flags that decide which int8 kernels onnxruntime's MLAS runs, so whether int8 answers can differ:
# x86 AVX2 / AVX-512BW multiply-add uint8 x int8 with saturation, the VNNI and AMX ones do not; Arm has
# its own dot-product and matrix-multiply instructions.
INT8_KERNEL_FEATURES = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve")
# What a card records of the CPU that measured int8 (the kernel flags and their neighbours).
RECORDED_FEATURES = ("sse4_1", "avx", "fma", "avx512f", "asimd", *INT8_KERNEL_FEATURES)


def cpu_features() -> dict:
    """This machine's processor as the OS reports it: {"machine", "model", "flags"}.

    Linux reads /proc/cpuinfo (x86 "flags", Arm "Features"); elsewhere the flags are unknown (empty),
    so an int8 graph is always checked against fp32 at load there.
    """
    model, flags = platform.processor() or "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "model name" and value.strip():
            model = value.strip()
    return {"machine": platform.machine().lower(), "model": model,
            "flags": sorted(f for f in flags if f in RECORDED_FEATURES)}


def int8_cpu_class(features=None) -> str:
    """The CPU class whose int8 answers are alike: machine and int8 kernel flags, e.g. "x86_64:avx2".

    Args:
        features: dict | None. `cpu_features()` output (default: this machine's).
    """
    features = cpu_features() if features is None else features
    flags = [f for f in features.get("flags", []) if f in INT8_KERNEL_FEATURES]
    return f"{features.get('machine', '?')}:{'+'.join(sorted(flags)) or 'none'}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_card(folder) -> dict:
    """Read `card.json` of an export folder as a plain dict.

    Args:
        folder: str | Path. an export folder, e.g. `exports/facenet_triplet`.
    """
    path = Path(folder) / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"no card.json in the export folder: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _read_checked(folder: Path, relpath: str, card: dict, verify: bool) -> bytes:
    """Read a file of an export folder, checking its sha256 against `card["files"]`."""
    path = folder / relpath
    if not path.is_file():
        raise FileNotFoundError(f"missing file of the export: {path}")
    data = path.read_bytes()
    if verify:
        expected = (card.get("files") or {}).get(relpath)
        if expected is None:
            raise ValueError(
                f"card.json in {folder} records no sha256 for {relpath!r}; "
                "pass verify=False to load an unverified file"
            )
        actual = _sha256(data)
        if actual != expected:
            raise ValueError(
                f"sha256 mismatch for {path}: expected {expected} (card.json), got {actual}; "
                "the file was modified or corrupted, re-publish or re-download the entry"
            )
    return data


def _resolve(path) -> Path:
    """An export folder or .onnx file as given, else the folder of an entry name or hub URL."""
    try:
        return entries.resolve(path)
    except KeyError as err:
        # The runtime's contract: a missing model is a FileNotFoundError, with the registry's hint.
        raise FileNotFoundError(f"no export folder or ONNX file at {path}, and {err.args[0]}") from None


def _tower_file(card: dict, input_name: str, folder: Path) -> str:
    """The ONNX file of the first tower whose input is `input_name` ("images" or "token_ids")."""
    for role, tower in (card.get("towers") or {}).items():
        if tower.get("input") == input_name:
            return tower.get("onnx", f"{role}.onnx")
    raise ValueError(f"card.json in {folder} lists no tower with input {input_name!r}")


def _session(model: bytes, providers) -> ort.InferenceSession:
    if providers is None:
        providers = ort.get_available_providers()
    return ort.InferenceSession(model, providers=list(providers))


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _check_numeric(array: np.ndarray, what: str) -> None:
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
        path = _resolve(path)
        if path.is_dir():
            card = read_card(path)
            relpath = _tower_file(card, "images", path)
            model = _read_checked(path, relpath, card, verify)
            self._session = _session(model, providers)
            if int8:
                self._use_int8(path, card, verify, providers)
        elif path.is_file():
            if int8:
                raise ValueError("int8=True needs an export folder; pass the .int8.onnx file itself")
            folder, card = path.parent, None
            if (folder / "card.json").is_file():
                # A file inside an export folder is still checked against its card.
                card = read_card(folder)
                model = _read_checked(folder, path.name, card, verify)
            else:
                model = path.read_bytes()
            self._session = _session(model, providers)
        else:
            raise FileNotFoundError(f"no export folder or ONNX file at {path}")
        if card is None:
            meta = self._session.get_modelmeta().custom_metadata_map
            card = json.loads(meta[_CARD_METADATA_KEY]) if _CARD_METADATA_KEY in meta else {}
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
        session = _session(_read_checked(folder, relpath, card, verify), providers)
        cpu_class = int8_cpu_class()
        if cpu_class in record.get("validated_on", []):
            self._session, self.int8 = session, True
            return
        with np.load(io.BytesIO(_read_checked(folder, "golden.npz", card, verify))) as golden:
            inputs, fp32 = golden[f"{tower}__inputs"], golden[f"{tower}__embeddings"]
        int8 = session.run(None, {session.get_inputs()[0].name: inputs})[0]
        cosine = float(np.min(np.sum(_l2_normalize(int8) * _l2_normalize(fp32), axis=1)))
        minimum = float(record.get("min_cosine", 0.98))
        self.int8_check = {"cpu_class": cpu_class, "golden_min_cosine": cosine, "min_cosine": minimum}
        if cosine >= minimum:
            self._session, self.int8 = session, True
            return
        warnings.warn(f"{folder / relpath}: on this CPU ({cpu_class}; the card validated int8 on "
                      f"{record.get('validated_on', [])}) the int8 graph disagrees with fp32 on the golden inputs "
                      f"(least cosine {cosine:.3f} < {minimum}); running the fp32 graph instead", RuntimeWarning,
                      stacklevel=3)

    @property
    def identity(self) -> dict:
        """{"name", "sha256"}: the entry and the sha256 of its image graph, which a gallery index records."""
        relpath = _tower_file(self.card, "images", self.path) if self.card.get("towers") else None
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
            _check_numeric(x, "images")
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
        out = [
            self._session.run([self._output_name], {self._input_name: x[i : i + self.batch_size]})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)  # (B, D)

    def verify(self, a, b):
        """Decide whether image pairs (a[i], b[i]) show the same identity.

        Returns (same: bool (B,), distances: float32 (B,)); same = distance <= card threshold.

        Args:
            a: array. B images (see `embed`).
            b: array. B images, paired with `a` row by row.
        """
        if self.threshold is None:
            raise ValueError(f"the card of {self.path} has no verification threshold")
        ea, eb = _l2_normalize(self.embed(a)), _l2_normalize(self.embed(b))
        if len(ea) != len(eb):
            raise ValueError(f"expected as many images in a as in b, got {len(ea)} and {len(eb)}")
        distances = np.linalg.norm(ea - eb, axis=1).astype(np.float32)  # (B,)
        return distances <= self.threshold, distances

    def as_embeddings(self, gallery) -> np.ndarray:
        """(N, D) L2-normalised embeddings of a gallery: a 2-D float array with D columns is taken as embeddings
        already, anything else as images (see `embed`)."""
        g = np.asarray(gallery)
        if g.ndim == 2 and g.dtype.kind == "f" and g.shape[1] == self.embedding_dim:
            _check_numeric(g, "gallery embeddings")
            if len(g) == 0:
                raise ValueError("expected a non-empty gallery")
            return _l2_normalize(g.astype(np.float32, copy=False))
        return _l2_normalize(self.embed(g))

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


def nearest_neighbours(queries, gallery, k=5):
    """The k gallery rows nearest to each query row (Euclidean on L2-normalised embeddings), exactly.

    Returns (indices: int64 (Q, k), distances: float32 (Q, k)), nearest first; ties keep gallery order.

    Args:
        queries: (Q, D) float embeddings.
        gallery: (N, D) float embeddings.
        k: int. neighbours per query, 1 <= k <= N.
    """
    q, g = _l2_normalize(np.asarray(queries, np.float32)), _l2_normalize(np.asarray(gallery, np.float32))
    if not 1 <= int(k) <= len(g):
        raise ValueError(f"expected 1 <= k <= gallery size {len(g)}, got k={k}")
    k = int(k)
    rows = max(1, _SEARCH_CHUNK_ELEMENTS // len(g))
    indices, distances = [], []
    for start in range(0, len(q), rows):
        # |q - g|^2 = 2 - 2 q.g for unit vectors; clipped against rounding below zero.
        d2 = np.maximum(2.0 - 2.0 * q[start : start + rows] @ g.T, 0.0)  # (rows, N)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        part_d2 = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(part_d2, axis=1, kind="stable")
        indices.append(np.take_along_axis(part, order, axis=1))
        distances.append(np.sqrt(np.take_along_axis(part_d2, order, axis=1)))
    return np.concatenate(indices).astype(np.int64), np.concatenate(distances).astype(np.float32)


def few_shot_classify(embedder, support_images, support_labels, query_images) -> np.ndarray:
    """Label queries by their nearest class prototype (mean support embedding, squared Euclidean).

    Reference: Snell et al. 2017, "Prototypical Networks for Few-shot Learning".

    Args:
        embedder: OnnxEmbedder. any object with `embed(images) -> (B, D)`.
        support_images: array. S labelled images.
        support_labels: array. (S,) labels of the support images, any dtype.
        query_images: array. Q images to classify.
    Returns:
        (Q,) array of labels taken from `support_labels`.
    """
    support = embedder.embed(support_images)  # (S, D)
    classes, d2 = prototype_distances(support, support_labels, embedder.embed(query_images))
    return classes[np.argmin(d2, axis=1)]


def few_shot_scores(support, support_labels, queries):
    """Nearest-prototype classification of query embeddings, with what a page shows beside the answer.

    Returns (classes (C,), probabilities (Q, C): softmax over minus squared distances to the prototypes, a
    prototypical network's class probabilities, distances (Q, S) from each query to each support example).

    Args:
        support: (S, D) float. support embeddings.
        support_labels: sequence of S labels.
        queries: (Q, D) float. query embeddings.
    """
    classes, d2 = prototype_distances(support, support_labels, queries)  # (C,), (Q, C)
    q, s = np.asarray(queries, np.float32), np.asarray(support, np.float32)
    return classes, softmax(-d2), np.linalg.norm(q[:, None] - s[None], axis=-1)


def softmax(logits) -> np.ndarray:
    """Row-wise softmax of (B, C) logits (shifted by each row's maximum, so large logits do not overflow)."""
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def prototype_distances(support, support_labels, queries):
    """Squared Euclidean distances from query embeddings to class prototypes (mean support embeddings);
    `softmax(-distances)` gives a prototypical network's class probabilities.

    Returns (classes: the sorted distinct labels (C,), distances: float64 (Q, C)).

    Args:
        support: (S, D) support embeddings.
        support_labels: (S,) their labels, any dtype.
        queries: (Q, D) query embeddings.
    """
    labels = np.asarray(support_labels)
    support = np.asarray(support, np.float64)
    if labels.ndim != 1 or len(labels) != len(support):
        raise ValueError(
            f"expected one label per support image ({len(support)}), got labels of shape {labels.shape}"
        )
    classes, inverse = np.unique(labels, return_inverse=True)
    prototypes = np.zeros((len(classes), support.shape[1]), np.float64)  # (C, D)
    np.add.at(prototypes, inverse, support)
    prototypes /= np.bincount(inverse, minlength=len(classes))[:, None]
    query = np.asarray(queries, np.float64)  # (Q, D)
    d2 = np.sum(query**2, 1)[:, None] - 2.0 * query @ prototypes.T + np.sum(prototypes**2, 1)[None]  # (Q, C)
    return classes, np.maximum(d2, 0.0)


class Tokenizer:
    """Byte-level tokenizer shared by CLIP training and the runtime: no vocabulary file.

    A text is lower-cased, encoded as UTF-8, each byte b becomes token b + 2, then the end
    token 1 follows and pad tokens 0 fill up to `context_length`. Texts longer than
    `context_length - 1` bytes are truncated so that every row still ends with the end token.

    Args:
        context_length: int. tokens per text, including the end token.
    """

    pad_id = 0
    end_id = 1
    vocab_size = 258

    def __init__(self, context_length: int):
        if int(context_length) < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        self.context_length = int(context_length)

    def encode(self, texts) -> np.ndarray:
        """Tokenise texts; returns int32 (B, context_length).

        Args:
            texts: list[str]. the texts (a bare str is rejected: wrap it in a list).
        """
        if isinstance(texts, (str, bytes)):
            raise ValueError("expected a list of strings, got a single string; wrap it in a list")
        texts = list(texts)
        out = np.zeros((len(texts), self.context_length), np.int32)  # (B, L)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"expected a list of strings, item {row} is {type(text).__name__}")
            ids = [b + 2 for b in text.lower().encode("utf-8")[: self.context_length - 1]]
            out[row, : len(ids)] = ids
            out[row, len(ids)] = self.end_id
        return out


class OnnxCLIP:
    """Zero-shot image classification and image/text embedding with a published CLIP entry.

    Reference: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
    Supervision".

    Args:
        folder: str | Path. the export folder holding image_encoder.onnx and text_encoder.onnx, or an entry name
            or hub URL (see `OnnxEmbedder`).
        verify: bool. check the sha256 of both ONNX files against card.json.
        batch_size: int. images or texts per onnxruntime call.
        providers: list[str] | None. onnxruntime execution providers.
    """

    def __init__(self, folder, *, verify=True, batch_size=64, providers=None):
        self.folder = _resolve(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no export folder at {self.folder}")
        self.image = OnnxEmbedder(self.folder, verify=verify, batch_size=batch_size, providers=providers)
        self.card = self.image.card
        self._text_file = _tower_file(self.card, "token_ids", self.folder)
        extras = self.card.get("extras") or {}
        if extras.get("tokenizer", "byte") != "byte":
            raise ValueError(f"unsupported tokenizer {extras.get('tokenizer')!r}; expected 'byte'")
        for key in ("context_length", "logit_scale"):
            if key not in extras:
                raise ValueError(f"card.json in {self.folder} lacks extras[{key!r}] needed by CLIP")
        self.tokenizer = Tokenizer(extras["context_length"])
        self.logit_scale = float(extras["logit_scale"])
        model = _read_checked(self.folder, self._text_file, self.card, verify)
        self._text = _session(model, providers)
        self._text_input = self._text.get_inputs()[0].name
        self._text_output = self._text.get_outputs()[0].name
        self.batch_size = self.image.batch_size

    def encode_image(self, images) -> np.ndarray:
        """Embed images; returns (B, D) float32, L2-normalised (see `OnnxEmbedder.embed`)."""
        return self.image.embed(images)

    def encode_text(self, texts) -> np.ndarray:
        """Embed texts; returns (B, D) float32, L2-normalised.

        Args:
            texts: list[str]. the texts.
        """
        tokens = self.tokenizer.encode(texts)  # (B, L)
        if len(tokens) == 0:
            raise ValueError("expected at least one text, got an empty list")
        out = [
            self._text.run([self._text_output], {self._text_input: tokens[i : i + self.batch_size]})[0]
            for i in range(0, len(tokens), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def class_embeddings(self, class_names, templates=("a photo of {}.",)) -> np.ndarray:
        """One text embedding per class: the prompt ensemble averaged, then re-normalised; (C, D).

        A class is a name, or a list of names that describe it (synonyms, its sub-classes): its
        ensemble is then every template filled with every one of them.

        Args:
            class_names: list of (str or list[str]). the classes.
            templates: sequence[str]. prompts with one `{}` where the class name goes.
        """
        templates = list(templates)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"expected templates each containing '{{}}', got {templates!r}")
        classes = [[c] if isinstance(c, str) else list(c) for c in class_names]
        if not classes:
            raise ValueError("expected at least one class name")
        if any(not names or not all(isinstance(n, str) for n in names) for names in classes):
            raise ValueError(f"expected each class as a name or a non-empty list of names, got {class_names!r}")
        prompts = [t.format(name) for names in classes for name in names for t in templates]
        emb = self.encode_text(prompts)  # (sum of prompts per class, D)
        ends = np.cumsum([len(names) * len(templates) for names in classes])
        means = np.stack([part.mean(axis=0) for part in np.split(emb, ends[:-1])])  # (C, D)
        return _l2_normalize(means).astype(np.float32)

    def zero_shot(self, images, class_names, templates=("a photo of {}.",)):
        """Classify images among `class_names` by prompts.

        Returns (predictions: int64 (B,) indices into class_names, probabilities: float32 (B, C)).

        Args:
            images: array. images (see `OnnxEmbedder.embed`).
            class_names: list of (str or list[str]). the candidate classes (see `class_embeddings`).
            templates: sequence[str]. prompt templates, averaged in embedding space.
        """
        text = self.class_embeddings(class_names, templates)  # (C, D)
        logits = self.logit_scale * _l2_normalize(self.encode_image(images)) @ text.T  # (B, C)
        probabilities = softmax(logits)
        return np.argmax(probabilities, axis=1), probabilities.astype(np.float32)

    def zero_shot_head(self, class_names, templates, path) -> Path:
        """Write one ONNX classifier: the image tower plus a fixed matrix of class text embeddings.

        The graph takes `images` and returns `logits` (B, C), the cosine similarities, and
        `probabilities` (B, C) = softmax(logit_scale * logits). Class names are stored in
        metadata_props "zoo_classes" (JSON list). Needs the `onnx` package.

        Args:
            class_names: list of (str or list[str]). the classes, in output column order.
            templates: sequence[str]. prompt templates, averaged in embedding space.
            path: str | Path. the .onnx file to write.
        """
        import onnx
        from onnx import helper, numpy_helper

        text = self.class_embeddings(class_names, templates)  # (C, D)
        model = onnx.load_from_string(
            _read_checked(self.folder, _tower_file(self.card, "images", self.folder), self.card, False)
        )
        graph = model.graph
        embeddings = graph.output[0].name
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(text.T), "zoo_head/class_embeddings"),
                numpy_helper.from_array(np.array(self.logit_scale, np.float32), "zoo_head/logit_scale"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("MatMul", [embeddings, "zoo_head/class_embeddings"], ["logits"]),
                helper.make_node("Mul", ["logits", "zoo_head/logit_scale"], ["zoo_head/scaled"]),
                helper.make_node("Softmax", ["zoo_head/scaled"], ["probabilities"], axis=-1),
            ]
        )
        del graph.output[:]
        n = len(text)
        graph.output.extend(
            [
                helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", n]),
                helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", n]),
            ]
        )
        helper.set_model_props(
            model,
            {
                **{p.key: p.value for p in model.metadata_props},
                "zoo_classes": json.dumps(list(class_names)),
                "zoo_templates": json.dumps(list(templates)),
            },
        )
        onnx.checker.check_model(model)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        return path
