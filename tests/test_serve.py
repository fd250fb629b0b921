"""`zoo serve` started on a free loopback port, driven through its JSON API and, in headless Chromium, its page."""

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import zoo.data
from zoo import registry
from zoo.cli import main
from zoo.data.originals import lfw_photo
from zoo.runtime import OnnxCLIP, OnnxEmbedder, prototype_distances, read_image

FACES = "facenet_triplet"


def png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Photos of two LFW test people (two of the first, one of the second), Omniglot drawings of three characters
    (5 drawers each, plus one more drawer as the query) and a server gallery of 12 emoji."""
    folder = tmp_path_factory.mktemp("files")
    lfw = zoo.data.load("lfw", "test")
    alice = lfw["labels"] == lfw["labels"][0]
    first, second = np.flatnonzero(alice)[:2], np.flatnonzero(~alice)[0]
    faces = {}
    for name, row in (("alice1.jpg", first[0]), ("alice2.jpg", first[1]), ("bob.jpg", second)):
        Image.fromarray(lfw_photo(lfw["images"][row])).save(folder / name, quality=95)
        faces[name] = folder / name
    omniglot = zoo.data.load("omniglot", "evaluation", size=105)
    drawings = {}
    for c in range(3):
        rows = np.flatnonzero(omniglot["labels"] == np.unique(omniglot["labels"])[c])[:6]
        drawings[f"char{c}"] = [png(omniglot["images"][r]) for r in rows]
    galleries = folder / "galleries"
    (galleries / "emoji").mkdir(parents=True)
    for i, image in enumerate(zoo.data.load("emoji", "test")["images"][:12]):
        Image.fromarray(image).save(galleries / "emoji" / f"e{i:02d}.png")
    (folder / "outside").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "outside" / "secret.png")
    (galleries / "leak").symlink_to(folder / "outside")
    return {"folder": folder, "faces": faces, "drawings": drawings, "galleries": galleries}


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    port, tmp = free_port(), tmp_path_factory.mktemp("server_tmp")
    env = {**os.environ, "TMPDIR": str(tmp), "ZOO_EXPORTS": str(registry.exports_dir())}
    process = subprocess.Popen([sys.executable, "-m", "zoo.cli", "serve", "--port", str(port), "--galleries",
                                str(files["galleries"])], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
        if process.poll() is not None:
            pytest.fail(f"zoo serve exited: {process.stdout.read().decode()}")
    else:
        process.kill()
        pytest.fail("zoo serve did not answer within 30 s")
    yield {"url": url, "tmp": tmp}
    process.terminate()
    process.wait(timeout=10)


def post(server, path, data, files=None, timeout=120):
    return httpx.post(f"{server['url']}{path}", data=data, files=files, timeout=timeout)


def verify_request(server, a, b, entry=FACES):
    return post(server, "/api/verify", {"entry": entry},
                {"a": (a.name, a.read_bytes(), "image/jpeg"), "b": (b.name, b.read_bytes(), "image/jpeg")})


def test_health_entries_and_an_offline_page(server):
    assert httpx.get(f"{server['url']}/api/health").json()["status"] == "ok"
    entries = {e["name"]: e for e in httpx.get(f"{server['url']}/api/entries").json()}
    card = registry.info(FACES)
    assert entries[FACES]["value"] == card.metrics[card.primary_metric] and entries[FACES]["face"]
    assert entries[FACES]["license"] == card.data_license and entries["clip"]["text"]
    page = httpx.get(server["url"] + "/").text
    assert "Same person?" in page and "/static/app.js" in page
    for asset in ("/static/app.js", "/static/style.css"):
        response = httpx.get(server["url"] + asset)
        assert response.status_code == 200 and "http://" not in response.text and "https://" not in response.text
    assert "/api/verify" in httpx.get(f"{server['url']}/openapi.json").json()["paths"]


def test_verify_answers_as_the_runtime(server, files):
    faces = files["faces"]
    embedder = OnnxEmbedder(registry.exports_dir() / FACES)
    for a, b in (("alice1.jpg", "alice2.jpg"), ("alice1.jpg", "bob.jpg")):
        result = verify_request(server, faces[a], faces[b]).json()
        ea, eb = embedder.embed_files([faces[a], faces[b]])
        distance = float(np.linalg.norm(ea - eb))
        assert result["distance"] == pytest.approx(distance, abs=1e-5)
        assert result["threshold"] == embedder.threshold and result["same"] == (distance <= embedder.threshold)
        assert ("The same person" if result["same"] else "Different people") in result["verdict"]
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["crops"]["a"].split(",")[1]))))
        assert crop.shape == (48, 48, 3)


def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server, files):
    photo = files["faces"]["alice1.jpg"]
    text = files["folder"] / "notes.jpg"
    text.write_text("not a picture")
    response = verify_request(server, photo, text)
    assert response.status_code == 400 and "notes.jpg: not an image" in response.json()["error"]
    wall = files["folder"] / "wall.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(wall)
    response = verify_request(server, photo, wall)
    assert response.status_code == 400 and "wall.png: no face found" in response.json()["error"]
    response = verify_request(server, photo, photo, entry="protonet")
    assert response.status_code == 400 and "no verification threshold" in response.json()["error"]
    response = verify_request(server, photo, photo, entry="nope")
    assert response.status_code == 400 and "unknown entry 'nope'" in response.json()["error"]
    response = post(server, "/api/verify", {"entry": FACES}, {"a": ("a.jpg", photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 422 and "b" in response.json()["error"]
    assert httpx.get(f"{server['url']}/api/health").status_code == 200


def test_a_25_mb_upload_and_too_many_files_get_413(server, files):
    big = np.random.default_rng(0).bytes(25 * 10**6)
    response = post(server, "/api/verify", {"entry": FACES}, {"a": ("a.png", big, "image/png"),
                                                             "b": ("b.png", b"x", "image/png")})
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    drawing = files["drawings"]["char0"][0]
    many = [("support", (f"{i}.png", drawing, "image/png")) for i in range(70)]
    response = post(server, "/api/classify", {"entry": "protonet", "labels": json.dumps(["a", "b"] * 35)},
                    many + [("queries", ("q.png", drawing, "image/png"))])
    assert response.status_code == 413 and "more than" in response.json()["error"]
    assert httpx.get(f"{server['url']}/api/health").status_code == 200


def test_uploads_leave_nothing_behind(server, files):
    before = set(server["tmp"].rglob("*"))
    verify_request(server, files["faces"]["alice1.jpg"], files["faces"]["bob.jpg"])
    assert set(server["tmp"].rglob("*")) == before


def classify_files(drawings):
    support = [("support", (f"{c}-{i}.png", d, "image/png"))
               for c, ds in drawings.items() for i, d in enumerate(ds[:5])]
    labels = [c for c, ds in drawings.items() for _ in ds[:5]]
    queries = [("queries", (f"query-{c}.png", ds[5], "image/png")) for c, ds in drawings.items()]
    return support, labels, queries


def test_classify_from_files_or_a_zip_answers_as_the_runtime(server, files):
    support, labels, queries = classify_files(files["drawings"])
    by_files = post(server, "/api/classify", {"entry": "protonet", "labels": json.dumps(labels)}, support + queries)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for (_, (name, data, _)), label in zip(support, labels):
            z.writestr(f"examples/{label}/{name}", data)
    by_zip = post(server, "/api/classify", {"entry": "protonet"},
                  [("support_zip", ("examples.zip", archive.getvalue(), "application/zip"))] + queries)
    embedder = OnnxEmbedder(registry.exports_dir() / "protonet")
    decode = lambda items: [np.asarray(Image.open(io.BytesIO(data))) for _, (_, data, _) in items]  # noqa: E731
    classes, d2 = prototype_distances(embedder.embed(decode(support)), labels, embedder.embed(decode(queries)))
    expected = [str(classes[i]) for i in np.argmin(d2, axis=1)]
    for response in (by_files, by_zip):
        results = response.json()["results"]
        assert [r["class"] for r in results] == expected
        assert all(0 < r["confidence"] <= 1 and len(r["nearest"]) == 3 for r in results)
    assert expected == ["char0", "char1", "char2"]  # a new drawer's drawing goes to its character


def test_concurrent_requests_get_the_sequential_answers(server, files):
    faces = files["faces"]
    pairs = [("alice1.jpg", "alice2.jpg"), ("alice1.jpg", "bob.jpg"), ("alice2.jpg", "bob.jpg")] * 3
    sequential = [verify_request(server, faces[a], faces[b]).json()["distance"] for a, b in pairs]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda p: verify_request(server, faces[p[0]], faces[p[1]]).json()["distance"],
                                   pairs))
    assert concurrent == sequential


def test_search_a_server_gallery_by_picture_and_by_text(server, files):
    gallery = sorted((files["galleries"] / "emoji").glob("*.png"))
    assert httpx.get(f"{server['url']}/api/galleries").json() == ["emoji"]  # the symlink out is not offered
    query = gallery[3]
    by_picture = post(server, "/api/search", {"entry": "clip", "gallery": "emoji", "k": "4"},
                      {"query": (query.name, query.read_bytes(), "image/png")}).json()["neighbours"]
    assert by_picture[0]["name"] == query.name and by_picture[0]["distance"] < 1e-3 and len(by_picture) == 4
    by_text = post(server, "/api/search", {"entry": "clip", "gallery": "emoji", "k": "3", "text": "a red heart"})
    clip = OnnxCLIP(registry.exports_dir() / "clip")
    d = np.linalg.norm(clip.encode_image([read_image(f) for f in gallery]) - clip.encode_text(["a red heart"]), axis=1)
    assert [n["name"] for n in by_text.json()["neighbours"]] == [gallery[i].name for i in np.argsort(d)[:3]]
    uploaded = post(server, "/api/search", {"entry": "clip", "k": "2"},
                    [("gallery_files", (f.name, f.read_bytes(), "image/png")) for f in gallery[:5]]
                    + [("query", (query.name, query.read_bytes(), "image/png"))])
    assert uploaded.json()["neighbours"][0]["name"] == query.name
    for name in ("../outside", "/etc", "leak", "emoji/../../outside"):
        response = post(server, "/api/search", {"entry": "clip", "gallery": name, "text": "x"})
        assert response.status_code == 400 and "unknown gallery" in response.json()["error"], name


def test_a_host_beyond_loopback_gets_a_warning(monkeypatch, capsys):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw))
    assert main(["serve", "--host", "0.0.0.0", "--port", "9"]) == 0
    assert started["host"] == "0.0.0.0" and "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", "--port", "9"]) == 0
    assert started["host"] == "127.0.0.1" and capsys.readouterr().err == ""


def _chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        reason = ("headless Chromium needs Debian's `chromium` and `chromium-driver` packages "
                  "(apt-get install chromium chromium-driver)")
        # CI (.ci/run) installs them and names them here: there, a skip would hide that the page went untested.
        if "chromium" in os.environ.get("ZOO_TESTS_REQUIRE", "").split():
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1150"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_the_page_verifies_two_photos_in_headless_chromium(server, files, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = _chromium()
    try:
        browser.get(server["url"] + "/")
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "verify-entry").get_attribute("value"))
        Select(browser.find_element(By.ID, "verify-entry")).select_by_value(FACES)
        browser.find_element(By.ID, "verify-a").send_keys(str(files["faces"]["alice1.jpg"]))
        browser.find_element(By.ID, "verify-b").send_keys(str(files["faces"]["alice2.jpg"]))
        browser.find_element(By.ID, "verify-run").click()
        WebDriverWait(browser, 60).until(expected_conditions.visibility_of_element_located((By.ID, "verify-result")))
        verdict = browser.find_element(By.ID, "verify-verdict").text
        expected = verify_request(server, files["faces"]["alice1.jpg"], files["faces"]["alice2.jpg"]).json()
        assert verdict == expected["verdict"]
        assert browser.find_element(By.ID, "verify-distance").text == f"{expected['distance']:.3f}"
        for crop in ("verify-crop-a", "verify-crop-b"):
            assert browser.execute_script(f"return document.getElementById('{crop}').naturalWidth") == 48
        shots = [tmp_path / "verify.png"] + ([Path(os.environ["ZOO_SCREENSHOTS"]) / "web_page_verify.png"]
                                             if os.environ.get("ZOO_SCREENSHOTS") else [])
        for shot in shots:
            assert browser.save_screenshot(str(shot)), shot
        assert Image.open(shots[0]).size[0] > 0
        # Search pictures by words in the server's gallery: the grid shows the API's neighbours in order.
        browser.find_element(By.CSS_SELECTOR, '.tab[data-tool="search"]').click()
        Select(browser.find_element(By.ID, "search-entry")).select_by_value("clip")
        Select(browser.find_element(By.ID, "search-gallery")).select_by_value("emoji")
        browser.find_element(By.ID, "search-text").send_keys("a red heart")
        k = browser.find_element(By.ID, "search-k")
        k.clear()
        k.send_keys("3")
        browser.find_element(By.ID, "search-run").click()
        WebDriverWait(browser, 60).until(expected_conditions.visibility_of_element_located((By.ID, "search-result")))
        shown = [c.text.split("\n")[0] for c in browser.find_elements(By.CSS_SELECTOR, "#search-result .card")]
        answer = post(server, "/api/search", {"entry": "clip", "gallery": "emoji", "k": "3", "text": "a red heart"})
        assert shown == [f"{i}. {n['name']}" for i, n in enumerate(answer.json()["neighbours"], 1)]
        # Sort by examples: two kinds of drawings with three examples each, then a new drawing of each.
        browser.find_element(By.CSS_SELECTOR, '.tab[data-tool="classify"]').click()
        Select(browser.find_element(By.ID, "classify-entry")).select_by_value("protonet")
        rows = browser.find_elements(By.CSS_SELECTOR, ".class-row")
        for row, kind in zip(rows, ("char0", "char1")):
            row.find_element(By.CLASS_NAME, "class-name").send_keys(kind)
            paths = []
            for i, data in enumerate(files["drawings"][kind][:3]):
                paths.append(tmp_path / f"{kind}-{i}.png")
                paths[-1].write_bytes(data)
            row.find_element(By.CLASS_NAME, "class-files").send_keys("\n".join(map(str, paths)))
        queries = [tmp_path / f"query-{kind}.png" for kind in ("char0", "char1")]
        for path, kind in zip(queries, ("char0", "char1")):
            path.write_bytes(files["drawings"][kind][5])
        browser.find_element(By.ID, "classify-queries").send_keys("\n".join(map(str, queries)))
        browser.find_element(By.ID, "classify-run").click()
        WebDriverWait(browser, 60).until(expected_conditions.visibility_of_element_located((By.ID, "classify-result")))
        predicted = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#classify-result .predicted")]
        assert predicted == ["char0", "char1"]
    finally:
        browser.quit()
