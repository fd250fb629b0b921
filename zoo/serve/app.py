"""The FastAPI app of `zoo serve` (see the package docstring) and `serve`, which runs it with uvicorn."""

import base64
import io
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from zoo import protocols, registry

from . import limits
from .guards import LimitRequestBody, SameOrigin, _json_error, _shown, protocol_with_header_timeout
from .uploads import Refused, Uploads, _support_labels

STATIC = Path(__file__).resolve().parent.parent / "static"


def _has_text(card) -> bool:
    """Whether an entry has a text tower (CLIP), so it can search by words."""
    return any(t["input"] == "token_ids" for t in card.towers.values())


class Zoo:
    """The entries of one zoo root, their runtime embedders built once and shared by every request, and the
    server galleries' embeddings and thumbnails, built once per state of their folder.

    Args:
        root: str | Path | None. the zoo root (default: exports/ or $ZOO_EXPORTS).
        galleries: str | Path | None. the folder whose subfolders are galleries.
        max_pixels: int. the decode budget of one image.
    """

    def __init__(self, root=None, galleries=None, max_pixels=limits.MAX_PIXELS):
        self.root = registry.exports_dir(root)
        self.galleries = Path(galleries).resolve() if galleries else None
        self.max_pixels = int(max_pixels)
        self._embedders, self._lock = {}, threading.Lock()
        self._gallery_cache, self._gallery_lock = OrderedDict(), threading.Lock()

    def private(self, message: str) -> str:
        """`message` without the server's own paths (zoo root, galleries folder, temporary folder), cut short."""
        for path, shown in ((self.galleries, "<galleries>"), (self.root.resolve(), "<zoo>"), (self.root, "<zoo>"),
                            (Path(tempfile.gettempdir()).resolve(), "<tmp>"), (Path(tempfile.gettempdir()), "<tmp>")):
            if path is not None:
                message = message.replace(str(path), shown)
        return _shown(message, 500)

    def entries(self) -> list[dict]:
        out = []
        for name in registry.list_models(self.root):
            card = registry.info(name, self.root)
            value = protocols.headline(card)
            out.append({"name": name, "method": card.method, "protocol": card.protocol, "dataset": card.dataset,
                        "primary_metric": card.primary_metric, "value": value, "license": card.data_license,
                        "threshold": card.threshold, "input_shape": list(card.input_shape),
                        "face": bool((card.preprocessing or {}).get("face")),
                        "text": _has_text(card)})
        return out

    def embedder(self, name, clip=False):
        from zoo.runtime import OnnxCLIP, OnnxEmbedder

        if name not in registry.list_models(self.root):
            raise ValueError(f"unknown entry {_shown(name)!r}; GET /api/entries lists them")
        with self._lock:
            key = (name, clip)
            if key not in self._embedders:
                folder = registry.entry_folder(name, self.root)
                self._embedders[key] = OnnxCLIP(folder) if clip else OnnxEmbedder(folder)
            return self._embedders[key]

    def decode(self, embedder, path, shown, data=None):
        """One image file -> (model input float32 (H, W, C), thumbnail uint8): decoded within the budget, the
        photo dropped as soon as both are made. Errors name the file as `shown`, never by its server path."""
        from zoo.runtime import contract, read_image
        from zoo.runtime import images as ops

        try:
            image = read_image(path, data, max_pixels=self.max_pixels,
                               min_side=contract.decode_side(embedder.preprocessing, embedder.input_shape))
        except (ValueError, OSError) as err:  # not an image, past the budget, a gallery file gone or unreadable
            raise ValueError(str(err).replace(str(path), shown)) from None
        x = contract.prepare(image, embedder.preprocessing, embedder.input_shape, name=shown)
        scale = limits.THUMBNAIL_SIDE / max(image.shape[:2])
        if scale < 1:
            image = ops.resize(image, (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))))
        return x, image

    def gallery_names(self) -> list:
        if self.galleries is None or not self.galleries.is_dir():
            return []
        return sorted(p.name for p in self.galleries.iterdir()
                      if not p.name.startswith(".") and p.is_dir() and self._inside(p))

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.galleries)

    def gallery(self, entry, name) -> dict:
        """A server gallery for an entry: {"names", "embeddings" (N, D), "thumbnails" (PNG data URLs), "skipped"},
        built on first use and again only when a file of the folder changes (name, size, mtime); the last
        limits.GALLERIES_CACHED are kept. Files that cannot be read are skipped and counted."""
        from zoo.runtime import image_files

        if name not in self.gallery_names():
            raise ValueError(f"unknown gallery {_shown(name)!r}; expected one of {self.gallery_names()} "
                             "(folders under --galleries)")
        files = [f for f in image_files(self.galleries / name) if not f.name.startswith(".") and self._inside(f)]
        state = []
        for f in files:
            st = f.stat()
            state.append((f.name, st.st_size, st.st_mtime_ns))
        key = (entry, name, tuple(state))
        # One build at a time: a second request for the same gallery waits for the first and reuses it.
        with self._gallery_lock:
            if key in self._gallery_cache:
                self._gallery_cache.move_to_end(key)
                return self._gallery_cache[key]
            built = self._build(entry, name, files)
            self._gallery_cache[key] = built
            for stale in [k for k in self._gallery_cache if k[:2] == key[:2] and k != key]:
                del self._gallery_cache[stale]
            while len(self._gallery_cache) > limits.GALLERIES_CACHED:
                self._gallery_cache.popitem(last=False)
            return built

    def _build(self, entry, name, files) -> dict:
        embedder = self.embedder(entry)
        names, inputs, thumbnails, skipped = [], [], [], 0
        for f in files:
            try:
                x, thumbnail = self.decode(embedder, f, f"{name}/{f.name}")
            except ValueError as err:
                skipped += 1
                print(f"zoo serve: warning: gallery {name!r}: skipped {self.private(str(err))}", file=sys.stderr)
                continue
            names.append(f.name)
            inputs.append(x)
            thumbnails.append(_png_data_url(thumbnail))
        if not names:
            raise ValueError(f"gallery {name!r}: none of its {len(files)} image files could be read")
        return {"names": names, "embeddings": embedder.embed(np.stack(inputs)), "thumbnails": thumbnails,
                "skipped": skipped}


def _png_data_url(image, max_side=limits.THUMBNAIL_SIDE) -> str:
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


def _verdict(same, distance, threshold) -> str:
    margin = abs(distance - threshold) / max(threshold, 1e-9)
    sure = "clearly" if margin > 0.25 else "probably" if margin > 0.08 else "only just"
    return (f"The same person ({sure}): distance {distance:.3f} is below the threshold {threshold:.3f}."
            if same else f"Different people ({sure}): distance {distance:.3f} is above the threshold "
                         f"{threshold:.3f}.")


def create_app(root=None, galleries=None, *, max_bytes=limits.MAX_REQUEST_BYTES, max_files=limits.MAX_FILES,
               max_pixels=limits.MAX_PIXELS, allowed_hosts=limits.LOOPBACK):
    """The FastAPI app of `zoo serve` over the zoo at `root`, with server galleries under `galleries`.

    Args:
        root: str | Path | None. the zoo root.
        galleries: str | Path | None. the folder whose subfolders may be searched.
        max_bytes: int. the largest request body.
        max_files: int. the most images in one request.
        max_pixels: int. the decode budget of one image (width x height).
        allowed_hosts: iterable of str. the host names the app answers to (Host header, without port).
    """
    zoo = Zoo(root, galleries, max_pixels)
    app = FastAPI(title="Keras embedding zoo", description="A web page and its JSON API over the published entries.")
    app.add_middleware(LimitRequestBody, max_bytes=max_bytes)
    app.add_middleware(SameOrigin, allowed_hosts=allowed_hosts)  # added last: runs first
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(Refused)
    async def refused(request: Request, err: Refused):
        return _json_error(zoo.private(err.message), err.status)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, err: ValueError):
        return _json_error(zoo.private(str(err)), 400)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, err: RequestValidationError):
        missing = [".".join(str(p) for p in e["loc"][1:]) for e in err.errors()]
        return _json_error(f"the request lacks or garbles the fields {_shown(missing, 200)}", 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):  # Starlette's own: 404, 405, a garbled body
        return _json_error(zoo.private(str(err.detail)), err.status_code)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception):
        return _json_error(f"the server failed on this request ({type(err).__name__})", 500)

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
        with Uploads(zoo, embedder, max_files) as uploads:
            _, crops, _ = uploads.files([a, b])
        (same,), (distance,) = embedder.verify(crops[:1], crops[1:])
        distance = float(distance)
        return {"same": bool(same), "distance": distance, "threshold": embedder.threshold,
                "verdict": _verdict(same, distance, embedder.threshold),
                "crops": {"a": _png_data_url(crops[0]), "b": _png_data_url(crops[1])}}

    @app.post("/api/classify")
    def classify(entry: Annotated[str, Form()], queries: Annotated[list[UploadFile], File()],
                 support: Annotated[list[UploadFile], File()] = None, labels: Annotated[str, Form()] = None,
                 support_zip: Annotated[UploadFile, File()] = None):
        from zoo.runtime import euclidean_distances, nearest_prototypes

        embedder = zoo.embedder(entry)
        with Uploads(zoo, embedder, max_files) as uploads:
            if support_zip is not None:
                classes_of, support_names, support_inputs, support_thumbs = uploads.zipped_classes(support_zip)
            elif support:
                classes_of = _support_labels(labels, len(support))
                support_names, support_inputs, support_thumbs = uploads.files(support)
            else:
                raise Refused(400, "send examples: support files with labels, or support_zip (class folders)")
            query_names, query_inputs, _ = uploads.files(queries)
        if len(set(classes_of)) < 2:
            raise Refused(400, f"give examples of at least two classes, got {_shown(sorted(set(classes_of)), 200)}")
        support_emb, query_emb = embedder.embed(support_inputs), embedder.embed(query_inputs)  # (S, D), (Q, D)
        classes, predictions, probabilities, _ = nearest_prototypes(support_emb, classes_of, query_emb)
        example_d = euclidean_distances(query_emb, support_emb)  # (Q, S): the nearest examples shown beside
        results = []
        for q, name in enumerate(query_names):
            best = int(predictions[q])
            nearest = np.argsort(example_d[q], kind="stable")[:3]
            results.append({"query": name, "class": str(classes[best]), "confidence": float(probabilities[q, best]),
                            "nearest": [{"name": support_names[i], "class": str(classes_of[i]),
                                         "distance": float(example_d[q, i]),
                                         "thumbnail": _png_data_url(support_thumbs[i])} for i in nearest]})
        return {"classes": [str(c) for c in classes], "results": results}

    @app.post("/api/search")
    def search(entry: Annotated[str, Form()], k: Annotated[int, Form()] = 5, gallery: Annotated[str, Form()] = None,
               gallery_files: Annotated[list[UploadFile], File()] = None, query: Annotated[UploadFile, File()] = None,
               text: Annotated[str, Form()] = None):
        from zoo.runtime import nearest_neighbours

        if not 1 <= k <= limits.MAX_K:
            raise Refused(400, f"k must be between 1 and {limits.MAX_K}, got {k}")
        if text is not None and len(text) > limits.MAX_TEXT_CHARS:
            raise Refused(400, f"the words to search by are {len(text)} characters long; at most "
                                f"{limits.MAX_TEXT_CHARS} are read")
        embedder = zoo.embedder(entry)
        with Uploads(zoo, embedder, max_files) as uploads:
            skipped = 0
            if gallery:
                found = zoo.gallery(entry, gallery)
                names, gallery_emb, thumbnails, skipped = (found[key] for key in
                                                           ("names", "embeddings", "thumbnails", "skipped"))
            elif gallery_files:
                names, inputs, thumbnails = uploads.files(gallery_files)
                gallery_emb = embedder.embed(inputs)
            else:
                raise Refused(400, "choose a gallery (a server folder, GET /api/galleries) or upload gallery_files")
            if query is not None:
                query_emb = embedder.embed(uploads.files([query])[1])
            elif text and text.strip():
                if not _has_text(registry.info(entry, zoo.root)):
                    raise Refused(400, f"entry {entry!r} has no text tower; search by text needs a CLIP entry")
                query_emb = zoo.embedder(entry, clip=True).encode_text([text.strip()])
            else:
                raise Refused(400, "send a query picture (query) or words (text)")
        indices, distances = nearest_neighbours(query_emb, gallery_emb, min(k, len(names)))
        shown = lambda t: t if isinstance(t, str) else _png_data_url(t)  # noqa: E731  (cached URLs or arrays)
        return {"neighbours": [{"name": names[i], "distance": float(d), "thumbnail": shown(thumbnails[i])}
                               for i, d in zip(indices[0], distances[0])], "skipped": skipped}

    return app


def serve(host="127.0.0.1", port=8000, root=None, galleries=None, *, max_pixels=None, allowed_hosts=()) -> None:
    """Run the app with uvicorn until interrupted; a host other than loopback gets a warning.

    Args:
        host: str. the address to listen on.
        port: int. the port.
        root: str | Path | None. the zoo root.
        galleries: str | Path | None. the folder of server galleries.
        max_pixels: int | None. the decode budget of one image (default limits.MAX_PIXELS).
        allowed_hosts: iterable of str. host names, beyond loopback and `host`, that requests may name (a
            machine name or address the page is reached by).
    """
    import uvicorn

    if host not in limits.LOOPBACK:
        print(f"zoo serve: warning: listening on {host}, reachable from other machines; the page has no "
              "authentication (use --host 127.0.0.1 to keep it local)", file=sys.stderr)
    names = set(limits.LOOPBACK) | set(allowed_hosts) | ({host} if host not in ("0.0.0.0", "::", "") else set())
    app = create_app(root, galleries, max_pixels=max_pixels or limits.MAX_PIXELS, allowed_hosts=names)
    uvicorn.run(app, host=host, port=port, log_level="warning", http=protocol_with_header_timeout(),
                timeout_keep_alive=5, limit_concurrency=64)
