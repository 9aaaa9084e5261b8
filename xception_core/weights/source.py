"""What weights are and why they could not be had, without Keras: the records the serving path
(`xception_core.runtime.translated`, `demo.store`) passes around, importable in a process that
never imports TensorFlow. `xception_core.weights.fetch`, `xception_core.weights.load` and
`xception_core.model` re-export them where they were first defined.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Literal

from xception_core.arch.registry import DEFAULT_ARCHITECTURE, Architecture, architecture

__all__ = ["ModelInfo", "Outputs", "WeightsFailure", "WeightsSource", "WeightsUnavailableError"]

Outputs = Literal["probabilities", "logits", "features"]


class WeightsFailure(enum.StrEnum):
    """Why weights could not be had, for code to act on (a page picks its words by it)."""

    OFFLINE = "offline"  # the download failed (no network, host unreachable, server error) and nothing is cached
    NOT_FOUND = "not-found"  # the source answered that the file does not exist
    DAMAGED = "damaged"  # a file failed its checksum or its verification
    UNEXPECTED = "unexpected"  # the download gave something other than what the preset describes
    CACHE_UNWRITABLE = "cache-unwritable"  # the weights cache folder cannot be written
    UNKNOWN = "unknown"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache, failed verification).

    Attributes:
        cause: Why, as a `WeightsFailure` (the message is for people and logs).
    """

    def __init__(self, message: str, cause: WeightsFailure = WeightsFailure.UNKNOWN):
        super().__init__(message)
        self.cause = WeightsFailure(cause)

    def __reduce__(self):  # pickles with its cause (errors cross process boundaries under Ray)
        return type(self), (str(self), self.cause)


@dataclass(frozen=True)
class WeightsSource:
    """What a model's weights are.

    Attributes:
        preset: Preset name, 'file' for a user-supplied file, or None for random weights.
        title: Human-readable description.
        source: File the weights were read from, or 'random initialisation' (a server path: for
            logs, never for clients).
        labels: Label-set name (`xception_core.io.labels.load_labels`), or None if unknown.
        input_size: Square input side the weights expect, or None when not fixed.
        outputs: 'probabilities', 'logits' or 'features' (no classifier).
    """

    preset: str | None
    title: str
    source: str
    labels: str | None
    input_size: int | None
    outputs: Outputs


@dataclass(frozen=True)
class ModelInfo(WeightsSource):
    """What a built model is: where its weights came from (every `WeightsSource` field: `preset`,
    `title`, `source`, `labels`, `input_size`, `outputs`) and how it is wired.

    Attributes:
        variant: 'paper' or 'article' wiring.
        architecture: The network, by its key in `xception_core.arch.registry`.
    """

    variant: str
    architecture: str = DEFAULT_ARCHITECTURE

    @classmethod
    def wired(cls, source: WeightsSource, variant: str, architecture: str = DEFAULT_ARCHITECTURE) -> "ModelInfo":
        """`source` with the architecture and the wiring its model was built in."""
        return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(WeightsSource)}, variant=variant,
                   architecture=architecture)

    @property
    def arch(self) -> Architecture:
        """The architecture's record."""
        return architecture(self.architecture)

    @property
    def features_layer(self) -> str:
        """Name of the layer giving the exit-flow features (N, h, w, 2048) in this wiring."""
        return self.arch.features_layer(self.variant)
