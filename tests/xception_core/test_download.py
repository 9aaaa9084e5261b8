"""The official ImageNet file fetched without Keras (issue 25, item 4): a plain HTTP download from
a local server on 127.0.0.1, its md5 checked as `keras.utils.get_file` checks it, kept where Keras
keeps it, and each failure (wrong file, cut short, offline, missing) a clear `WeightsUnavailableError`
that leaves nothing behind."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xception_core.weights import fetch
from xception_core.weights.fetch import (WeightsFailure, WeightsUnavailableError, cached_weights_sha256,
                                         fetch_keras_file, fetched_weights_sha256, keras_models_dir)
from xception_core.weights.presets import AUTO_ORDER, IMAGENET, RemoteFile

BODY = bytes(range(256)) * 4096  # 1 MiB: a few chunks of the download loop
NAME = IMAGENET.with_top.fname


class _Server(http.server.ThreadingHTTPServer):
    """Serves `body` at every path; `length` overrides Content-Length (a transfer cut short);
    `status` answers with that code instead. Counts the requests."""

    body: bytes = BODY
    length: int | None = None
    status: int = 200
    requests: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server: _Server = self.server  # type: ignore[assignment]
        server.requests += 1
        if server.status != 200:
            self.send_error(server.status)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(server.length or len(server.body)))
        self.end_headers()
        self.wfile.write(server.body)
        self.close_connection = True

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def _fresh_hashes():
    fetch._HASHES.clear()
    yield
    fetch._HASHES.clear()


def _preset(url: str, md5: str = hashlib.md5(BODY).hexdigest()):
    return dataclasses.replace(IMAGENET, with_top=RemoteFile(NAME, url, md5))


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{NAME}"


def _leftovers(home: Path) -> list[str]:
    folder = home / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_file_is_downloaded_checked_and_then_served_from_the_cache(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="xception_core.weights.fetch")
    preset = _preset(_url(server))
    path = fetch_keras_file(preset, True, tmp_path)
    assert path == tmp_path / "models" / NAME and path.read_bytes() == BODY
    assert f"downloading {NAME} from {_url(server)}" in caplog.text and "md5 checked" in caplog.text
    assert fetch_keras_file(preset, True, tmp_path) == path and server.requests == 1  # cached: no request
    assert _leftovers(tmp_path) == [NAME]  # no temporary file left


def test_a_keras_home_not_made_yet_is_made_not_replaced_by_tmp(server, tmp_path):
    """A fresh machine has no ~/.keras until Keras is imported: the download makes it, as Keras would."""
    home = tmp_path / "fresh" / ".keras"
    assert fetch_keras_file(_preset(_url(server)), True, home) == home / "models" / NAME


def test_an_altered_cached_file_is_downloaded_again(server, tmp_path, caplog):
    preset = _preset(_url(server))
    path = fetch_keras_file(preset, True, tmp_path)
    altered = bytearray(BODY)
    altered[1000] ^= 0xFF
    path.write_bytes(bytes(altered))  # same size: only its md5 tells
    caplog.set_level(logging.WARNING, logger="xception_core.weights.fetch")
    assert fetch_keras_file(preset, True, tmp_path).read_bytes() == BODY and server.requests == 2
    assert "md5" in caplog.text and "downloading it again" in caplog.text


def test_a_file_with_another_md5_is_refused_and_not_kept(server, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="has md5 .* expected 0{32}: refusing") as refused:
        fetch_keras_file(_preset(_url(server), md5="0" * 32), True, tmp_path)
    assert refused.value.cause is WeightsFailure.DAMAGED and _leftovers(tmp_path) == []


def test_a_transfer_cut_short_is_refused_and_not_kept(server, tmp_path):
    server.length = len(BODY) + 4096  # the server promises more than it sends, then closes
    with pytest.raises(WeightsUnavailableError) as cut:
        fetch_keras_file(_preset(_url(server)), True, tmp_path)
    assert cut.value.cause is WeightsFailure.OFFLINE and _leftovers(tmp_path) == []
    assert NAME in str(cut.value)


def test_offline_fails_at_once_with_a_clear_sentence(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsUnavailableError) as offline:
        fetch_keras_file(_preset(f"http://127.0.0.1:{port}/{NAME}"), True, tmp_path)
    message = str(offline.value)
    assert offline.value.cause is WeightsFailure.OFFLINE and _leftovers(tmp_path) == []
    assert f"could not fetch {NAME}" in message and str(tmp_path / "models") in message
    assert "Traceback" not in message and len(message) < 600


def test_a_missing_file_says_not_found(server, tmp_path):
    server.status = 404
    with pytest.raises(WeightsUnavailableError) as missing:
        fetch_keras_file(_preset(_url(server)), True, tmp_path)
    assert missing.value.cause is WeightsFailure.NOT_FOUND and _leftovers(tmp_path) == []


def test_the_cache_is_where_keras_keeps_it_and_keras_finds_our_download(server, tmp_path):
    """Keras's `get_file`, given the same name, folder and md5, takes our download as its cache."""
    keras_file = pytest.importorskip("keras.src.utils.file_utils")
    path = fetch_keras_file(_preset(_url(server)), True, tmp_path)
    assert keras_models_dir(tmp_path) == path.parent
    found = keras_file.get_file(NAME, _url(server) + "-never-fetched", cache_dir=str(tmp_path), cache_subdir="models",
                                file_hash=hashlib.md5(BODY).hexdigest())
    assert Path(found) == path and server.requests == 1


def test_the_cached_sha256_is_that_of_a_file_that_checks_out(tmp_path):
    """`cached_weights_sha256` names the translation by the file only when its md5 is Keras's."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / NAME).write_bytes(b"not the official file")
    assert cached_weights_sha256("imagenet", tmp_path, tmp_path / "cache") is None


def test_the_preset_urls_and_hashes_are_kerass_own():
    """The URLs and md5 hashes the download uses are the ones in Keras's Xception source."""
    source = Path(pytest.importorskip("keras.src.applications.xception").__file__).read_text()
    for remote in (IMAGENET.with_top, IMAGENET.no_top):
        assert remote.url.rsplit("/", 1)[-1] == remote.fname and remote.fname in source and remote.md5 in source
        assert remote.url.rsplit("/", 1)[0] in source.replace('"\n    "', "")


def test_the_inception_v3_preset_urls_and_hashes_are_kerass_own():
    """The comparison's Inception V3 file is Keras's own, fetched and checked the same way."""
    from xception_core.weights.presets import INCEPTION_V3_IMAGENET

    source = Path(pytest.importorskip("keras.src.applications.inception_v3").__file__).read_text()
    for remote in (INCEPTION_V3_IMAGENET.with_top, INCEPTION_V3_IMAGENET.no_top):
        assert remote.url.rsplit("/", 1)[-1] == remote.fname and remote.fname in source and remote.md5 in source
        assert remote.url.rsplit("/", 1)[0] in source.replace('"\n    "', "")
    assert INCEPTION_V3_IMAGENET.architecture == "inception_v3" and INCEPTION_V3_IMAGENET.name not in AUTO_ORDER


def test_fetching_imports_no_keras(server, tmp_path):
    """The whole fetch, download included, in a fresh interpreter: neither Keras nor TensorFlow
    is imported (a serving process learns its translation's name without them)."""
    code = (
        "import dataclasses, sys\n"
        "from xception_core.weights.fetch import fetched_weights_sha256\n"
        "from xception_core.weights import presets\n"
        f"presets.PRESETS['imagenet'] = dataclasses.replace(presets.IMAGENET, with_top=presets.RemoteFile("
        f"{NAME!r}, {_url(server)!r}, {hashlib.md5(BODY).hexdigest()!r}))\n"
        f"sha = fetched_weights_sha256('imagenet', {str(tmp_path)!r}, {str(tmp_path / 'cache')!r})\n"
        "print(sha, 'keras' in sys.modules or 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [hashlib.sha256(BODY).hexdigest(), "False"]
    assert fetched_weights_sha256("nowhere/w.h5", tmp_path, tmp_path) is None  # a path: load_model words it
