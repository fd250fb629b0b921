"""`zoo serve`: a web page and its JSON API over the published entries, for people who do not code.

    zoo serve [--host 127.0.0.1] [--port 8000] [--root exports] [--galleries DIR]

Three tools, on FastAPI (uvicorn serves it) and the ONNX runtime (zoo.runtime):
- verify: two photos, a face entry -> the aligned crops, the distance, the card's threshold, the verdict;
- classify: a few labelled examples per class (files with their class names, or a zip of class folders)
  and query images -> the nearest class prototype, a confidence and the nearest examples;
- search: a gallery (a folder under --galleries, or uploaded files) queried by a picture, or by text with a
  CLIP entry -> the nearest images.

JSON API (OpenAPI at /docs): GET /api/health, GET /api/entries, GET /api/galleries, POST /api/verify,
POST /api/classify, POST /api/search. Errors are JSON `{"error": "..."}` with a 4xx status.

Safe by default: loopback unless --host says otherwise (then a warning); a request body above
MAX_REQUEST_BYTES gets 413, more than MAX_FILES files 413; uploads are decoded from a temporary folder
that is deleted when the request ends; a gallery is only ever a folder directly under --galleries,
named in the request (no paths, no `..`, no symlink leading out); embedders are shared between
threads (onnxruntime sessions are thread-safe), so concurrent requests get the answers sequential
ones get. Every page asset is served by the app (no CDN).
"""

import base64
import io
import json
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from zoo import registry

# 20 MiB: a 25 MB upload is refused with 413 before the body is read (or as soon as it passes the limit).
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_FILES = 64
STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _TooLarge(Exception):
    pass


class LimitRequestBody:
    """ASGI middleware: 413 for a body above `max_bytes`, by Content-Length or while it streams in."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"error": f"the upload is larger than {self.max_bytes // 2**20} MB; send "
                                           "fewer or smaller files"}, status_code=413)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_bytes:
            return await too_large(scope, receive, send)
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await too_large(scope, receive, send)


def _has_text(card) -> bool:
    """Whether an entry has a text tower (CLIP), so it can search by words."""
    return any(t["input"] == "token_ids" for t in card.towers.values())


class Zoo:
    """The entries of one zoo root, their runtime embedders built once and shared by every request."""

    def __init__(self, root=None, galleries=None):
        self.root = registry.exports_dir(root)
        self.galleries = Path(galleries).resolve() if galleries else None
        self._embedders, self._gallery_cache, self._lock = {}, {}, threading.Lock()

    def entries(self) -> list[dict]:
        out = []
        for name in registry.list_models(self.root):
            card = registry.info(name, self.root)
            value = card.metrics[card.primary_metric]
            value = value.get("mean", value) if isinstance(value, dict) else value
            out.append({"name": name, "method": card.method, "protocol": card.protocol, "dataset": card.dataset,
                        "primary_metric": card.primary_metric, "value": value, "license": card.data_license,
                        "threshold": card.threshold, "input_shape": list(card.input_shape),
                        "face": bool((card.preprocessing or {}).get("face")),
                        "text": _has_text(card)})
        return out

    def embedder(self, name, clip=False):
        from zoo.runtime import OnnxCLIP, OnnxEmbedder

        if name not in registry.list_models(self.root):
            raise ValueError(f"unknown entry {name!r}; GET /api/entries lists them")
        with self._lock:
            key = (name, clip)
            if key not in self._embedders:
                folder = registry.entry_folder(name, self.root)
                self._embedders[key] = OnnxCLIP(folder) if clip else OnnxEmbedder(folder)
            return self._embedders[key]

    def gallery_names(self) -> list:
        if self.galleries is None or not self.galleries.is_dir():
            return []
        return sorted(p.name for p in self.galleries.iterdir() if p.is_dir() and self._inside(p))

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.galleries)

    def gallery(self, entry, name):
        """(files, (N, D) embeddings) of a server gallery, embedded once per entry."""
        from zoo.runtime import image_files

        if name not in self.gallery_names():
            raise ValueError(f"unknown gallery {name!r}; expected one of {self.gallery_names()} "
                             "(folders under --galleries)")
        folder = self.galleries / name
        files = [f for f in image_files(folder) if self._inside(f)]
        key = (entry, name, tuple((f.name, f.stat().st_mtime_ns) for f in files))
        with self._lock:
            cached = self._gallery_cache.get(key)
        if cached is None:
            cached = files, self.embedder(entry).embed_files(files)
            with self._lock:
                self._gallery_cache[key] = cached
        return cached


def _png_data_url(image, max_side=160) -> str:
    """A picture as an inline PNG, shrunk (area average) to at most `max_side` pixels a side."""
    from PIL import Image

    from zoo.runtime import images as ops

    x = ops.to_uint8(image if np.asarray(image).ndim == 3 else np.asarray(image)[..., None])
    scale = max_side / max(x.shape[:2])
    if scale < 1:
        x = ops.resize(x, (max(1, round(x.shape[0] * scale)), max(1, round(x.shape[1] * scale))))
    buffer = io.BytesIO()
    Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _safe_name(filename, fallback) -> str:
    """A file name reduced to its last component (uploads never choose where they are written)."""
    name = PurePosixPath(str(filename or "").replace("\\", "/")).name
    return name if name not in ("", ".", "..") else fallback


class Uploads:
    """Uploaded files decoded from a temporary folder that is deleted on exit."""

    def __init__(self, max_files=MAX_FILES):
        self.max_files, self.count = max_files, 0

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="zoo-serve-")
        self.folder = Path(self._tmp.name)
        return self

    def __exit__(self, *exc):
        self._tmp.cleanup()

    def _write(self, data: bytes, name: str) -> Path:
        self.count += 1
        if self.count > self.max_files:
            raise _Refused(413, f"more than {self.max_files} files in one request; send fewer")
        path = self.folder / f"{self.count:04d}-{name}"
        path.write_bytes(data)
        return path

    def images(self, uploads) -> tuple[list[str], list[np.ndarray]]:
        """(names, decoded images) of UploadFiles; a file that is not an image is a 400 naming it."""
        from zoo.runtime import read_image

        names, images = [], []
        for i, upload in enumerate(uploads):
            name = _safe_name(upload.filename, f"upload-{i}")
            path = self._write(upload.file.read(), name)
            try:
                images.append(read_image(path))
            except ValueError:
                raise _Refused(400, f"{name}: not an image that can be read (PNG, JPEG, BMP, GIF, TIFF, WebP)") \
                    from None
            names.append(name)
        return names, images

    def zipped_classes(self, upload) -> tuple[list[str], list[str], list[np.ndarray]]:
        """(classes, names, images) from a zip of class folders: <class>/<image> (any depth above <class>)."""
        from zoo.runtime import read_image
        from zoo.runtime.files import IMAGE_SUFFIXES

        try:
            archive = zipfile.ZipFile(io.BytesIO(upload.file.read()))
        except zipfile.BadZipFile:
            raise _Refused(400, f"{_safe_name(upload.filename, 'the zip')}: not a zip file") from None
        labels, names, images = [], [], []
        for member in archive.infolist():
            parts = PurePosixPath(member.filename).parts
            if member.is_dir() or len(parts) < 2 or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            name = _safe_name(parts[-1], "image")
            path = self._write(archive.read(member), name)
            try:
                images.append(read_image(path))
            except ValueError:
                raise _Refused(400, f"{member.filename}: not an image that can be read") from None
            labels.append(parts[-2])
            names.append(f"{parts[-2]}/{name}")
        if not images:
            raise _Refused(400, "the zip holds no images in class folders (expected <class>/<image>.png ...)")
        return labels, names, images


class _Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def _verdict(same, distance, threshold) -> str:
    margin = abs(distance - threshold) / max(threshold, 1e-9)
    sure = "clearly" if margin > 0.25 else "probably" if margin > 0.08 else "only just"
    return (f"The same person ({sure}): distance {distance:.3f} is below the threshold {threshold:.3f}."
            if same else f"Different people ({sure}): distance {distance:.3f} is above the threshold "
                         f"{threshold:.3f}.")


def create_app(root=None, galleries=None, *, max_bytes=MAX_REQUEST_BYTES, max_files=MAX_FILES):
    """The FastAPI app of `zoo serve` over the zoo at `root`, with server galleries under `galleries`."""
    zoo = Zoo(root, galleries)
    app = FastAPI(title="Keras embedding zoo", description=__doc__.split("\n\n")[0])
    app.add_middleware(LimitRequestBody, max_bytes=max_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(_Refused)
    async def refused(request: Request, err: _Refused):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, err: ValueError):
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, err: RequestValidationError):
        missing = [".".join(str(p) for p in e["loc"][1:]) for e in err.errors()]
        return JSONResponse({"error": f"the request lacks or garbles the fields {missing}"}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health")
    def health():
        return {"status": "ok", "entries": len(zoo.entries()), "galleries": len(zoo.gallery_names())}

    @app.get("/api/entries")
    def entries():
        return zoo.entries()

    @app.get("/api/galleries")
    def gallery_list():
        return zoo.gallery_names()

    @app.post("/api/verify")
    def verify(entry: Annotated[str, Form()], a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()]):
        embedder = zoo.embedder(entry)
        if embedder.threshold is None:
            raise ValueError(f"entry {entry!r} has no verification threshold; pick a face entry")
        with Uploads(max_files) as uploads:
            names, images = uploads.images([a, b])
        crops = [embedder.prepare([image], names=[name])[0] for name, image in zip(names, images)]
        ea, eb = embedder.embed(np.stack(crops))
        distance = float(np.linalg.norm(ea - eb))
        same = distance <= embedder.threshold
        return {"same": bool(same), "distance": distance, "threshold": embedder.threshold,
                "verdict": _verdict(same, distance, embedder.threshold),
                "crops": {"a": _png_data_url(crops[0]), "b": _png_data_url(crops[1])}}

    @app.post("/api/classify")
    def classify(entry: Annotated[str, Form()], queries: Annotated[list[UploadFile], File()],
                 support: Annotated[list[UploadFile], File()] = None, labels: Annotated[str, Form()] = None,
                 support_zip: Annotated[UploadFile, File()] = None):
        from zoo.runtime import prototype_distances, softmax

        embedder = zoo.embedder(entry)
        with Uploads(max_files) as uploads:
            if support_zip is not None:
                classes_of, support_names, support_images = uploads.zipped_classes(support_zip)
            elif support:
                try:
                    classes_of = json.loads(labels or "")
                except json.JSONDecodeError:
                    classes_of = None
                if not isinstance(classes_of, list) or len(classes_of) != len(support):
                    raise _Refused(400, f"labels must be a JSON list with one class name per support file "
                                        f"({len(support)}), got {labels!r}")
                support_names, support_images = uploads.images(support)
            else:
                raise _Refused(400, "send examples: support files with labels, or support_zip (class folders)")
            query_names, query_images = uploads.images(queries)
        if len(set(classes_of)) < 2:
            raise _Refused(400, f"give examples of at least two classes, got {sorted(set(classes_of))}")
        support_emb = embedder.embed(support_images)  # (S, D)
        query_emb = embedder.embed(query_images)  # (Q, D)
        classes, d2 = prototype_distances(support_emb, classes_of, query_emb)  # (C,), (Q, C)
        probabilities = softmax(-d2)  # a prototypical network's class probabilities
        example_d = np.linalg.norm(query_emb[:, None] - support_emb[None], axis=-1)  # (Q, S)
        results = []
        for q, name in enumerate(query_names):
            best = int(np.argmax(probabilities[q]))
            nearest = np.argsort(example_d[q], kind="stable")[:3]
            results.append({"query": name, "class": str(classes[best]), "confidence": float(probabilities[q, best]),
                            "nearest": [{"name": support_names[i], "class": str(classes_of[i]),
                                         "distance": float(example_d[q, i]),
                                         "thumbnail": _png_data_url(support_images[i])} for i in nearest]})
        return {"classes": [str(c) for c in classes], "results": results}

    @app.post("/api/search")
    def search(entry: Annotated[str, Form()], k: Annotated[int, Form()] = 5, gallery: Annotated[str, Form()] = None,
               gallery_files: Annotated[list[UploadFile], File()] = None, query: Annotated[UploadFile, File()] = None,
               text: Annotated[str, Form()] = None):
        from zoo.runtime import nearest_neighbours, read_image

        embedder = zoo.embedder(entry)
        with Uploads(max_files) as uploads:
            if gallery:
                files, gallery_emb = zoo.gallery(entry, gallery)
                names, thumbnails = [f.name for f in files], [read_image(f) for f in files]
            elif gallery_files:
                names, thumbnails = uploads.images(gallery_files)
                gallery_emb = embedder.embed(thumbnails)
            else:
                raise _Refused(400, "choose a gallery (a server folder, GET /api/galleries) or upload gallery_files")
            if query is not None:
                query_emb = embedder.embed(uploads.images([query])[1])
            elif text and text.strip():
                if not _has_text(registry.info(entry, zoo.root)):
                    raise _Refused(400, f"entry {entry!r} has no text tower; search by text needs a CLIP entry")
                query_emb = zoo.embedder(entry, clip=True).encode_text([text.strip()])
            else:
                raise _Refused(400, "send a query picture (query) or words (text)")
        indices, distances = nearest_neighbours(query_emb, gallery_emb, min(max(int(k), 1), len(names)))
        return {"neighbours": [{"name": names[i], "distance": float(d), "thumbnail": _png_data_url(thumbnails[i])}
                               for i, d in zip(indices[0], distances[0])]}

    return app


def serve(host="127.0.0.1", port=8000, root=None, galleries=None) -> None:
    """Run the app with uvicorn until interrupted; a host other than loopback gets a warning."""
    import sys

    import uvicorn

    if host not in LOOPBACK:
        print(f"zoo serve: warning: listening on {host}, reachable from other machines; the page has no "
              "authentication (use --host 127.0.0.1 to keep it local)", file=sys.stderr)
    uvicorn.run(create_app(root, galleries), host=host, port=port, log_level="warning")
