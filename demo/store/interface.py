"""The store's interface and keys (see `demo.store` for its rooms): what the app needs of models,
as the `Store` and `ServedModel` protocols, and what every store shares (weights keys,
candidates, titles, when loading has settled, a prediction's top-k, the preprocessing). Page
text is the UI's: this module only reports states.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from demo.errors import LoadFailure
from xception_core.io.images import load_image
from xception_core.io.labels import top_k
from xception_core.io.preprocessing import preprocess
from xception_core.runtime.activations import BlockDifference, ImageActivations
from xception_core.runtime.introspection import ModelDescription
from xception_core.runtime.operation import BlockParams, LayerSource
from xception_core.settings import Settings
from xception_core.weights.presets import AUTO_ORDER, PRESETS
from xception_core.weights.source import ModelInfo

if TYPE_CHECKING:  # Keras records: imported where a feature needs TensorFlow, never at import
    from xception_core.model import LoadedModel

State = Literal["waiting", "loading", "ready", "failed"]


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    Attributes:
        top: (label, probability) pairs, most probable first.
        probabilities: (classes,) float32.
        features: (h, w, 2048) exit-flow features (input to Grad-CAM).
    """

    top: list[tuple[str, float]]
    probabilities: np.ndarray
    features: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], k: int) -> "Prediction":
        """The top `k` (at most every label) of one forward's (classes,) probabilities."""
        return cls(top_k(probabilities, labels, min(k, len(labels))), probabilities, features)


@dataclass(frozen=True)
class SlotStatus:
    """Where one set of weights stands: state, seconds since loading started, and why it failed
    (`error` in words for logs and clients, `failure` for code)."""

    key: str
    title: str
    state: State
    seconds: float = 0.0
    error: str = ""
    failure: LoadFailure | None = None


# ------------------------------------------------------------------------------------- the protocols


class ServedModel(Protocol):
    """What the app needs of one served set of weights, wherever its forward pass runs."""

    key: str
    labels: tuple[str, ...]

    @property
    def info(self) -> ModelInfo: ...

    @property
    def title(self) -> str: ...

    @property
    def input_size(self) -> int: ...

    @property
    def loaded(self) -> LoadedModel:
        """The weights as a Keras model in this process: Teach's `.keras` export only (TensorFlow,
        loaded on first need: may raise `WarmingUp`)."""
        ...

    @property
    def backend(self) -> str | None:
        """'onnx' or 'tf': what runs the forward here; None when it runs elsewhere (replicas)."""
        ...

    @property
    def precision(self) -> str | None:
        """'fp32' or 'int8' (the quantized model); None when the model runs elsewhere."""
        ...

    def preprocess(self, image: Any) -> np.ndarray:
        """Any image `load_image` accepts → (size, size, 3) float32 in [-1, 1]."""
        ...

    def predict(self, x: np.ndarray, k: int = 5) -> Prediction:
        """One preprocessed image (size, size, 3) → `Prediction`, batched with concurrent callers."""
        ...

    def classify(self, image: Any, k: int = 5) -> Prediction:
        """Top-k of one image (any input `load_image` accepts)."""
        ...

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """(h, w) Grad-CAM map in [0, 1] of one class from `Prediction.features`."""
        ...

    def description(self, variant: str) -> ModelDescription:
        """The block table of these weights in a wiring ('paper', 'article'), or of the reference
        Xception ('reference')."""
        ...

    def explorable(self, variant: str) -> Any:
        """What the activation cache (`ActivationSource.compute`) and Teach's extractor run for a
        wiring ('paper' or 'article')."""
        ...

    def operation_pass(self, variant: str) -> LayerSource:
        """Inside one operation's pass of a wiring: every layer output its steps read."""
        ...

    def operation_params(self, block: str) -> BlockParams:
        """One separable block's weights as arrays (the same in both wirings)."""
        ...

    def export(self, kind: str, variant: str, folder: Path, name: str) -> Path:
        """A wiring's export written (once) into `folder` under export `name`: kind 'graph'
        (Netron's weight-free graph) or 'keras' (the full `.keras`)."""
        ...


class WarmingUp(TimeoutError):
    """A feature that needs TensorFlow (Teach's `.keras` export) is still loading it in the
    background: try again soon."""


class ActivationSource(Protocol):
    """What the Explore tab needs of its activation cache (`ActivationExplorer` here; a cache whose
    records come from replicas in `demo.store_remote`)."""

    forward_calls: int

    def compute(self, loaded: LoadedModel, x: np.ndarray, *, weights_key: str | None = None
                ) -> tuple[ImageActivations, bool]: ...

    def lookup(self, key: str) -> ImageActivations | None: ...

    def compare(self, paper: ImageActivations, article: ImageActivations) -> list[BlockDifference]: ...

    def warm_up(self, loaded: LoadedModel) -> None: ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


class Store(Protocol):
    """What the app needs of its models: the weights it may serve (`candidates`), each loaded once
    and served to every request, and where loading stands."""

    settings: Settings
    candidates: tuple[str, ...]

    @property
    def default_key(self) -> str | None:
        """The weights served when a request names none; None until some weights are ready."""
        ...

    def start(self) -> "Store":
        """Starts loading (idempotent); returns the store."""
        ...

    def get(self, key: str | None = None, timeout: float | None = None) -> ServedModel:
        """The served model for `key` (default weights when None), waiting for it.

        Raises:
            WeightsUnavailableError: It failed to load, or nothing could be loaded.
            TimeoutError: Still loading after `timeout` seconds.
            ValueError: Unknown key.
        """
        ...

    def available(self) -> list[str]:
        """Keys of the weights that loaded, default first."""
        ...

    def title(self, key: str) -> str: ...

    def statuses(self) -> list[SlotStatus]:
        """Each candidate's state, in loading order."""
        ...

    def is_ready(self) -> bool:
        """The default weights are served."""
        ...

    def settled(self) -> bool:
        """Nothing is still loading or waiting: the page can stop polling."""
        ...

    def replicas(self) -> dict[str, int] | None:
        """Model replicas by state where a cluster serves the models; None in-process."""
        ...

    def activation_explorer(self) -> ActivationSource:
        """A new activation cache for the Explore tab, running its forwards where the models run."""
        ...

    def warm_operation_view(self, blocks: Sequence[str] = ()) -> threading.Event | None:
        """Readies Inside one operation's pass of the default weights for `blocks` once they are
        loaded (the event, where there is one, is set when that is done)."""
        ...


# ------------------------------------------------------------------------------------- shared by both


def default_candidates(settings: Settings) -> tuple[str, ...]:
    """The weights a store tries: `settings.weights`, else the presets in `AUTO_ORDER`."""
    return (settings.weights,) if settings.weights else AUTO_ORDER


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY = 40


def weights_key(source: str) -> str:
    """The one key weights are known by everywhere (status, /healthz, `?weights=`, every answer,
    export and folder names): a preset's own name; for a file, its stem made safe (letters,
    digits, '_' and '-', at most 40 characters: '/srv/m/xception_taught.keras' → 'xception_taught'),
    never its folder, and never a preset's name (a file called kitchenware.keras → 'kitchenware-file')."""
    if source in PRESETS:
        return source
    stem = _UNSAFE.sub("_", Path(source).stem).strip("_-")[:MAX_KEY] or "weights"
    return f"{stem}-file" if stem in PRESETS else stem


def candidate_sources(sources: Sequence[str]) -> dict[str, str]:
    """{key: source} of the weights a store tries, in order (`weights_key`)."""
    return {weights_key(source): source for source in sources}


def weights_title(key: str) -> str:
    """What the page calls weights before they are loaded: a preset's title, a weights file by its
    file name (its folder is the server's business)."""
    return PRESETS[key].title if key in PRESETS else Path(key).name


def has_settled(ready: bool, statuses: Sequence[SlotStatus]) -> bool:
    """The default weights are served and no candidate is still loading or waiting."""
    return ready and all(s.state in ("ready", "failed") for s in statuses)


def prepared(image: Any, size: int) -> np.ndarray:
    """Any image `load_image` accepts → (size, size, 3) float32 in [-1, 1]: every served model's
    preprocessing, wherever its forward runs."""
    return preprocess(load_image(image), size)
