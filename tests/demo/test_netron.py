"""Fast tests of the Netron routes (no browser, no TensorFlow): allowlists, patches, headers."""

from __future__ import annotations

import shutil
from pathlib import Path

import fastapi
import pytest
from fastapi.testclient import TestClient

from demo.netron.routes import (
    MODELS_CSP,
    GzipCache,
    NETRON_CSP,
    PATCHES,
    MetadataPatch,
    NetronFiles,
    PatchError,
    add_netron_routes,
    netron_dir,
    netron_iframe_src,
)

GRAPH_NAME = "tiny.graph-0123456789abcdef.json"
KERAS_NAME = "tiny.keras-0123456789abcdef-fedcba9876543210.keras"


@pytest.fixture(scope="module")
def netron_files() -> NetronFiles:
    return NetronFiles()


@pytest.fixture()
def export_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / GRAPH_NAME).write_text('{"modelTopology": {}, "pad": "' + "x" * 4000 + '"}')
    (folder / KERAS_NAME).write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    (folder / "not-exported.json").write_text("{}")  # on disk but never allowed
    (tmp_path / "secret.txt").write_text("secret")
    return folder


@pytest.fixture()
def client(export_dir: Path, netron_files: NetronFiles) -> TestClient:
    app = fastapi.FastAPI()
    add_netron_routes(app, export_dir, {GRAPH_NAME, KERAS_NAME, "secret.txt", "../secret.txt"},
                      netron_files=netron_files)
    return TestClient(app)


def test_index_html_served_with_csp(client: TestClient) -> None:
    response = client.get("/netron/index.html")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == NETRON_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert '<meta name="version" content="9.3.3">' in response.text
    assert "connect-src 'self' data: blob:" in NETRON_CSP
    assert "https:" not in NETRON_CSP and "*" not in NETRON_CSP and "unsafe-eval" not in NETRON_CSP


def test_browser_js_patched(client: TestClient) -> None:
    text = client.get("/netron/browser.js").text
    # Update nag: never, whatever the clock says.
    assert "if (false && days > 180) {" in text
    assert "            if (days > 180) {\n" not in text
    # Cookie consent and the ipinfo.io look-up before it: skipped.
    assert "const consent = async () => {\n            return; // xception-explorer" in text
    # Google Analytics session, cookies, error reports: never started.
    assert "const telemetry = async () => {\n            return; // xception-explorer" in text
    # The rest of the host is intact (the url query parameter is still read).
    assert "params.get('url')" in text


def test_base_js_patched(client: TestClient) -> None:
    text = client.get("/netron/base.js").text
    assert "sendBeacon" not in text
    assert "void url; void body; // xception-explorer" in text


def test_installed_package_untouched(netron_files: NetronFiles) -> None:
    for patch in PATCHES:
        original = (netron_dir() / patch.file).read_text(encoding="utf-8")
        if isinstance(patch, MetadataPatch):
            assert '"name": "depthwise_kernel"' not in original
        else:
            assert original.count(patch.anchor) == 1
            assert "xception-explorer" not in original


@pytest.mark.parametrize("index", range(len(PATCHES)))
def test_stale_patch_fails_loudly(tmp_path: Path, index: int) -> None:
    """A netron whose file no longer has a patch's anchor (or metadata entry) is refused at startup."""
    for name in {"index.html"} | {p.file for p in PATCHES}:
        shutil.copyfile(netron_dir() / name, tmp_path / name)
    NetronFiles(root=tmp_path)  # the copy itself patches fine
    patch = PATCHES[index]
    target = tmp_path / patch.file
    if isinstance(patch, MetadataPatch):
        target.write_text(target.read_text().replace(f'"name": "{patch.type_name}"', '"name": "Renamed"'))
        message = f"0 entries named '{patch.type_name}'"
    else:
        target.write_text(target.read_text().replace(patch.anchor, "// moved in a future netron\n"))
        message = "anchor found 0 times"
    with pytest.raises(PatchError, match=message):
        NetronFiles(root=tmp_path)
    target.unlink()
    # index.html is Netron itself (the font patch is in it): without it nothing is served at all.
    with pytest.raises(RuntimeError if patch.file == "index.html" else PatchError,
                       match="No index.html" if patch.file == "index.html" else "missing"):
        NetronFiles(root=tmp_path)


def test_separable_conv_weights_named(client: TestClient) -> None:
    types = {t["name"]: t for t in client.get("/netron/keras-metadata.json").json()}
    names = [i["name"] for i in types["SeparableConv2D"]["inputs"]]
    assert names == ["input", "depthwise_kernel", "pointwise_kernel", "bias"]
    assert "description" in types["SeparableConv2D"]["inputs"][0]
    assert [i["name"] for i in types["Conv2D"]["inputs"]] == ["input", "kernel", "bias"]  # untouched


@pytest.mark.parametrize(
    "url",
    [
        "/netron/server.py",
        "/netron/__init__.py",
        "/netron/onnx.py",
        "/netron/__pycache__/server.cpython-311.pyc",
        "/netron/__pycache__/",
        "/netron/",
        "/netron/..%2Fserver.py",
        "/netron/..%2F..%2Fnetron%2Fserver.py",
        "/netron/%2e%2e/server.py",
        "/netron/.%2e/netron/server.py",
        "/netron/%2Fetc%2Fpasswd",
        "/netron/no-such-file.js",
        "/netron/index.html%00.py",
    ],
)
def test_netron_only_serves_web_files(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert "import" not in response.text


def test_netron_allowlist_is_web_extensions_only(netron_files: NetronFiles) -> None:
    assert "index.html" in netron_files.names and "onnx-metadata.json" in netron_files.names
    assert all(Path(name).suffix in {".html", ".js", ".css", ".json", ".png", ".ico", ".svg", ".woff", ".woff2"}
               for name in netron_files.names)
    assert not any(name.endswith((".py", ".pyc")) for name in netron_files.names)


def test_gzip_for_large_metadata(client: TestClient) -> None:
    raw_size = (netron_dir() / "onnx-metadata.json").stat().st_size
    response = client.get("/netron/onnx-metadata.json", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) < raw_size // 5
    assert response.headers["content-type"] == "application/json"
    assert len(response.content) == raw_size  # httpx decoded it

    plain = client.get("/netron/onnx-metadata.json", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert int(plain.headers["content-length"]) == raw_size

    refused = client.get("/netron/onnx-metadata.json", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_etag_revalidation_and_cache_headers(client: TestClient) -> None:
    first = client.get("/netron/view.js")
    assert first.headers["content-type"] == "text/javascript; charset=utf-8"
    assert first.headers["cache-control"].startswith("public")
    again = client.get("/netron/view.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_head_request(client: TestClient) -> None:
    response = client.head("/netron/index.html")
    assert response.status_code == 200


def test_model_route_serves_allowed_exports(client: TestClient, export_dir: Path) -> None:
    response = client.get(f"/models/{KERAS_NAME}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"] == f'attachment; filename="{KERAS_NAME}"'
    assert response.headers["content-security-policy"] == MODELS_CSP
    assert response.content == (export_dir / KERAS_NAME).read_bytes()


def test_model_route_gzips_graph_json(client: TestClient, export_dir: Path) -> None:
    response = client.get(f"/models/{GRAPH_NAME}", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (export_dir / GRAPH_NAME).read_bytes()
    plain = client.get(f"/models/{GRAPH_NAME}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == response.content  # same bytes either way


def test_the_gzip_cache_is_bounded_in_entries_and_bytes_and_follows_the_file(tmp_path: Path) -> None:
    import gzip
    import os
    import random

    files = []
    for i in range(4):
        path = tmp_path / f"m{i}.graph-0123456789abcdef.json"
        path.write_bytes(random.Random(i).randbytes(3000))  # random bytes do not compress: a body costs its size
        files.append(path)
    cache = GzipCache(max_entries=3, max_bytes=10_000)
    for path in files:
        assert gzip.decompress(cache.get(path, path.stat())) == path.read_bytes()
    assert len(cache) == 3 and cache.nbytes <= 10_000
    tight = GzipCache(max_entries=16, max_bytes=3_000)
    for path in files:
        tight.get(path, path.stat())
    assert len(tight) == 1 and tight.nbytes > 0  # over the byte budget: only the newest stays
    # A rewritten file (same size, new content) is compressed again, never served stale.
    path = files[-1]
    before = path.stat()
    path.write_text("z" * before.st_size)
    os.utime(path, ns=(before.st_mtime_ns + 10**9, before.st_mtime_ns + 10**9))
    assert gzip.decompress(cache.get(path, path.stat())) == b"z" * before.st_size
    assert len(cache) == 3
    # A file that changed between stat and read is not compressed under the old version.
    stale = files[0].stat()
    files[0].write_text("shorter")
    assert GzipCache().get(files[0], stale) is None


@pytest.mark.parametrize(
    "url",
    [
        "/models/not-exported.json",  # in the folder, not in the allowlist
        "/models/unknown.graph-0000000000000000.json",
        "/models/secret.txt",  # allowed name, but not in the export folder
        "/models/..%2Fsecret.txt",  # '../secret.txt' is (wrongly) allowed: still refused
        "/models/../secret.txt",
        "/models/..%2F..%2Fetc%2Fpasswd",
        "/models/%2Fetc%2Fpasswd",
        "/models//etc/passwd",
        "/models/%2e%2e%2Fsecret.txt",
        "/models/",
    ],
)
def test_model_route_refuses_everything_else(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert b"secret" not in response.content and b"root:" not in response.content


def test_model_route_refuses_symlink_out(tmp_path: Path, netron_files: NetronFiles) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (tmp_path / "outside.json").write_text('{"secret": 1}')
    (folder / "link.graph-0123456789abcdef.json").symlink_to(tmp_path / "outside.json")
    app = fastapi.FastAPI()
    add_netron_routes(app, folder, {"link.graph-0123456789abcdef.json"}, netron_files=netron_files)
    assert TestClient(app).get("/models/link.graph-0123456789abcdef.json").status_code == 404


def test_model_allowlist_callable_is_asked_per_request(export_dir: Path, netron_files: NetronFiles) -> None:
    allowed: set[str] = set()
    app = fastapi.FastAPI()
    add_netron_routes(app, export_dir, lambda: allowed, netron_files=netron_files)
    client = TestClient(app)
    assert client.get(f"/models/{GRAPH_NAME}").status_code == 404
    allowed.add(GRAPH_NAME)
    assert client.get(f"/models/{GRAPH_NAME}").status_code == 200


def test_iframe_src_is_relative() -> None:
    assert netron_iframe_src(GRAPH_NAME) == f"netron/index.html?url=../models/{GRAPH_NAME}"
    with pytest.raises(ValueError, match="Invalid model file name"):
        netron_iframe_src("../etc/passwd")
