"""Every setting the project reads from the environment, in one frozen record.

`Settings.from_env()` is the only place that reads `os.environ`: `app.py` (through
`demo.server.main`) reads it once at start and passes the record down; library callers that
pass no settings get `Settings.from_env()` at the public entry point (`xception_core.model`).
Nothing below the entry points looks at the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("onnx", "tf")
PRECISIONS = ("fp32", "int8")
MODEL_STORES = ("local", "ray")

DEFAULT_MAX_BATCH = 8
# Batch what is already waiting, never wait for more: on 2 CPU cores a batch of 8 runs no more
# images per second than 8 single calls (the forward already keeps both cores busy), so a wait
# would only add latency to a lone request (bench/README.md, "Micro-batching").
DEFAULT_BATCH_WAIT_S = 0.0


def _default_threads() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


@dataclass(frozen=True)
class Settings:
    """What a deployment can choose (environment variable in brackets).

    Attributes:
        weights: Weights the app serves [XCEPTION_WEIGHTS]: a preset name, a file path, or None
            for the presets in their automatic order.
        keras_home: Keras's cache root, official weights under `models/` [KERAS_HOME].
        cache_dir: Where fetched non-Keras weights are extracted [XCEPTION_CACHE_DIR].
        export_dir: Where model exports for Netron and downloads go [XCEPTION_EXPORT_DIR];
            None means `<cache_dir>/exports`.
        assets_dir: Bundled labels and example photos [XCEPTION_ASSETS_DIR]; None means the
            repository's `assets/`.
        backend: Inference backend 'onnx' or 'tf' [XCEPTION_BACKEND]; None picks ONNX Runtime
            where it can run a model, else TensorFlow (logged). 'onnx' that cannot run a model is
            an error, never a quiet TensorFlow (`xception_core.runtime.forward`).
        precision: 'fp32' or 'int8' [XCEPTION_PRECISION].
        onnx_threads: ONNX Runtime intra-op threads [XCEPTION_ONNX_THREADS].
        max_batch: Most concurrent classifies grouped into one forward [XCEPTION_MAX_BATCH].
        batch_wait_s: How long a batch waits for more requests [XCEPTION_BATCH_WAIT_MS].
        upload_dir: Gradio's upload folder; only files there are read [GRADIO_TEMP_DIR]. The
            app (`demo.server.create_app`) replaces it with a folder of the process's own inside
            it, so processes sharing a machine never touch each other's files.
        host: Address the server listens on [GRADIO_SERVER_NAME].
        port: Port the server listens on [GRADIO_SERVER_PORT].
        model_store: Where the app's models run [XCEPTION_MODEL_STORE]: 'local' (in the server
            process) or 'ray' (replicas of a Ray Serve deployment; see `scale/`). Ray itself finds
            its cluster from RAY_ADDRESS.
        serve_app: Name of the Ray Serve application whose model deployment a 'ray' store calls
            [XCEPTION_SERVE_APP].
    """

    weights: str | None = None
    keras_home: Path = Path.home() / ".keras"
    cache_dir: Path = Path.home() / ".cache" / "xception-explorer"
    export_dir: Path | None = None
    assets_dir: Path | None = None
    backend: str | None = None
    precision: str = "fp32"
    onnx_threads: int = dataclasses.field(default_factory=_default_threads)
    max_batch: int = DEFAULT_MAX_BATCH
    batch_wait_s: float = DEFAULT_BATCH_WAIT_S
    upload_dir: Path = Path(tempfile.gettempdir()) / "gradio"
    host: str = "127.0.0.1"
    port: int = 7860
    model_store: str = "local"
    serve_app: str = "xception"

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"XCEPTION_BACKEND must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"XCEPTION_PRECISION must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.max_batch < 1:
            raise ValueError(f"XCEPTION_MAX_BATCH must be ≥ 1, got {self.max_batch}")
        if self.model_store not in MODEL_STORES:
            raise ValueError(f"XCEPTION_MODEL_STORE must be one of {list(MODEL_STORES)}, got {self.model_store!r}")
        if self.onnx_threads < 1:
            raise ValueError(f"XCEPTION_ONNX_THREADS must be ≥ 1, got {self.onnx_threads}")

    @property
    def exports(self) -> Path:
        """The folder model exports go to."""
        return self.export_dir or self.cache_dir / "exports"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Reads the variables named in the class docstring (unset or empty: the default)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, kind: type, default):
            value = get(name)
            if value is None:
                return default
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {value!r}") from None

        defaults = cls()
        path = lambda name, default: Path(get(name)).expanduser() if get(name) else default  # noqa: E731
        wait_ms = number("XCEPTION_BATCH_WAIT_MS", float, None)
        return cls(
            weights=get("XCEPTION_WEIGHTS"),
            keras_home=path("KERAS_HOME", defaults.keras_home),
            cache_dir=path("XCEPTION_CACHE_DIR", defaults.cache_dir),
            export_dir=path("XCEPTION_EXPORT_DIR", None),
            assets_dir=path("XCEPTION_ASSETS_DIR", None),
            backend=(get("XCEPTION_BACKEND") or "").lower() or None,
            precision=(get("XCEPTION_PRECISION") or "fp32").lower(),
            onnx_threads=number("XCEPTION_ONNX_THREADS", int, defaults.onnx_threads),
            max_batch=number("XCEPTION_MAX_BATCH", int, DEFAULT_MAX_BATCH),
            batch_wait_s=DEFAULT_BATCH_WAIT_S if wait_ms is None else wait_ms / 1000,
            upload_dir=path("GRADIO_TEMP_DIR", defaults.upload_dir),
            host=get("GRADIO_SERVER_NAME") or defaults.host,
            port=number("GRADIO_SERVER_PORT", int, defaults.port),
            model_store=(get("XCEPTION_MODEL_STORE") or defaults.model_store).lower(),
            serve_app=get("XCEPTION_SERVE_APP") or defaults.serve_app,
        )
