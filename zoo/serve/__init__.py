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

from . import limits
from .app import STATIC, Zoo, create_app, serve
from .limits import *  # noqa: F401,F403  (the limits, as zoo.serve.MAX_K ...)

__all__ = ["create_app", "serve", "Zoo", "STATIC", "limits"] + [n for n in dir(limits) if n.isupper()]
