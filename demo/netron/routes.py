"""Netron's web viewer and the exported model files, served on the app's one port.

Spaces expose a single port, so ``netron.start()`` (its own HTTP server) cannot be used. Instead the
FastAPI app that hosts the Gradio Blocks gets two routes (register them BEFORE mounting Gradio at "/"):

- ``GET /netron/{file}`` -- Netron's browser files, read from the installed ``netron`` package folder
  (flat: index.html, *.js, *.css, *-metadata.json, icons). Only an extension allowlist is served, never
  its ``.py`` files, ``__pycache__`` or sub folders. A few small patches are applied as the files are
  served (the installed package is never modified); see ``PATCHES``.
- ``GET /models/{name}`` -- files written by ``xception_core.io.export`` into one export folder, and only
  those whose name the caller allows.

The app embeds ``<iframe src="netron/index.html?url=../models/NAME">``: Netron's browser host reads the
``url`` query parameter and fetches it with ``XMLHttpRequest`` relative to ``/netron/index.html``, so
``../models/NAME`` resolves to ``/models/NAME`` on the same origin (also below a path prefix).

No model math here: this module knows file names, not Keras.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import fastapi
from fastapi import Request
from fastapi.responses import FileResponse, Response

from demo.fonts import FALLBACK, fallback_face

__all__ = [
    "NETRON_CSP",
    "MODELS_CSP",
    "PATCHES",
    "GzipCache",
    "MetadataPatch",
    "Patch",
    "PatchError",
    "NetronFiles",
    "add_netron_routes",
    "netron_dir",
    "netron_iframe_src",
]

# What Netron 9.3.3 needs in a browser, and nothing more. Its scripts, ES modules and the layout worker
# (``new Worker('worker.js', {type: 'module'})``) come from the same origin; index.html has inline
# ``<style>`` and ``style=`` attributes; the model is fetched with XHR from ``../models/``; exporting
# an image uses ``blob:``/``data:`` URLs. No eval: index.html itself already sets ``script-src 'self'``.
# ``connect-src`` is what blocks the analytics beacons and the ipinfo.io look-up should a patch miss.
# No ``frame-ancestors``: on Spaces the app itself runs in a huggingface.co iframe, and
# ``frame-ancestors 'self'`` would then refuse the Netron frame.
NETRON_CSP = (
    "default-src 'self'; "
    "script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; "
    "font-src 'self' data:; "
    "connect-src 'self' data: blob:; "
    "worker-src 'self' blob:; "
    "frame-src 'none'; "
    "object-src 'none'; "
    "base-uri 'self'; "
    "form-action 'none'"
)

# A model file opened directly in a tab must never run as a page.
MODELS_CSP = "default-src 'none'; sandbox"

# Served from the Netron folder: static web files only (never .py, .pyc, .txt, ...).
ALLOWED_EXTENSIONS: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".svg": "image/svg+xml",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}

# Flat names only: no separators, no leading dot, so "..", ".env" and "a/b" never match.
_NETRON_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.[a-z0-9]+$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)+$")

_COMPRESSIBLE = (".html", ".js", ".css", ".json", ".svg")
_GZIP_MIN_BYTES = 1024
# The page itself is revalidated on every load (patches change with app updates); the other files
# are versioned by the installed netron package and its metadata requests carry ``?version=``.
_CACHE_HTML = "no-cache"
_CACHE_STATIC = "public, max-age=3600"

_MARK = "xception-explorer"


class PatchError(RuntimeError):
    """A patch's anchor text was not found exactly once in the Netron file it targets."""


@dataclasses.dataclass(frozen=True)
class Patch:
    """Replace ``anchor`` (which must occur exactly once) by ``replacement`` in Netron file ``file``."""

    file: str
    anchor: str
    replacement: str
    why: str


@dataclasses.dataclass(frozen=True)
class MetadataPatch:
    """Rename the inputs of operator ``type_name`` in Netron metadata file ``file`` (a JSON list).

    The current names must equal ``expected``, else the patch is stale and fails.
    """

    file: str
    type_name: str
    expected: tuple[str, ...]
    names: tuple[str, ...]
    why: str


# Netron 9.3.3, browser host (browser.js ``Host.view``), telemetry (base.js ``Telemetry.send``) and
# the Keras operator metadata (keras-metadata.json).
PATCHES: tuple[Patch | MetadataPatch, ...] = (
    Patch(
        file="browser.js",
        anchor="            if (days > 180) {\n",
        replacement=f"            if (false && days > 180) {{ // {_MARK}: pinned netron, never nag\n",
        why=(
            "The page only says 'Please update to the newest version.' once the build date "
            "(<meta name=\"date\">) is 180 days old: a pinned netron would stop working by itself."
        ),
    ),
    Patch(
        file="browser.js",
        anchor="        const consent = async () => {\n",
        replacement=(
            "        const consent = async () => {\n"
            f"            return; // {_MARK}: no telemetry, so no cookie consent and no ipinfo.io look-up\n"
        ),
        why=(
            "The cookie-consent message (checked via the 'consent'/'_ga' cookies, whose domain is wrong "
            "for an IP host or a Space) blocks the model from loading, and it first asks ipinfo.io."
        ),
    ),
    Patch(
        file="browser.js",
        anchor="        const telemetry = async () => {\n",
        replacement=(
            "        const telemetry = async () => {\n"
            f"            return; // {_MARK}: no Google Analytics session, cookies or error reports\n"
        ),
        why="Google Analytics (page views, events, error reports, '_ga' cookies) must stay off.",
    ),
    Patch(
        file="base.js",
        anchor="                this._navigator.sendBeacon(url, body);\n",
        replacement=f"                void url; void body; // {_MARK}: no analytics beacons\n",
        why="Second line of defence: even a started telemetry session never sends a beacon.",
    ),
    Patch(
        file="index.html",
        anchor="</head>\n",
        replacement=(
            f"<style>/* {_MARK}: the app's fallback font after the system's */\n"
            + fallback_face("../fonts") + "\n"
            'body, button, .sidebar, .node-item text, .node-argument > text, .edge-label { font-family: '
            '-apple-system, BlinkMacSystemFont, "Segoe WPC", "Segoe UI", "Ubuntu", "Droid Sans", sans-serif, '
            f'"{FALLBACK}", "PingFang SC"; }}\n</style>\n</head>\n'
        ),
        why=(
            "Netron writes shapes between CJK angle brackets (U+3008/3009): a machine without a CJK font "
            "drew 'kernel▯3×3×3×32▯'. The app's fallback font has them, served from the app."
        ),
    ),
    MetadataPatch(
        file="keras-metadata.json",
        type_name="SeparableConv2D",
        expected=("input", "kernel", "bias"),
        names=("input", "depthwise_kernel", "pointwise_kernel", "bias"),
        why=(
            "Netron names a SeparableConv2D's weights by position: Xception's depthwise 3x3x64x1 kernel "
            "showed as 'kernel' and its pointwise 1x1x64x128 kernel as 'bias'."
        ),
    ),
)


def netron_dir() -> Path:
    """The installed ``netron`` package folder (found without importing the package)."""
    spec = importlib.util.find_spec("netron")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The 'netron' package is not installed.")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def netron_iframe_src(model_name: str, netron_prefix: str = "netron", models_prefix: str = "models") -> str:
    """The relative ``src`` for an iframe, e.g. ``netron/index.html?url=../models/NAME``."""
    if not _MODEL_NAME.match(model_name):
        raise ValueError(f"Invalid model file name {model_name!r}: expected letters, digits, '_', '-', '.'.")
    return f"{netron_prefix}/index.html?url=../{models_prefix}/{model_name}"


@dataclasses.dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str


class NetronFiles:
    """Netron's web files, allowlisted, patched and cached in memory as they are first served.

    Construction lists the folder and applies every patch once, so a Netron upgrade that moves a patch
    anchor (or renames a metadata entry) fails at startup (``PatchError``) instead of serving an
    unpatched viewer.
    """

    def __init__(self, root: Path | None = None, patches: Iterable[Patch | MetadataPatch] = PATCHES) -> None:
        self.root = (root or netron_dir()).resolve()
        self.patches = tuple(patches)
        # The allowlist is what is actually there, flat, regular files (no symlinks) with a web extension.
        self.names: frozenset[str] = frozenset(
            p.name
            for p in self.root.iterdir()
            if p.is_file() and not p.is_symlink() and p.suffix in ALLOWED_EXTENSIONS and _NETRON_NAME.match(p.name)
        )
        if "index.html" not in self.names:
            raise RuntimeError(f"No index.html in the netron package folder {self.root}.")
        self._cache: dict[str, _Asset] = {}
        self._lock = threading.Lock()
        for name in sorted({p.file for p in self.patches}):
            if name not in self.names:
                raise PatchError(f"netron file {name!r} to patch is missing from {self.root}.")
            self.get(name)  # fail loudly now, not on the first page view

    def _read(self, name: str) -> bytes:
        data = (self.root / name).read_bytes()
        patches = [p for p in self.patches if p.file == name]
        if not patches:
            return data
        text = data.decode("utf-8")
        for patch in patches:
            if isinstance(patch, MetadataPatch):
                text = _patch_metadata(text, patch)
                continue
            count = text.count(patch.anchor)
            if count != 1:
                raise PatchError(
                    f"netron {name}: patch anchor found {count} times, expected once: {patch.anchor!r} "
                    f"({patch.why}). Check the pinned netron version."
                )
            text = text.replace(patch.anchor, patch.replacement)
        return text.encode("utf-8")

    def get(self, name: str) -> _Asset | None:
        """The (patched) file ``name``, or None when it is not served."""
        if name not in self.names:
            return None
        asset = self._cache.get(name)
        if asset is None:
            with self._lock:
                asset = self._cache.get(name)
                if asset is None:
                    body = self._read(name)
                    suffix = Path(name).suffix
                    gzipped = None
                    if suffix in _COMPRESSIBLE and len(body) >= _GZIP_MIN_BYTES:
                        # mtime=0: the same bytes on every start, so the ETag stays valid.
                        gzipped = gzip.compress(body, compresslevel=6, mtime=0)
                    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                    asset = _Asset(body, gzipped, ALLOWED_EXTENSIONS[suffix], etag)
                    self._cache[name] = asset
        return asset


def _patch_metadata(text: str, patch: MetadataPatch) -> str:
    types = json.loads(text)
    matches = [t for t in types if isinstance(t, dict) and t.get("name") == patch.type_name]
    if len(matches) != 1:
        raise PatchError(f"netron {patch.file}: {len(matches)} entries named {patch.type_name!r}, expected one.")
    inputs = matches[0].get("inputs") or []
    current = tuple(i.get("name") for i in inputs)
    if current != patch.expected:
        raise PatchError(
            f"netron {patch.file}: {patch.type_name} inputs are {current}, expected {patch.expected} ({patch.why})."
        )
    first = dict(inputs[0])  # keep the data input's description
    matches[0]["inputs"] = [first] + [{"name": n} for n in patch.names[1:]]
    first["name"] = patch.names[0]
    return json.dumps(types, separators=(",", ":"), ensure_ascii=False)


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            q = params.strip().replace(" ", "")
            return q not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _etag_matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


_GZIP_MODEL_MAX_BYTES = 16 * 1024 * 1024


class GzipCache:
    """Gzipped bodies of small exported files, an LRU bounded in entries and bytes. Thread-safe.

    Keyed by the file's identity and version (path, device, inode, mtime, size): a rewritten file
    is compressed again, never served stale. One per set of routes (`add_netron_routes`).

    Args:
        max_entries: Most bodies kept.
        max_bytes: Most compressed bytes kept (the newest body is always kept).
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 8 * 1024 * 1024):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"max_entries and max_bytes must be ≥ 1, got {max_entries} and {max_bytes}")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._lock = threading.Lock()
        self._bodies: OrderedDict[tuple[str, int, int, int, int], bytes] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def get(self, path: Path, stat_result: os.stat_result) -> bytes | None:
        """Gzip of the file at `path` as `stat_result` describes it; None if it changed or vanished meanwhile."""
        key = (str(path), stat_result.st_dev, stat_result.st_ino, stat_result.st_mtime_ns, stat_result.st_size)
        with self._lock:
            body = self._bodies.get(key)
            if body is not None:
                self._bodies.move_to_end(key)
                return body
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) != stat_result.st_size:
            return None
        body = gzip.compress(data, compresslevel=6, mtime=0)
        with self._lock:
            if key not in self._bodies:
                self._bodies[key] = body
                self._bytes += len(body)
            while len(self._bodies) > 1 and (len(self._bodies) > self.max_entries or self._bytes > self.max_bytes):
                _, old = self._bodies.popitem(last=False)
                self._bytes -= len(old)
        return body


def _not_found() -> Response:
    return Response("Not Found", status_code=404, media_type="text/plain; charset=utf-8",
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def add_netron_routes(
    app: fastapi.FastAPI,
    export_dir: Path,
    allowed_names: Callable[[], set[str]] | set[str] | frozenset[str],
    *,
    netron_prefix: str = "/netron",
    models_prefix: str = "/models",
    netron_files: NetronFiles | None = None,
) -> NetronFiles:
    """Register ``GET {netron_prefix}/{file}`` and ``GET {models_prefix}/{name}`` on ``app``.

    Call this before ``gr.mount_gradio_app(app, demo, path="/")``: routes match in order.

    Args:
        app: The FastAPI app that serves everything on one port.
        export_dir: The folder ``xception_core.io.export`` writes to; nothing outside it is served.
        allowed_names: The file names (not paths) that may be served from ``export_dir``: a set, or a
            callable asked on every request (e.g. the names the exporter returned so far).
        netron_prefix: URL prefix of Netron's files.
        models_prefix: URL prefix of the exported files (the iframe uses ``../models/NAME``).
        netron_files: Override the Netron file source (tests); by default the installed package.

    Returns:
        The ``NetronFiles`` in use (patches already applied: raises ``PatchError`` if one is stale).
    """
    files = netron_files or NetronFiles()
    export_root = Path(export_dir).resolve()
    gzipped_models = GzipCache()

    def current_names() -> set[str] | frozenset[str]:
        return allowed_names() if callable(allowed_names) else allowed_names

    async def netron_file(file: str, request: Request) -> Response:
        asset = files.get(file) if _NETRON_NAME.match(file) else None
        if asset is None:
            return _not_found()
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": _CACHE_HTML if file.endswith(".html") else _CACHE_STATIC,
            "ETag": asset.etag,
            "Content-Security-Policy": NETRON_CSP,
            "Referrer-Policy": "no-referrer",
        }
        if asset.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
        if _etag_matches(request, asset.etag):
            return Response(status_code=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and _accepts_gzip(request):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=asset.media_type, headers=headers)

    async def model_file(name: str, request: Request) -> Response:
        # Exact, flat names from the allowlist only; the resolved path must stay in export_dir.
        if not _MODEL_NAME.match(name) or name not in current_names():
            return _not_found()
        path = export_root / name
        try:
            if path.is_symlink() or path.resolve().parent != export_root or not path.is_file():
                return _not_found()
            stat_result = path.stat()
        except OSError:
            return _not_found()
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": MODELS_CSP,
            # Names carry a content hash, but the allowlist may drop a name: revalidate.
            "Cache-Control": "no-cache",
        }
        if path.suffix == ".json" and stat_result.st_size <= _GZIP_MODEL_MAX_BYTES:
            # The weight-free graph (JSON, ~160 kB for Xception) shrinks ~15x; binary files do not.
            headers["Vary"] = "Accept-Encoding"
            if _accepts_gzip(request):
                body = gzipped_models.get(path, stat_result)
                if body is not None:
                    headers["Content-Encoding"] = "gzip"
                    headers["Content-Disposition"] = f'attachment; filename="{name}"'
                    return Response(body, media_type="application/octet-stream", headers=headers)
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=name,  # Content-Disposition: attachment; filename="NAME"
            stat_result=stat_result,
            headers=headers,
        )

    # ``:path`` so that every URL below the prefixes ends here (sub folders such as ``__pycache__/``
    # get a 404 from these handlers instead of falling through to whatever is mounted at "/").
    app.add_api_route(f"{netron_prefix}/{{file:path}}", netron_file, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route(f"{models_prefix}/{{name:path}}", model_file, methods=["GET", "HEAD"], include_in_schema=False)
    return files
