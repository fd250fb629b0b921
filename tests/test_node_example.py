"""The Node example (examples/node) follows the preprocessing contract: the same model input and the same
zero-shot answer as zoo.runtime. Needs `node` and `npm install` from the npm registry; skipped without them."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
import zoo.data
from zoo.data.originals import emoji_rgba
from zoo import registry
from zoo.runtime import OnnxCLIP
from zoo.runtime.contract import prepare

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"
pytestmark = pytest.mark.slow  # node, and an npm install on a fresh checkout


@pytest.fixture(scope="module")
def node_example(tmp_path_factory):
    # CI (.ci/run) installs node and npm and names them here: there, a skip would hide that the example went
    # untested, so it fails instead.
    cannot = pytest.fail if "node" in os.environ.get("ZOO_TESTS_REQUIRE", "").split() else pytest.skip
    if not shutil.which("node") or not shutil.which("npm"):
        cannot("node and npm are not installed (Debian: apt-get install nodejs npm)")
    if not (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        # --ignore-scripts: onnxruntime-node ships its CPU binaries; its install script only fetches GPU ones.
        done = subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=EXAMPLE,
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            cannot(f"npm install failed in {EXAMPLE} (no registry?): {done.stderr.strip()[-300:]}")
    return EXAMPLE


def node(folder, *args, script=None):
    command = ["node", "--input-type=module", "-e", script] if script else ["node", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True, timeout=120).stdout


def test_contract_in_javascript_gives_pythons_model_input(node_example, tmp_path):
    contract = zoo.info("protonet").preprocessing
    drawing = zoo.data.load("omniglot", "evaluation", size=105)["images"][7, :, :, 0]
    picture = np.pad(255 - drawing, ((0, 0), (20, 31)))  # light ink on black, wider than tall
    Image.fromarray(picture).save(tmp_path / "drawing.png")
    script = (f"import {{prepare, readPng}} from './contract.mjs';"
              f"console.log(JSON.stringify(Array.from(prepare(readPng('{tmp_path / 'drawing.png'}'), "
              f"{json.dumps(contract)}, [28, 28, 1]))));")
    got = np.array(json.loads(node(node_example, script=script)), np.float32).reshape(28, 28, 1)
    np.testing.assert_array_equal(got, prepare(picture, contract, (28, 28, 1)))


def test_zero_shot_example_answers_as_the_runtime(node_example, tmp_path):
    image = zoo.data.load("emoji", "test")["images"][0]
    Image.fromarray(emoji_rgba(image)).save(tmp_path / "emoji.png")
    classes = ["smileys and emotion", "animals and nature", "food and drink"]
    folder = registry.exports_dir() / "clip"
    result = json.loads(node(node_example, "zero_shot.mjs", str(folder), str(tmp_path / "emoji.png"),
                             ",".join(classes)))
    clip = OnnxCLIP(folder)
    predictions, probabilities = clip.zero_shot(image, classes, clip.card["extras"]["templates"])
    assert result["class"] == classes[predictions[0]]
    np.testing.assert_allclose(list(result["probabilities"].values()), probabilities[0], atol=1e-4)
    np.testing.assert_allclose(result["embedding"], clip.encode_image(image)[0], atol=1e-5)
