"""CLIP on onnxruntime: the byte-level `Tokenizer` and `OnnxCLIP` (image and text towers, zero-shot)."""

from __future__ import annotations

import numpy as np

from .cards import read_checked, resolve, tower_file
from .embedder import OnnxEmbedder, run_batches, session
from .kernels import prompt_ensemble, zero_shot_classify

__all__ = ["Tokenizer", "OnnxCLIP"]


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
        self.folder = resolve(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no export folder at {self.folder}")
        self.image = OnnxEmbedder(self.folder, verify=verify, batch_size=batch_size, providers=providers)
        self.card = self.image.card
        self._text_file = tower_file(self.card, "token_ids", self.folder)
        extras = self.card.get("extras") or {}
        if extras.get("tokenizer", "byte") != "byte":
            raise ValueError(f"unsupported tokenizer {extras.get('tokenizer')!r}; expected 'byte'")
        for key in ("context_length", "logit_scale"):
            if key not in extras:
                raise ValueError(f"card.json in {self.folder} lacks extras[{key!r}] needed by CLIP")
        self.tokenizer = Tokenizer(extras["context_length"])
        self.logit_scale = float(extras["logit_scale"])
        model = read_checked(self.folder, self._text_file, self.card, verify)
        self._text = session(model, providers)
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
        return run_batches(self._text, tokens, self.batch_size, self._text_input, self._text_output)  # (B, D)

    def class_embeddings(self, class_names, templates=("a photo of {}.",)) -> np.ndarray:
        """One text embedding per class: its prompts embedded, each L2-normalised, averaged, then re-normalised
        (`kernels.prompt_ensemble`); (C, D) float32.

        A class is a name, or a list of names that describe it (synonyms, its sub-classes): its
        ensemble is then every template filled with every one of them.

        Args:
            class_names: list of (str or list[str]). the classes.
            templates: sequence[str]. prompts with one `{}` where the class name goes.
        """
        return prompt_ensemble(self.encode_text, class_names, templates)  # (C, D)

    def zero_shot(self, images, class_names, templates=("a photo of {}.",)):
        """Classify images among `class_names` by prompts.

        Returns (predictions: int64 (B,) indices into class_names, probabilities: float32 (B, C)).

        Args:
            images: array. images (see `OnnxEmbedder.embed`).
            class_names: list of (str or list[str]). the candidate classes (see `class_embeddings`).
            templates: sequence[str]. prompt templates, averaged in embedding space.
        """
        text = self.class_embeddings(class_names, templates)  # (C, D)
        return zero_shot_classify(self.encode_image(images), text, self.logit_scale)
