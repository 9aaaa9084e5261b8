"""Serving from the cached translation (issues 18, 25): a process started with a warm cache answers
classify, Grad-CAM, activations, the architecture, both wirings and Inside one operation with no
TensorFlow loaded; Teach's `.keras`, the one feature that needs it, works after saying it is
warming up."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bench.appserver import app_env, free_port, stop, wait_ready
from demo.store import ModelStore, WarmingUp
from xception_core.runtime.translated import TranslatedModel, open_translation, translation_dir
from xception_core.weights.fetch import cached_weights_sha256

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = sorted((ROOT / "assets" / "examples").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def warm_cache(settings):
    """The kitchenware weights translated into the cache, as the first start of the app leaves
    them (this process translates them if no start has yet)."""
    ModelStore(settings, ["kitchenware"]).start().get(timeout=600)
    sha = cached_weights_sha256("kitchenware", settings.keras_home, settings.cache_dir)
    assert sha and open_translation(translation_dir(settings.cache_dir, sha), sha) is not None
    return settings


def rss_mb(pid: int) -> float:
    """A process's resident memory now, in MB."""
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")) / 1024


def test_a_warm_start_answers_everything_without_tensorflow(warm_cache, tmp_path):
    """`python app.py` on a warm cache: a REST classify, then Grad-CAM, activations, the
    architecture and Inside one operation (both wirings) through the page's API; its memory map
    holds no TensorFlow library after all of it, and it holds at most 600 MB."""
    from gradio_client import Client, handle_file

    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=app_env(port, "kitchenware"),
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        answer = None
        for _ in range(600):  # the first REST answer, as a client polling a waking Space gets it
            try:
                request = urllib.request.Request(url + "/api/v1/classify", data=EXAMPLE.read_bytes(),
                                                 headers={"Content-Type": "image/jpeg"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.load(response)
                break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                subprocess.run(["sleep", "0.2"])
        assert answer is not None and answer["backend"] == "onnx" and len(answer["top"]) == 5
        wait_ready(url, proc, timeout=300, log=log)  # the page is built after the REST API answers
        client = Client(url + "/", verbose=False)
        heat, score = client.predict(handle_file(str(EXAMPLE)), "", "", api_name="/gradcam")
        assert heat and score
        activations, maps = client.predict(handle_file(str(EXAMPLE)), "block4", api_name="/activations")
        assert activations["block"] == "block4" and len(activations["channel_means"]) == activations["shape"][-1]
        architecture = client.predict(api_name="/architecture")
        assert architecture["weights"] == "kitchenware" and len(architecture["blocks"]) == 15
        step = client.predict(handle_file(str(EXAMPLE)), "block5", "block5_sepconv2", 1, 1, 3, "paper", 2,
                              api_name="/operation")
        assert step["variant"] == "paper" and step["stages"]
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "tensorflow" not in libraries and "_pywrap" not in libraries
        assert "onnxruntime" in libraries  # the check reads the right process
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:"))
        assert rss_kb <= 600 * 1024, f"{rss_kb / 1024:.0f} MB resident"
        # The article's wiring (two more ONNX Runtime sessions, lean ones) needs no TensorFlow either.
        step = client.predict(handle_file(str(EXAMPLE)), "block5", "block5_sepconv2", 1, 1, 3, "article", 2,
                              api_name="/operation")
        assert step["variant"] == "article" and step["stages"]
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "tensorflow" not in libraries and "_pywrap" not in libraries
        assert rss_mb(proc.pid) <= 600, f"{rss_mb(proc.pid):.0f} MB resident after the article wiring's operation"
        # Knockouts (their own chain of sessions, built on this first call) need no TensorFlow either.
        before = rss_mb(proc.pid)
        knocked = client.predict(handle_file(str(EXAMPLE)), [{"kind": "skip_branch", "block": "block13"}],
                                 api_name="/knockout")
        assert knocked["blocks"][0]["block"] == "block13" and len(knocked["knocked"]) == 5
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "tensorflow" not in libraries and "_pywrap" not in libraries
        print(f"\nRSS {before:.0f} MB before the first /knockout, {rss_mb(proc.pid):.0f} MB after")
    finally:
        stop(proc)


def test_every_explore_feature_answers_from_the_translation(warm_cache, tmp_path):
    """A store serving from the cache has no Keras model, and needs none for the article's wiring,
    Inside one operation (both wirings), Netron's graph and the .keras download; only Teach's
    taught `.keras` loads it (in the background: the first ask is told it is warming up, in the
    page's words `demo.ui.events.WARMING_UP`)."""
    from demo.netron.exports import Exports
    from demo.services.explore import ExploreService
    from demo.services.operation import OperationService
    from demo.ui.events import WARMING_UP, _message

    store = ModelStore(dataclasses.replace(warm_cache, export_dir=tmp_path, upload_dir=tmp_path),
                       ["kitchenware"]).start()
    served = store.get(timeout=120)
    assert isinstance(served.classifier, TranslatedModel) and served.keras_state() == "idle"
    photo = {"path": str(_copy(EXAMPLE, tmp_path)), "meta": {"_type": "gradio.FileData"}}
    comparison = ExploreService(store).compare(None, photo)
    assert [d.block for d in comparison.differences][-1] == "block14"
    operation = OperationService(store)
    for variant in ("paper", "article"):
        answer = operation.step(None, photo, "block5", 2, 1, 1, 3, variant)
        assert answer.step.variant == variant and answer.step.model
    exports = Exports(store, tmp_path / "exports")
    assert exports.graph("article").startswith("xception-kitchenware-article.graph-")
    assert exports.full_keras("paper").stat().st_size > 1_000_000
    assert served.keras_state() == "idle"  # none of the above loaded Keras
    with pytest.raises(WarmingUp) as refused:
        served.keras(timeout=0)
    message, mistake = _message(lambda: None, refused.value)
    assert message == WARMING_UP and not mistake
    from xception_core.io.heads import save_taught_model
    from xception_core.runtime.transfer import SoftmaxHead

    head = SoftmaxHead(np.zeros((2048, 2), np.float32), np.zeros(2, np.float32))
    path = save_taught_model(tmp_path / "taught.keras", served.keras(timeout=300), head, ("a", "b"))
    assert Path(path).stat().st_size > 1_000_000


def _copy(source: Path, folder: Path) -> Path:
    target = folder / source.name
    target.write_bytes(source.read_bytes())
    return target


def test_a_translation_with_other_labels_is_made_again(warm_cache, tmp_path, monkeypatch):
    """The labels travel in the translation: if the app's label set changed since, the cached one
    is not served, and a new translation with the current labels is (and cached)."""
    import shutil

    settings = dataclasses.replace(warm_cache, cache_dir=tmp_path / "cache")
    sha = cached_weights_sha256("kitchenware", warm_cache.keras_home, warm_cache.cache_dir)
    shutil.copytree(warm_cache.cache_dir / "kitchenware", settings.cache_dir / "kitchenware")
    shutil.copytree(translation_dir(warm_cache.cache_dir, sha), translation_dir(settings.cache_dir, sha))
    renamed = tuple(f"new {name}" for name in ModelStore(settings, ["kitchenware"]).start().get(timeout=120).labels)
    monkeypatch.setattr("demo.store.cache.load_labels", lambda name, folder=None: renamed)
    served = ModelStore(settings, ["kitchenware"]).start().get(timeout=600)
    assert served.labels == renamed
    assert tuple(open_translation(translation_dir(settings.cache_dir, sha), sha).meta["labels"]) == renamed
