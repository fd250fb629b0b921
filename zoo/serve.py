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

Safe by default:
- it answers only requests whose Host names it (loopback, or what --host and --allow-host say), so a web page
  that rebinds its own name to 127.0.0.1 gets 421; a POST that a browser marks cross-site (Sec-Fetch-Site or
  Origin) gets 403; no CORS header is sent;
- loopback unless --host says otherwise (then a warning); a request body above MAX_REQUEST_BYTES gets 413
  (also when it is sent chunked), more than MAX_FILES files 413, k above MAX_K 400;
- every image is checked against the decode budget (MAX_PIXELS, `--max-pixels`) from its header before it
  is decoded, and a request decodes its files one at a time; a support zip is read as streams within
  MAX_ZIP_* limits (members, bytes, expansion);
- uploads are written to a temporary folder that is deleted when the request ends; a gallery is only ever a
  visible folder directly under --galleries, named in the request (no paths, no `..`, no symlink leading
  out); its embeddings and thumbnails are built once per state of the folder;
- errors are JSON `{"error": "..."}` in words, without server paths, echoing inputs cut short; a connection
  that does not finish its request head within HEADER_TIMEOUT_S is closed.
Embedders are shared between threads (onnxruntime sessions are thread-safe), so concurrent requests get the
answers sequential ones get. Every page asset is served by the app (no CDN).
"""

import base64
import io
import json
import sys
import tempfile
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from zoo import registry

# 20 MiB: a 25 MB upload is refused with 413 before the body is read (or as soon as it passes the limit).
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_FILES = 64
# The server's decode budget per image (width x height, read from the header before decoding): 25 Mpx takes a
# 6000 x 4000 camera photo; `zoo serve --max-pixels` changes it.
MAX_PIXELS = 25_000_000
MAX_K = 100                      # neighbours in one search answer
MAX_TEXT_CHARS = 1000            # a search by words
MAX_LABEL_CHARS = 100            # a class name
MAX_NAME_CHARS = 100             # a file name as kept and echoed (its suffix is kept)
# A support zip: members listed, bytes of one member and of all, as read (never as the zip claims), and the
# largest expansion of a member past 1 MB (an image file compresses little; a bomb by orders of magnitude).
MAX_ZIP_MEMBERS = 1000
MAX_ZIP_MEMBER_BYTES = 16 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 64 * 1024 * 1024
MAX_ZIP_RATIO = 100
GALLERIES_CACHED = 8             # server galleries whose embeddings and thumbnails stay in memory
THUMBNAIL_SIDE = 160
HEADER_TIMEOUT_S = 10            # a connection that has not sent a request's headers by then is closed
STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def _json_error(message, status):
    return JSONResponse({"error": message}, status_code=status)


class LimitRequestBody:
    """ASGI middleware: 413 for a body above `max_bytes`, by Content-Length or while it streams in (chunked):
    whatever the app made of the cut body is dropped and the 413 sent instead."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _json_error(f"the upload is larger than {self.max_bytes // 2**20} MB; send fewer or smaller "
                                "files", 413)
        length = dict(scope["headers"]).get(b"content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            return await _json_error("the Content-Length header is not a number", 400)(scope, receive, send)
        if declared is not None and declared > self.max_bytes:
            return await too_large(scope, receive, send)
        received, exceeded = 0, False

        async def counted_receive():
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = True
                raise _TooLarge
            return message

        async def guarded_send(message):
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded:
            await too_large(scope, receive, send)


def _host_name(host_header: str) -> str:
    """The name part of a Host header: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:8000" -> "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SameOrigin:
    """ASGI middleware: answer only requests whose Host names this server (DNS rebinding gets 421), and refuse
    every cross-site request that may change or cost something (not GET/HEAD/OPTIONS) with 403: a browser sends
    `Sec-Fetch-Site` and `Origin`, which must say same-origin. No CORS header is ever sent, so other sites can
    read nothing either. Clients that send neither header (curl, httpx, scripts) are not browsers and pass.

    Args:
        allowed_hosts: iterable of str. host names (no port) this server answers to.
    """

    def __init__(self, app, allowed_hosts):
        self.app, self.allowed = app, {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if _host_name(host) not in self.allowed:
            return await _json_error(f"this server answers to {sorted(self.allowed)}, not the Host "
                                     f"{_shown(host)!r}", 421)(scope, receive, send)
        if scope["method"] not in _SAFE_METHODS:
            site, origin = headers.get("sec-fetch-site"), headers.get("origin")
            if site is not None and site not in ("same-origin", "none"):
                return await _json_error(f"cross-site request refused (Sec-Fetch-Site: {_shown(site)})",
                                         403)(scope, receive, send)
            if origin is not None and origin.lower() != f"{scope.get('scheme', 'http')}://{host}".lower():
                return await _json_error(f"cross-site request refused (Origin: {_shown(origin)})",
                                         403)(scope, receive, send)
        return await self.app(scope, receive, send)


def _shown(text, limit=80) -> str:
    """`text` as an answer may echo it: at most `limit` characters, the cut marked."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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

    def __init__(self, root=None, galleries=None, max_pixels=MAX_PIXELS):
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
            raise ValueError(f"unknown entry {_shown(name)!r}; GET /api/entries lists them")
        with self._lock:
            key = (name, clip)
            if key not in self._embedders:
                folder = self.root / name
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
        except OSError as err:  # e.g. a gallery file removed while it is read
            raise ValueError(f"{shown}: cannot be read ({err.strerror or type(err).__name__})") from None
        except ValueError as err:
            raise ValueError(str(err).replace(str(path), shown)) from None
        x = contract.prepare(image, embedder.preprocessing, embedder.input_shape, name=shown)
        scale = THUMBNAIL_SIDE / max(image.shape[:2])
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
        GALLERIES_CACHED are kept. Files that cannot be read are skipped and counted."""
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
            while len(self._gallery_cache) > GALLERIES_CACHED:
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


def _png_data_url(image, max_side=THUMBNAIL_SIDE) -> str:
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
    """A file name reduced to its last component, printable, at most MAX_NAME_CHARS characters (its suffix
    kept): uploads never choose where they are written, nor how long a name the file system must take."""
    name = PurePosixPath(str(filename or "").replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable())
    if name in ("", ".", ".."):
        return fallback
    if len(name) > MAX_NAME_CHARS:
        suffix = PurePosixPath(name).suffix[:10]
        name = name[: MAX_NAME_CHARS - len(suffix) - 3] + "..." + suffix
    return name


def _support_labels(labels, count) -> list:
    """The `labels` field of a classify request: a JSON list of `count` class names (non-empty strings)."""
    try:
        value = json.loads(labels or "")
    except (json.JSONDecodeError, RecursionError):
        value = None
    if not (isinstance(value, list) and len(value) == count
            and all(isinstance(v, str) and v.strip() and len(v) <= MAX_LABEL_CHARS for v in value)):
        raise _Refused(400, f"labels must be a JSON list of {count} class names (strings of 1 to {MAX_LABEL_CHARS} "
                            f"characters), one per support file; got {_shown(labels)!r}")
    return value


_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


class Uploads:
    """Uploaded files written to a temporary folder that is deleted on exit, decoded one at a time.

    Args:
        zoo: Zoo. decodes within its budget.
        embedder: OnnxEmbedder. whose contract the files are prepared by.
        max_files: int. images in one request.
    """

    def __init__(self, zoo, embedder, max_files=MAX_FILES):
        self.zoo, self.embedder, self.max_files, self.count = zoo, embedder, max_files, 0

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="zoo-serve-")
        self.folder = Path(self._tmp.name)
        return self

    def __exit__(self, *exc):
        self._tmp.cleanup()

    def _counted(self):
        self.count += 1
        if self.count > self.max_files:
            raise _Refused(413, f"more than {self.max_files} files in one request; send fewer")

    def files(self, uploads) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
        """(names, model inputs (N, H, W, C), thumbnails) of UploadFiles; a file that is not an image is a 400
        naming it."""
        names, inputs, thumbnails = [], [], []
        for i, upload in enumerate(uploads):
            self._counted()
            name = _safe_name(upload.filename, f"upload-{i}")
            path = self.folder / f"{self.count:04d}-{name}"
            path.write_bytes(upload.file.read())
            x, thumbnail = self.zoo.decode(self.embedder, path, name)
            path.unlink()
            names.append(name)
            inputs.append(x)
            thumbnails.append(thumbnail)
        return names, np.stack(inputs), thumbnails

    def zipped_classes(self, upload) -> tuple[list[str], list[str], np.ndarray, list[np.ndarray]]:
        """(classes, names, model inputs, thumbnails) from a zip of class folders: <class>/<image> (any depth
        above <class>), members read as streams within MAX_ZIP_* limits, never written to disk."""
        from zoo.runtime.files import IMAGE_SUFFIXES

        try:
            archive = zipfile.ZipFile(io.BytesIO(upload.file.read()))
            members = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
            raise _Refused(400, f"{_safe_name(upload.filename, 'the zip')}: not a zip file that can be read") \
                from None
        if len(members) > MAX_ZIP_MEMBERS:
            raise _Refused(413, f"the zip lists {len(members)} members, more than {MAX_ZIP_MEMBERS}")
        labels, names, inputs, thumbnails, total = [], [], [], [], 0
        for member in members:
            parts = PurePosixPath(member.filename).parts
            if member.is_dir() or len(parts) < 2 or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            shown = _shown(member.filename)
            if len(parts[-2]) > MAX_LABEL_CHARS:
                raise _Refused(400, f"{shown}: a class folder name longer than {MAX_LABEL_CHARS} characters")
            self._counted()
            data = self._read_member(archive, member, shown, MAX_ZIP_TOTAL_BYTES - total)
            total += len(data)
            name = f"{parts[-2]}/{_safe_name(parts[-1], 'image')}"
            x, thumbnail = self.zoo.decode(self.embedder, name, name, data=data)
            labels.append(parts[-2])
            names.append(name)
            inputs.append(x)
            thumbnails.append(thumbnail)
        if not inputs:
            raise _Refused(400, "the zip holds no images in class folders (expected <class>/<image>.png ...)")
        return labels, names, np.stack(inputs), thumbnails

    @staticmethod
    def _read_member(archive, member, shown, budget) -> bytes:
        """A member's bytes as they decompress, refused as soon as they pass a limit."""
        if member.flag_bits & 0x1:
            raise _Refused(400, f"{shown}: encrypted; send a zip without a password")
        if member.compress_type not in _ZIP_METHODS:
            raise _Refused(400, f"{shown}: compression method {member.compress_type} is not one of stored, "
                                "deflate, bzip2, lzma")
        limit = min(MAX_ZIP_MEMBER_BYTES, budget)
        chunks, size = [], 0
        try:
            with archive.open(member) as stream:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(413, f"{shown}: expands past {limit // 2**20} MB (a member may hold "
                                            f"{MAX_ZIP_MEMBER_BYTES // 2**20} MB, the zip "
                                            f"{MAX_ZIP_TOTAL_BYTES // 2**20} MB)")
                    if size > 2**20 and size > MAX_ZIP_RATIO * max(member.compress_size, 1):
                        raise _Refused(413, f"{shown}: expands more than {MAX_ZIP_RATIO} times; not an image file")
                    chunks.append(chunk)
        except _Refused:
            raise
        except Exception as err:  # BadZipFile (a bad CRC), zlib.error, lzma.LZMAError, EOFError: a corrupt member
            raise _Refused(400, f"{shown}: damaged in the zip ({type(err).__name__})") from None
        return b"".join(chunks)


def _verdict(same, distance, threshold) -> str:
    margin = abs(distance - threshold) / max(threshold, 1e-9)
    sure = "clearly" if margin > 0.25 else "probably" if margin > 0.08 else "only just"
    return (f"The same person ({sure}): distance {distance:.3f} is below the threshold {threshold:.3f}."
            if same else f"Different people ({sure}): distance {distance:.3f} is above the threshold "
                         f"{threshold:.3f}.")


def create_app(root=None, galleries=None, *, max_bytes=MAX_REQUEST_BYTES, max_files=MAX_FILES, max_pixels=MAX_PIXELS,
               allowed_hosts=LOOPBACK):
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
    app = FastAPI(title="Keras embedding zoo", description=__doc__.split("\n\n")[0])
    app.add_middleware(LimitRequestBody, max_bytes=max_bytes)
    app.add_middleware(SameOrigin, allowed_hosts=allowed_hosts)  # added last: runs first
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(_Refused)
    async def refused(request: Request, err: _Refused):
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
        from zoo.runtime import few_shot_scores

        embedder = zoo.embedder(entry)
        with Uploads(zoo, embedder, max_files) as uploads:
            if support_zip is not None:
                classes_of, support_names, support_inputs, support_thumbs = uploads.zipped_classes(support_zip)
            elif support:
                classes_of = _support_labels(labels, len(support))
                support_names, support_inputs, support_thumbs = uploads.files(support)
            else:
                raise _Refused(400, "send examples: support files with labels, or support_zip (class folders)")
            query_names, query_inputs, _ = uploads.files(queries)
        if len(set(classes_of)) < 2:
            raise _Refused(400, f"give examples of at least two classes, got {_shown(sorted(set(classes_of)), 200)}")
        classes, probabilities, example_d = few_shot_scores(embedder.embed(support_inputs), classes_of,
                                                            embedder.embed(query_inputs))
        results = []
        for q, name in enumerate(query_names):
            best = int(np.argmax(probabilities[q]))
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

        if not 1 <= k <= MAX_K:
            raise _Refused(400, f"k must be between 1 and {MAX_K}, got {k}")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise _Refused(400, f"the words to search by are {len(text)} characters long; at most "
                                f"{MAX_TEXT_CHARS} are read")
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
                raise _Refused(400, "choose a gallery (a server folder, GET /api/galleries) or upload gallery_files")
            if query is not None:
                query_emb = embedder.embed(uploads.files([query])[1])
            elif text and text.strip():
                if not _has_text(registry.info(entry, zoo.root)):
                    raise _Refused(400, f"entry {entry!r} has no text tower; search by text needs a CLIP entry")
                query_emb = zoo.embedder(entry, clip=True).encode_text([text.strip()])
            else:
                raise _Refused(400, "send a query picture (query) or words (text)")
        indices, distances = nearest_neighbours(query_emb, gallery_emb, min(k, len(names)))
        shown = lambda t: t if isinstance(t, str) else _png_data_url(t)  # noqa: E731  (cached URLs or arrays)
        return {"neighbours": [{"name": names[i], "distance": float(d), "thumbnail": shown(thumbnails[i])}
                               for i, d in zip(indices[0], distances[0])], "skipped": skipped}

    return app


def _protocol_with_header_timeout():
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head within
    HEADER_TIMEOUT_S of connecting or of its last answer (uvicorn times out idle keep-alive connections only
    after a first answer, so a client that never finishes its headers would hold a socket forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_timer()

        def _arm_header_timer(self):
            waiting_after = self.cycle  # a new request replaces the cycle once its head is parsed
            self._header_timer = self.loop.call_later(
                HEADER_TIMEOUT_S, lambda: self.cycle is waiting_after and not self.transport.is_closing()
                and self.transport.close())

        def on_response_complete(self):
            self._header_timer.cancel()
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc):
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11


def serve(host="127.0.0.1", port=8000, root=None, galleries=None, *, max_pixels=None, allowed_hosts=()) -> None:
    """Run the app with uvicorn until interrupted; a host other than loopback gets a warning.

    Args:
        host: str. the address to listen on.
        port: int. the port.
        root: str | Path | None. the zoo root.
        galleries: str | Path | None. the folder of server galleries.
        max_pixels: int | None. the decode budget of one image (default MAX_PIXELS).
        allowed_hosts: iterable of str. host names, beyond loopback and `host`, that requests may name (a
            machine name or address the page is reached by).
    """
    import uvicorn

    if host not in LOOPBACK:
        print(f"zoo serve: warning: listening on {host}, reachable from other machines; the page has no "
              "authentication (use --host 127.0.0.1 to keep it local)", file=sys.stderr)
    names = set(LOOPBACK) | set(allowed_hosts) | ({host} if host not in ("0.0.0.0", "::", "") else set())
    uvicorn.run(create_app(root, galleries, max_pixels=max_pixels or MAX_PIXELS, allowed_hosts=names), host=host, port=port,
                log_level="warning", http=_protocol_with_header_timeout(), timeout_keep_alive=5,
                limit_concurrency=64)
