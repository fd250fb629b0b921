"""`zoo serve` against small hostile uploads and other web pages, on a free loopback port, bounded in time and
memory: decode budget from the header, zip limits, same-origin only, capped k, JSON errors in words without
server paths, hidden folders, galleries built once, a header timeout, and the server's peak memory.

The bombs are `zoo.probes`' at a size that fails fast without the fix: the server runs with an 8 Mpx budget,
so a 9 Mpx GIF screen is refused where an unguarded server would decode it (and 169 Mpx ones take GBs; see
benchmarks/hostile_uploads.py for those).
"""

import io
import os
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

import zoo.data
from zoo import serve
from zoo.data.originals import lfw_photo
from zoo.probes import ServerProcess, flat_png, gif_screen, png, zip_bomb, zip_patched
from zoo.runtime import images as ops

BUDGET = 8_000_000
HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def galleries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("galleries")
    rng = np.random.default_rng(0)
    (folder / "bmps").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "bmps" / f"b{i}.bmp")
    (folder / "mixed").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / "mixed" / "ok.png")
    (folder / "mixed" / "empty.png").write_bytes(b"")
    (folder / "broken").mkdir()
    (folder / "broken" / "empty.png").write_bytes(b"")
    (folder / ".hidden").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / ".hidden" / "h.png")
    return folder


@pytest.fixture(scope="module")
def server(galleries):
    with ServerProcess(["--galleries", galleries, "--max-pixels", BUDGET],
                       settings={"HEADER_TIMEOUT_S": HEADER_TIMEOUT_S, "MAX_ZIP_MEMBER_BYTES": 2 << 20,
                                 "MAX_ZIP_TOTAL_BYTES": 5 << 20}, kill_above_mb=2048) as process:
        yield process


@pytest.fixture(scope="module")
def drawing():
    return png(zoo.data.load("omniglot", "evaluation")["images"][0])


def search(server, drawing, files=None, headers=None, **fields):
    files = files or {"query": ("q.png", drawing, "image/png")}
    return httpx.post(server.url + "/api/search", data={"entry": "protonet", **fields}, files=files,
                      headers=headers, timeout=60)


def error_of(response, status):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


def test_images_past_the_budget_are_refused_from_their_header(server, drawing):
    for name, data in (("screen.gif", gif_screen(3000)), ("flat.png", flat_png(3000, 3000))):
        start = time.perf_counter()
        message = error_of(search(server, drawing, gallery="bmps", files={"query": (name, data, "image/png")}), 400)
        assert f"{name}: 3000 x 3000 = 9.0 Mpx, past the decode budget of 8.0 Mpx" in message
        assert time.perf_counter() - start < 2


@pytest.mark.slow
def test_a_request_decodes_its_files_one_at_a_time(server, drawing):
    photo = flat_png(2800, 2800, "RGB", 90)  # 7.8 Mpx, 23.5 MB decoded
    files = [("gallery_files", (f"g{i}.png", photo, "image/png")) for i in range(12)]
    server.reset_peak()
    before = server.rss()
    response = search(server, drawing, k="3", files=files + [("query", ("q.png", drawing, "image/png"))])
    assert response.status_code == 200 and len(response.json()["neighbours"]) == 3
    # All twelve decoded at once would be 282 MB of pixels alone.
    assert server.peak_rss() - before < 200


def test_support_zips_are_read_within_limits(server, drawing):
    query = ("queries", ("q.png", drawing, "image/png"))

    def classify(archive):
        return httpx.post(server.url + "/api/classify", data={"entry": "protonet"}, timeout=60,
                          files=[("support_zip", ("s.zip", archive, "application/zip")), query])

    bomb = zip_bomb([("cls/x.png", b"", 20 << 20)])
    assert len(bomb) < 50_000
    assert "cls/x.png: expands more than 100 times" in error_of(classify(bomb), 413)
    noise = np.random.default_rng(0).bytes(3 << 20)  # incompressible: only the byte limits stop it
    assert "cls/x.png: expands past 2 MB" in error_of(classify(zip_bomb([("cls/x.png", noise, 0)])), 413)
    bmp = io.BytesIO()
    Image.fromarray(np.frombuffer(noise[: 800 * 800 * 3], np.uint8).reshape(800, 800, 3)).save(bmp, "BMP")
    three = zip_bomb([(f"cls/{i}.bmp", bmp.getvalue(), 0) for i in range(3)])  # 1.9 MB images, 5 MB in all
    assert "cls/2.bmp: expands past 1 MB" in error_of(classify(three), 413)
    assert "cls/x.png: damaged in the zip" in error_of(classify(zip_patched("cls/x.png", drawing, bad_crc=True)), 400)
    assert "cls/x.png: encrypted" in error_of(classify(zip_patched("cls/x.png", drawing, encrypted=True)), 400)
    assert "compression method 99" in error_of(classify(zip_patched("cls/x.png", drawing, method=99)), 400)
    many = io.BytesIO()
    with __import__("zipfile").ZipFile(many, "w") as archive:
        for i in range(serve.MAX_ZIP_MEMBERS + 1):
            archive.writestr(f"c/{i}.txt", b"")
    assert f"more than {serve.MAX_ZIP_MEMBERS}" in error_of(classify(many.getvalue()), 413)
    assert "not a zip file" in error_of(classify(b"PK\x03\x04 not really"), 400)


def test_only_its_own_origin_is_answered(server, drawing):
    assert "not the Host 'evil.example'" in error_of(
        httpx.get(server.url + "/api/galleries", headers={"Host": "evil.example"}), 421)
    assert httpx.get(server.url + "/api/galleries", headers={"Host": f"localhost:{server.port}"}).status_code == 200
    refused = search(server, drawing, gallery="bmps", headers={"Origin": "http://evil.example"})
    assert "cross-site request refused" in error_of(refused, 403)
    refused = search(server, drawing, gallery="bmps", headers={"Sec-Fetch-Site": "cross-site"})
    assert "cross-site request refused" in error_of(refused, 403)
    same = search(server, drawing, gallery="bmps", headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200
    preflight = httpx.options(server.url + "/api/search", headers={"Origin": "http://evil.example",
                                                                  "Access-Control-Request-Method": "POST"})
    for response in (refused, same, preflight):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_k_is_capped(server, drawing):
    assert f"between 1 and {serve.MAX_K}" in error_of(search(server, drawing, gallery="bmps", k="1000000000"), 400)
    assert f"between 1 and {serve.MAX_K}" in error_of(search(server, drawing, gallery="bmps", k="0"), 400)


@pytest.mark.parametrize("labels", ['[["x"],["y"]]', '[{"a":1},{"b":2}]', '[null,"y"]', "[true,1]", '["a"]', "x"])
def test_labels_that_are_not_class_names_are_a_400(server, drawing, labels):
    files = [("support", ("a.png", drawing, "image/png")), ("support", ("b.png", drawing, "image/png")),
             ("queries", ("q.png", drawing, "image/png"))]
    response = httpx.post(server.url + "/api/classify", data={"entry": "protonet", "labels": labels}, files=files)
    assert "labels must be a JSON list of 2 class names" in error_of(response, 400)


def test_every_error_is_json_in_words_without_server_paths(server, drawing, galleries):
    long_name = "n" * 300 + ".png"
    answer = search(server, drawing, gallery="bmps", files={"query": (long_name, drawing, "image/png")})
    assert answer.status_code == 200
    files = [("gallery_files", (long_name, drawing, "image/png")), ("query", ("q.png", drawing, "image/png"))]
    name = search(server, drawing, files=files).json()["neighbours"][0]["name"]
    assert len(name) <= serve.MAX_NAME_CHARS and name.endswith(".png")
    assert "at most 1000" in error_of(search(server, drawing, gallery="bmps", text="w" * 2000), 400)
    error_of(search(server, drawing, gallery="bmps", text="w" * (1 << 20) + "x"), 400)
    assert "Not Found" in error_of(httpx.get(server.url + "/nowhere"), 404)
    # A chunked body (no Content-Length) past the limit: 413 in the app's words, not a parse error.
    head = b'--b\r\nContent-Disposition: form-data; name="query"; filename="q.png"\r\nContent-Type: image/png\r\n\r\n'
    chunks = (head if i < 0 else b"x" * (1 << 20) for i in range(-1, 22))
    response = httpx.post(server.url + "/api/search", content=chunks,
                          headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=60)
    assert "larger than 20 MB" in error_of(response, 413)
    huge_name = "g" * 100_000
    message = error_of(search(server, drawing, gallery=huge_name), 400)
    assert "unknown gallery" in message and len(message) < 500
    not_image = error_of(search(server, drawing, gallery="bmps", files={"query": ("notes.png", b"words", "image/png")}),
                         400)
    broken = error_of(search(server, drawing, gallery="broken"), 400)
    for message in (not_image, broken):
        assert str(galleries) not in message and "/tmp" not in message and "zoo-serve-" not in message
    assert not_image.startswith("notes.png: not an image")


def test_a_gallery_skips_what_it_cannot_read_and_hides_hidden_folders(server, drawing):
    assert httpx.get(server.url + "/api/galleries").json() == ["bmps", "broken", "mixed"]
    answer = search(server, drawing, gallery="mixed", k="5").json()
    assert [n["name"] for n in answer["neighbours"]] == ["ok.png"] and answer["skipped"] == 1
    assert "unknown gallery '.hidden'" in error_of(search(server, drawing, gallery=".hidden"), 400)


def test_a_gallery_is_embedded_once_per_state_of_its_folder(server, drawing, galleries):
    first = search(server, drawing, gallery="bmps", k="3").json()
    target = galleries / "bmps" / first["neighbours"][0]["name"]
    stat = target.stat()
    # Same name, size and mtime, bytes that no longer decode: the cached embeddings and thumbnails answer, so
    # nothing of the folder was decoded again.
    target.write_bytes(bytes(stat.st_size))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert search(server, drawing, gallery="bmps", k="3").json() == first
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # changed: built again, the file skipped
    again = search(server, drawing, gallery="bmps", k="3").json()
    assert again["skipped"] == 1 and target.name not in [n["name"] for n in again["neighbours"]]


def test_a_connection_that_never_finishes_its_headers_is_closed(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=HEADER_TIMEOUT_S + 5) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        assert s.recv(100) == b""  # closed by the server, no answer
        assert time.monotonic() - start < HEADER_TIMEOUT_S + 3


def test_a_large_face_photo_costs_memory_only_while_it_is_verified(server):
    face = lfw_photo(zoo.data.load("lfw", "test")["images"][0])
    small, large = io.BytesIO(), io.BytesIO()
    Image.fromarray(face).save(small, "JPEG", quality=95)
    Image.fromarray(ops.resize(face, (2800, 2800), "bilinear")).save(large, "JPEG", quality=90)

    def verify(a):
        return httpx.post(server.url + "/api/verify", data={"entry": "facenet_triplet"}, timeout=60,
                          files={"a": ("a.jpg", a, "image/jpeg"), "b": ("b.jpg", small.getvalue(), "image/jpeg")})

    assert verify(small.getvalue()).status_code == 200  # the entry and the detector loaded
    before = server.rss()
    answer = verify(large.getvalue()).json()
    assert answer["same"], answer
    assert server.rss() - before < 200


def test_the_server_stayed_under_1_gb_throughout(server):
    assert server.alive() and server.killed is None
    assert server.overall_peak_rss() < 1024
