"""The public API as its users meet it: every parameter and output named and described on the API
page, and each endpoint called from Python (`gradio_client`) and from JavaScript (`@gradio/client`
from npm, what a web page on a Space uses), against the real server (kitchenware weights)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xception_core.settings import Settings
from xception_core.weights.fetch import preset_samples

pytestmark = pytest.mark.slow

JS_DIR = Path(__file__).parent / "js"
ENDPOINTS = {  # parameters, and the outputs by the names the README gives them
    "/classify": (["image", "weights"], ["top5"]),
    "/gradcam": (["image", "class_name", "weights"], ["heatmap", "score"]),
    "/activations": (["image", "block", "top_n"], ["activations", "maps"]),
    "/architecture": (["which"], ["architecture"]),
    "/operation": (["image", "block", "layer", "row", "col", "channel", "variant", "top"], ["operation"]),
    "/knockout": (["image", "knockouts"], ["knockout"]),
    "/compare": (["image", "size", "rounds"], ["compare"]),
}
KITCHEN = {"cup", "fork", "glass", "knife", "plate", "spoon"}


@pytest.fixture(scope="module")
def sample():
    """A kitchenware photo with its dataset label (the model gets the labelled ones right)."""
    return next(s for s in preset_samples("kitchenware", Settings.from_env().cache_dir) if s.label)


def check_documented(endpoints: dict) -> None:
    for name, (params, outputs) in ENDPOINTS.items():
        ep = endpoints[name]
        assert [p["parameter_name"] for p in ep["parameters"]] == params, name
        for p in ep["parameters"]:
            assert p["label"].startswith(p["parameter_name"] + ": ") and len(p["label"]) > 30, p
            assert "Literal[]" not in p["python_type"]["type"]
        assert [r["label"] for r in ep["returns"]] == outputs, ep["returns"]
    assert not any(name.endswith("_1") for name in endpoints), list(endpoints)


def test_python_client_sees_named_documented_endpoints(client):
    check_documented(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    shown = client.view_api(return_format="str", print_info=False)  # what `client.view_api()` prints
    assert "top5" in shown and "heatmap" in shown and "score" in shown
    assert "top5_class_probability" not in shown and "of_the_5_most_probable" not in shown


def test_python_client_calls_every_endpoint(client, sample):
    from gradio_client import handle_file

    photo = handle_file(str(sample.path))
    top5 = client.predict(photo, "", api_name="/classify")
    assert set(top5) <= KITCHEN and max(top5, key=top5.get) == sample.label
    heatmap, score = client.predict(photo, "  Fork ", "", api_name="/gradcam")  # case and spaces ignored
    assert score["class_name"] == "fork" and 1 <= score["rank"] <= 6
    assert score["probability"] == pytest.approx(top5.get("fork", score["probability"]), abs=1e-6)
    with Image.open(heatmap) as im:
        assert im.format == "PNG" and max(im.size) <= 1024
    _, top = client.predict(photo, "", "", api_name="/gradcam")
    assert top["class_name"] == sample.label and top["rank"] == 1
    answer, maps = client.predict(photo, "block13", 3, api_name="/activations")
    assert answer["shape"] == [5, 5, 1024] and len(answer["channel_means"]) == 1024 and len(maps) == 3
    means = np.array(answer["channel_means"])
    assert [m["channel"] for m in answer["top_channels"]] == list(np.argsort(-means, kind="stable")[:3])
    with Image.open(maps[0]["image"]) as im:
        cells = np.asarray(im.convert("RGB"))
    side = cells.shape[0]
    assert side % 5 == 0 and (cells[: side // 5 - 2, : side // 5 - 2] == cells[0, 0]).all()  # a flat 5×5 grid
    step = client.predict(photo, "block13", "block13_sepconv2", 2, 3, 7, "article", 2, api_name="/operation")
    # The article's 'same'-padded stem keeps more pixels: 10×10 here where the paper's grid is 9×9.
    assert (step["layer"], step["row"], step["col"], step["channel"], step["grid"]) == ("block13_sepconv2", 2, 3, 7,
                                                                                        [10, 10])
    assert len(step["depthwise"]) == 2 and step["pool"]["layer"] == "block13_pool"
    for stage in step["stages"]:  # the numbers the page shows, each equal to the model's own output there
        if stage["model"] is not None:
            assert stage["value"] == pytest.approx(stage["model"], rel=1e-4, abs=1e-5)
    reference = client.predict("reference", api_name="/architecture")
    loaded = client.predict("loaded", api_name="/architecture")
    assert reference["total_params"] == 22_910_480 and reference["input_shape"][:2] == [299, 299]
    assert loaded["weights"] == "kitchenware" and loaded["input_shape"][:2] == [150, 150]


@pytest.mark.parametrize("endpoint, args, message", [
    ("/gradcam", ("not a class", ""), "is not a class of these weights. Their classes: cup, fork, glass"),
    ("/activations", ("block15", 4), "Unknown block"),
    ("/activations", ("block4", 0), "from 1 to 64"),
    ("/architecture", ("everything",), "which must be one of"),
    ("/classify", ("imagenet",), "unknown weights"),
    ("/operation", ("block5", "block5_sepconv1", 99, 0, 0, "paper", 4), "Row must be a whole number from 0 to 8"),
    ("/operation", ("block1", "block1_conv1", 0, 0, 0, "paper", 4), "the stem"),
])
def test_bad_arguments_get_messages(client, sample, endpoint, args, message):
    from gradio_client import handle_file

    inputs = args if endpoint == "/architecture" else (handle_file(str(sample.path)), *args)
    with pytest.raises(Exception, match=message):
        client.predict(*inputs, api_name=endpoint)


@pytest.fixture(scope="module")
def js_client() -> Path:
    """`@gradio/client` from npm in tests/demo/js (installed here from the lock file if CI has not)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the JavaScript client test: apt-get install -y nodejs npm")
    if not (JS_DIR / "node_modules" / "@gradio" / "client").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600)
    return JS_DIR / "api_client.mjs"


def test_javascript_client_calls_every_endpoint(js_client, live_server, sample):
    proc = subprocess.run(["node", str(js_client), live_server + "/", str(sample.path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    endpoints = {name: {"parameters": [{"parameter_name": p["name"], "label": p["label"],
                                        "python_type": {"type": p["type"]}} for p in ep["parameters"]],
                        "returns": [{"label": label} for label in ep["returns"]]}
                 for name, ep in out["endpoints"].items()}
    check_documented(endpoints)
    top5 = out["classify"][0]
    assert max(top5, key=top5.get) == sample.label
    assert out["gradcam"]["score"]["class_name"] == sample.label and out["gradcam"]["heatmap_url"].startswith("http")
    assert out["activations"]["json"]["shape"] == [5, 5, 1024] and len(out["activations"]["maps"]) == 4
    assert all(m["url"] and m["caption"].startswith("#") for m in out["activations"]["maps"])
    assert out["reference"]["total_params"] == 22_910_480
    step = out["operation"]
    assert (step["layer"], step["row"], step["col"], step["channel"], len(step["depthwise"])) == (
        "block4_sepconv2", 3, 4, 5, 3)
    assert step["add"]["shortcut_kind"] == "conv" and step["stages"][-1]["model"] == pytest.approx(
        step["stages"][-1]["value"], rel=1e-4, abs=1e-5)
    assert "is not a class of" in out["bad_class"]
