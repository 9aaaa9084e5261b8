"""The README's own start, `python app.py` with no XCEPTION_WEIGHTS (issue 25): offline, on a warm
cache, it serves classify, Grad-CAM and `/activations` without ever importing TensorFlow (the
ImageNet attempt is a plain download that fails at once), within the memory a free Space has;
and starts whose loader imports TensorFlow while the main thread imports the UI never lose their
weights (or the start) to an import deadlock.

"Offline" is made sure of, not assumed: the app's proxies point at a closed local port, so every
download fails at once, on any machine."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.appserver import free_port, stop, wait_ready
from demo.store import ModelStore
from xception_core.runtime.translated import open_translation, translation_dir
from xception_core.weights.fetch import cached_weights_sha256

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = sorted((ROOT / "assets" / "examples").glob("*.jpg"))[0]
RSS_BUDGET_MB = 600
RACE_STARTS = 4  # each start imports Gradio and TensorFlow side by side: 20-80 s on 2 shared cores


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(port: int, **extra: str) -> dict[str, str]:
    """The environment of a user's `python app.py` on this port: no XCEPTION_WEIGHTS, and every
    download through a proxy that refuses connections (offline, whatever the machine's network)."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("XCEPTION_WEIGHTS", "NO_PROXY", "no_proxy")}
    return {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HTTPS_PROXY": proxy,
            "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy, "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def warm_cache(settings):
    """The kitchenware weights translated into the cache, as the first start leaves them."""
    ModelStore(settings, ["kitchenware"]).start().get(timeout=600)
    sha = cached_weights_sha256("kitchenware", settings.keras_home, settings.cache_dir)
    assert sha and open_translation(translation_dir(settings.cache_dir, sha), sha) is not None
    return settings


def _rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024


def test_the_default_start_offline_never_imports_tensorflow(warm_cache, tmp_path):
    import httpx

    from bench.live import api_classify, raw_gradio_call

    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=offline_env(port), stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url.rstrip("/"), proc, timeout=300)
        with httpx.Client(timeout=120) as http:
            _, answer = api_classify(http, url, EXAMPLE.read_bytes())
            assert answer["weights"] == "kitchenware" and answer["backend"] == "onnx"
            heat = raw_gradio_call(http, url, "gradcam", EXAMPLE, "", "kitchenware")["data"]
            assert heat
            maps = raw_gradio_call(http, url, "activations", EXAMPLE, "block4", 8)["data"]
            assert maps["block"] == "block4"
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "onnxruntime" in libraries  # the check reads the right process
        assert "tensorflow" not in libraries and "_pywrap" not in libraries
        rss = _rss_mb(proc.pid)
        assert rss <= RSS_BUDGET_MB, f"{rss} MB after classify, Grad-CAM and activations"
        text = log.read_text()
        assert "weights 'imagenet' unavailable" in text and "TensorFlow imported" not in text
    finally:
        stop(proc)


def _race_cache(settings, folder: Path) -> Path:
    """A cache of its own with the extracted kitchenware weights (hard links where the file system
    allows, else copies; never the shared folder itself) and no translation: the loader must import
    TensorFlow to translate them, and whatever it writes stays in `folder`."""
    source, cache = settings.cache_dir / "kitchenware", folder / "cache"
    for path in source.rglob("*"):
        if path.is_file() and ".ours-" not in path.name:
            target = cache / "kitchenware" / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    return cache


def test_starts_with_both_presets_loading_never_lose_weights_to_an_import_race(warm_cache, tmp_path):
    """`python app.py` with the default presets, RACE_STARTS times: ImageNet (offline: fails as a
    download, never as an import) then kitchenware, whose loader imports TensorFlow to translate
    while the main thread imports Gradio and Plotly. Each start runs until the UI serves and the
    loader is past its imports; no log line names an import error or a deadlock."""
    cache = _race_cache(warm_cache, tmp_path)
    bad = re.compile(r"_DeadlockError|deadlock detected|ImportError|ModuleNotFoundError|circular import")
    for start in range(RACE_STARTS):
        port = free_port()
        log = tmp_path / f"start{start}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT,
                                    env=offline_env(port, XCEPTION_CACHE_DIR=str(cache)),
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")
                if proc.poll() is not None or bad.search(text):
                    break
                if "Xception Explorer on http" in text and ("TensorFlow imported" in text or "weights 'kitchenware'"
                                                            in text):
                    break
                subprocess.run(["sleep", "0.5"])  # polling a child's log: no event to wait on
            text = log.read_text(errors="replace")
            assert proc.poll() is None, f"start {start} died:\n{text[-3000:]}"
            assert not bad.search(text), f"start {start}:\n{text[-3000:]}"
            assert "Xception Explorer on http" in text, f"start {start} not serving:\n{text[-3000:]}"
            assert "weights 'kitchenware' unavailable" not in text
            failures = re.findall(r"weights '(\w+)' unavailable: (\w+)", text)
            assert failures == [("imagenet", "WeightsUnavailableError")], text[-3000:]
        finally:
            stop(proc)


TRACE = """
import sys, threading
first = {}
class Tracer:
    def find_spec(self, name, path=None, target=None):
        if name not in sys.modules:
            first.setdefault(name, threading.current_thread().name)
        return None
sys.meta_path.insert(0, Tracer())
from demo.store import ModelStore
from xception_core.settings import Settings
store = ModelStore(Settings.from_env()).start()
served = store.get(None, timeout=600)
import numpy as np
served.predict(np.zeros((served.input_size, served.input_size, 3), np.float32))
print("LOADER", sorted(n for n, t in first.items() if t == "model-loader"), served.key)
"""


def test_a_warm_loader_thread_imports_nothing(warm_cache):
    """What the loader thread needs on a warm start (ONNX Runtime) is imported before it starts:
    with the default presets offline (ImageNet's download fails, kitchenware's translation
    serves), the thread itself imports no module, so it cannot race the main thread's imports."""
    out = subprocess.run([sys.executable, "-c", TRACE], cwd=ROOT, env=offline_env(free_port()), capture_output=True,
                         text=True, timeout=600)
    line = next((x for x in out.stdout.splitlines() if x.startswith("LOADER ")), None)
    assert line is not None, out.stderr[-3000:]
    assert line == "LOADER [] kitchenware", line
