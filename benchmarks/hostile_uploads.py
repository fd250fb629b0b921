"""`zoo serve` under small hostile uploads and foreign web pages: status, time and the server's peak memory.

    python benchmarks/hostile_uploads.py [--checkout DIR] [--out benchmarks/results/hostile_uploads.json]

Each probe is sent to a fresh `zoo serve` (run from `--checkout`, default this one, so an older commit can be
measured beside this one) on a loopback port. The server's peak resident memory is the kernel's VmHWM,
reset before each probe, after a small verify and search have loaded the entries; a watcher kills the
server past 4 GB (then the row says "killed"). Probes:

    gif_screen          /api/search (protonet): a 35-byte GIF, one 1x1 frame on a 13000x13000 screen, as query
    flat_png_13000      /api/search (protonet): a 13000x13000 grey PNG (190 KB) as query
    png_6000_x12        /api/search (protonet): 12 uploaded 6000x6000 RGB PNGs (120 KB each) as the gallery
    zip_1gb_member      /api/classify (protonet): a 1 MB zip whose member cls/x.png expands to 1 GB
    zip_two_padded      /api/classify (protonet): a 2 MB zip of two PNGs, each followed by 1 GB of zeros
    verify_6000         /api/verify (facenet_triplet): one 6000x6000 JPEG photo of a face beside a 250x250 one;
                        also `rss_after_mb - rss_before_mb`; and again with `--max-pixels 40000000` (the photo
                        is then decoded, detected and aligned)
    gallery_40_first    /api/search (protonet, k=1) over a server gallery of 40 3000x2000 JPEGs, first time
    gallery_40_again    the same search once more
    foreign_host        GET /api/galleries with Host: evil.example
    cross_site_post     POST /api/search with Origin: http://evil.example
    k_1e9               POST /api/search with k=1000000000 over the server gallery

The JSON records the CPU (`zoo.runtime.cpu_features`) and the commit of the checkout measured.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zoo.data  # noqa: E402
from zoo.data.originals import lfw_photo  # noqa: E402
from zoo.probes import ServerProcess, flat_png, gif_screen, png, zip_bomb  # noqa: E402
from zoo.runtime import cpu_features  # noqa: E402
from zoo.runtime import images as ops  # noqa: E402


def _send(server, method, path, **kw):
    server.reset_peak()
    before = server.rss()
    start = time.perf_counter()
    try:
        response = httpx.request(method, server.url + path, timeout=120, **kw)
        status, body = response.status_code, response.text
    except httpx.TransportError as err:
        status, body = None, f"{type(err).__name__}"
    seconds = time.perf_counter() - start
    time.sleep(0.3)  # let the watcher see the last of it
    row = {"status": status, "seconds": round(seconds, 2)}
    try:
        parsed = json.loads(body)
        row["json"] = True
        row["answer"] = str(parsed.get("error", "ok") if isinstance(parsed, dict) else "ok")[:160]
    except (ValueError, AttributeError):
        row["json"] = False
        row["answer"] = body[:160]
    if server.killed:
        row["killed"] = server.killed
    elif server.alive():
        row.update(peak_rss_mb=round(server.peak_rss()), rss_before_mb=round(before), rss_after_mb=round(server.rss()))
    return row


def _photos(folder: Path, n=40, size=(2000, 3000)):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        smooth = ops.resize(rng.integers(0, 256, (size[0] // 50, size[1] // 50, 3), dtype=np.uint8), size, "bilinear")
        Image.fromarray(smooth).save(folder / f"photo{i:02d}.jpg", quality=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", default=str(ROOT), help="the checkout whose zoo serve is measured")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hostile_uploads.json"))
    parser.add_argument("--only", action="append", help="run only these probes (repeatable)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", args.checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="zoo-hostile-"))
    galleries = tmp / "galleries"
    _photos(galleries / "photos")
    small = png(zoo.data.load("omniglot", "evaluation")["images"][0])
    lfw = zoo.data.load("lfw", "test")
    face = lfw_photo(lfw["images"][0])
    big_face = tmp / "face6000.jpg"
    Image.fromarray(ops.resize(face, (6000, 6000), "bilinear")).save(big_face, quality=90)
    face_bytes = _jpeg(face)
    rgb6000 = flat_png(6000, 6000, "RGB", 90)
    probes = {
        "gif_screen": ("POST", "/api/search", {"data": {"entry": "protonet"},
                                               "files": [("gallery_files", ("g.png", small, "image/png")),
                                                         ("query", ("q.gif", gif_screen(13000), "image/gif"))]}),
        "flat_png_13000": ("POST", "/api/search", {"data": {"entry": "protonet"},
                                                   "files": [("gallery_files", ("g.png", small, "image/png")),
                                                             ("query", ("q.png", flat_png(13000, 13000), "image/png"))]}),
        "png_6000_x12": ("POST", "/api/search", {"data": {"entry": "protonet"},
                                                 "files": [("gallery_files", (f"g{i}.png", rgb6000, "image/png"))
                                                           for i in range(12)]
                                                 + [("query", ("q.png", small, "image/png"))]}),
        "zip_1gb_member": ("POST", "/api/classify", {"data": {"entry": "protonet"},
                                                     "files": [("support_zip", ("s.zip", zip_bomb([("cls/x.png", b"", 1 << 30)]),
                                                                                "application/zip")),
                                                               ("queries", ("q.png", small, "image/png"))]}),
        "zip_two_padded": ("POST", "/api/classify", {"data": {"entry": "protonet"},
                                                     "files": [("support_zip", ("s.zip", zip_bomb(
                                                         [("a/x.png", small, 1 << 30), ("b/y.png", small, 1 << 30)]),
                                                         "application/zip")),
                                                               ("queries", ("q.png", small, "image/png"))]}),
        "verify_6000": ("POST", "/api/verify", {"data": {"entry": "facenet_triplet"},
                                                "files": {"a": ("a.jpg", big_face.read_bytes(), "image/jpeg"),
                                                          "b": ("b.jpg", face_bytes, "image/jpeg")}}),
        "gallery_40_first": ("POST", "/api/search", {"data": {"entry": "protonet", "gallery": "photos", "k": "1"},
                                                     "files": {"query": ("q.png", small, "image/png")}}),
        "gallery_40_again": ("POST", "/api/search", {"data": {"entry": "protonet", "gallery": "photos", "k": "1"},
                                                     "files": {"query": ("q.png", small, "image/png")}}),
        "foreign_host": ("GET", "/api/galleries", {"headers": {"Host": "evil.example"}}),
        "cross_site_post": ("POST", "/api/search", {"data": {"entry": "protonet", "gallery": "photos", "k": "1"},
                                                    "files": {"query": ("q.png", small, "image/png")},
                                                    "headers": {"Origin": "http://evil.example"}}),
        "k_1e9": ("POST", "/api/search", {"data": {"entry": "protonet", "gallery": "photos", "k": "1000000000"},
                                          "files": {"query": ("q.png", small, "image/png")}}),
    }
    chosen = args.only or list(probes)
    results = {"command": "python benchmarks/hostile_uploads.py" + (f" --checkout {args.checkout}"
                                                                    if Path(args.checkout) != ROOT else ""),
               "commit": commit, "cpu": cpu_features(), "probes": {}}
    server = None
    try:
        for name in chosen:
            if server is None or not server.alive() or name != "gallery_40_again":
                if server is not None:
                    server.__exit__()
                server = ServerProcess(["--galleries", galleries], cwd=args.checkout).__enter__()
                _warm(server, small, face_bytes)
            method, path, kw = probes[name]
            row = _send(server, method, path, **kw)
            results["probes"][name] = row
            print(f"{name:18s} {row}", flush=True)
        if "verify_6000" in chosen:
            server.__exit__()
            server = ServerProcess(["--galleries", galleries, "--max-pixels", 40_000_000], cwd=args.checkout)
            try:
                server.__enter__()
                _warm(server, small, face_bytes)
                row = _send(server, *probes["verify_6000"][:2], **probes["verify_6000"][2])
            except RuntimeError as err:  # an older zoo serve has no --max-pixels
                row = {"error": str(err)[-200:]}
            results["probes"]["verify_6000_budget_40mpx"] = row
            print(f"{'verify_6000_40mpx':18s} {row}", flush=True)
    finally:
        if server is not None:
            server.__exit__()
        shutil.rmtree(tmp, ignore_errors=True)  # the folder this run made
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.out).with_name(Path(args.out).name + ".partial")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}")


def _warm(server, drawing, face):
    """Load the two entries the probes use with small requests, so `rss_before_mb` is the loaded server's."""
    httpx.post(server.url + "/api/verify", data={"entry": "facenet_triplet"}, timeout=120,
               files={"a": ("a.jpg", face, "image/jpeg"), "b": ("b.jpg", face, "image/jpeg")})
    httpx.post(server.url + "/api/search", data={"entry": "protonet", "k": "1"}, timeout=120,
               files=[("gallery_files", ("g.png", drawing, "image/png")), ("query", ("q.png", drawing, "image/png"))])


def _jpeg(image) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
