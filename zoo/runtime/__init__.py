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

Modules: `embedder.py` (OnnxEmbedder, the onnxruntime session and its batched runner), `clip.py` (Tokenizer,
OnnxCLIP), `kernels.py` (the numpy arithmetic on embeddings: normalise, distances, nearest neighbours,
prototypes, few-shot classification, the verify decision, zero-shot scores, the prompt ensemble), `cards.py`
(card.json and the sha256-checked reads), `cpu.py` (the CPU class int8 answers depend on); `index.py` (faiss
gallery index), `writes.py` (writes that never destroy). This module re-exports their public names.
"""

from __future__ import annotations

from . import cards, contract, entries, kernels
from .cards import read_card
from .clip import OnnxCLIP, Tokenizer
from .contract import NoFaceError
from .cpu import INT8_KERNEL_FEATURES, RECORDED_FEATURES, cpu_features, int8_cpu_class
from .embedder import OnnxEmbedder, session
from .files import image_files, read_image
from .kernels import (euclidean_distances, few_shot_classify, few_shot_scores, l2_normalize, nearest_neighbours,
                      nearest_prototypes, paired_distances, prompt_ensemble, prototype_distances, softmax,
                      verify_embeddings, zero_shot_classify)

__all__ = ["OnnxEmbedder", "OnnxCLIP", "Tokenizer", "few_shot_classify", "read_card", "cpu_features",
           "int8_cpu_class", "read_image", "image_files", "NoFaceError", "nearest_neighbours",
           "prototype_distances", "few_shot_scores", "softmax", "l2_normalize", "paired_distances",
           "euclidean_distances", "nearest_prototypes", "verify_embeddings", "zero_shot_classify",
           "prompt_ensemble"]

# The private names this module had before it was split, kept for code written against them.
_sha256, _read_checked, _resolve, _tower_file = cards.sha256, cards.read_checked, cards.resolve, cards.tower_file
_session, _l2_normalize, _CARD_METADATA_KEY = session, l2_normalize, cards.CARD_METADATA_KEY
