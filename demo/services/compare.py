"""The Compare view's work without Gradio: Xception against Inception V3, the comparison the
Xception paper is built on.

- `structure(size)`: both networks module by module at one input size (output shape, parameters,
  multiply-accumulates), their totals and where their parameters sit, from their layer graphs
  (`describe_graph`: no weights, no Keras), each with the 1000-class ImageNet head the paper's
  counts include;
- `timings(photo)`: the forward of each, measured in this process on the same photo, alternated,
  each on its own translation on ONNX Runtime (Xception: the app's default weights; Inception V3:
  `demo.store.compared`, prepared on first need);
- `predictions(photo)`: both top-5 and both Grad-CAM maps, only when Inception V3's weights are
  the ImageNet ones (random weights never predict here);
- `continuum(...)`: the paper's Figures 1–4 as counts (`xception_core.arch.continuum`);
- `PAPER`: the paper's own figures (Table 1, Table 3), cited as the paper's, with which count each is.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from demo.errors import public_text
from demo.services import UserError
from demo.services.explore import check_int
from demo.services.models import served_model
from demo.services.payloads import payload_to_image
from demo.store import Store, WarmingUp, prepared
from demo.store.compared import ComparedModel, ComparedModels
from xception_core.arch.continuum import Continuum, continuum, segment_counts
from xception_core.arch.registry import architecture
from xception_core.inputs.images import display_copy
from xception_core.io.labels import top_k
from xception_core.io.visualize import overlay
from xception_core.runtime.introspection import HEAD, ModelDescription, describe_graph
from xception_core.weights.presets import preprocessing_for
from xception_core.weights.source import WeightsFailure, WeightsUnavailableError

XCEPTION, INCEPTION_V3 = "xception", "inception_v3"
NETWORKS = (XCEPTION, INCEPTION_V3)
SIZE_MIN = max(architecture(n).spec.min_input_size for n in NETWORKS)  # both networks must fit
SIZE_MAX = 1024
ROUNDS_DEFAULT, ROUNDS_MAX = 5, 20
CHANNELS_MAX = 4096
SIDE_MAX = 512
CAM_ALPHA = 0.5
# Where parameters sit, by the `flow` of each block (`BlockInfo.flow`), in the order shown.
PLACES: dict[str, tuple[tuple[str, str], ...]] = {
    XCEPTION: (("entry", "entry flow"), ("middle", "middle flow"), ("exit", "exit flow"), (HEAD, "classifier")),
    INCEPTION_V3: (("stem", "stem"), ("inception", "Inception modules"), (HEAD, "classifier")),
}


@dataclass(frozen=True)
class PaperFigures:
    """One network's figures in the Xception paper (Chollet 2017, arXiv 1610.02357).

    Attributes:
        top1, top5: ImageNet single-crop validation accuracy (Table 1).
        params: Its parameter count (Table 3).
        steps_per_second: Training steps per second on 60 NVIDIA K80 GPUs (Table 3).
    """

    top1: float
    top5: float
    params: int
    steps_per_second: float


PAPER: dict[str, PaperFigures] = {
    XCEPTION: PaperFigures(0.790, 0.945, 22_855_952, 28),
    INCEPTION_V3: PaperFigures(0.782, 0.941, 23_626_728, 31),
}
PAPER_CITATION = "Chollet 2017, Xception (arXiv 1610.02357), Tables 1 and 3"


@dataclass(frozen=True)
class Network:
    """One network described at one input size.

    Attributes:
        key: 'xception' or 'inception_v3'.
        title: Its name.
        description: Module by module (`describe_graph`), the ImageNet head included.
        placement: (place, its parameters) in `PLACES` order; they sum to the total.
    """

    key: str
    title: str
    description: ModelDescription
    placement: tuple[tuple[str, int], ...]

    @property
    def paper(self) -> PaperFigures:
        return PAPER[self.key]

    def rows(self) -> list[dict[str, Any]]:
        """One row per module: name, kind, output shape, parameters (all, learned) and MACs."""
        return [{"name": b.name, "flow": b.flow, "kind": b.kind, "output_shape": list(b.output_shape),
                 "params": b.params, "learned_params": b.learned_params, "macs": b.macs}
                for b in self.description.blocks]

    def totals(self) -> dict[str, Any]:
        d = self.description
        return {"input_shape": list(d.input_shape), "total_params": d.total_params,
                "learned_params": d.learned_params, "moving_statistics_params": d.moving_statistics_params,
                "total_macs": d.total_macs, "modules": len(d.blocks)}


def placement(key: str, description: ModelDescription) -> tuple[tuple[str, int], ...]:
    """Parameters by place (`PLACES[key]`), from the blocks' flows.

    Raises:
        ValueError: A block whose flow is no place of that network (the spec changed).
    """
    places = dict(PLACES[key])
    sums = dict.fromkeys(places.values(), 0)
    for block in description.blocks:
        if block.flow not in places:
            raise ValueError(f"block {block.name!r} of {key} has flow {block.flow!r}, not one of {list(places)}")
        sums[places[block.flow]] += block.params
    return tuple(sums.items())


@dataclass(frozen=True)
class Timings:
    """Both forwards on the same photo in this process, alternated (batch 1, ONNX Runtime, fp32).

    Attributes:
        xception_ms, inception_ms: Each round's forward, milliseconds, in the order run.
        input_sizes: The side each network ran at (its weights' own).
        threads: ONNX Runtime intra-op threads of each.
        pretrained: Whether Inception V3's weights are ImageNet's (the times do not depend on it).
        first: Which ran first in each round (they alternate).
        macs: Each network's multiply-accumulates at the side it ran at (the work each forward did:
            the sides differ when Xception's weights are not ImageNet's).
    """

    xception_ms: tuple[float, ...]
    inception_ms: tuple[float, ...]
    input_sizes: dict[str, int]
    threads: dict[str, int]
    pretrained: bool
    first: tuple[str, ...]
    macs: dict[str, int]

    @property
    def medians(self) -> dict[str, float]:
        return {XCEPTION: statistics.median(self.xception_ms), INCEPTION_V3: statistics.median(self.inception_ms)}

    def to_dict(self) -> dict[str, Any]:
        medians = self.medians
        return {"rounds": len(self.xception_ms), "order": "alternated, each round's first network alternating",
                "first": list(self.first), "input_sizes": self.input_sizes, "threads": self.threads,
                "backend": "onnx", "precision": "fp32", "batch": 1,
                "xception_ms": [round(v, 2) for v in self.xception_ms],
                "inception_v3_ms": [round(v, 2) for v in self.inception_ms],
                "median_ms": {k: round(v, 2) for k, v in medians.items()}, "macs": self.macs,
                "inception_v3_over_xception": round(medians[INCEPTION_V3] / medians[XCEPTION], 3)}


@dataclass(frozen=True)
class Predictions:
    """Both networks' top-5 and Grad-CAM maps over the photo (ImageNet weights for both)."""

    xception: list[tuple[str, float]]
    inception: list[tuple[str, float]]
    xception_cam: Image.Image
    inception_cam: Image.Image


class CompareService:
    """Xception against Inception V3 (see the module), on a shared `Store`.

    Args:
        store: Xception's served weights (the app's default).
        compared: Inception V3, prepared on first need (default: one over the store's settings).
    """

    def __init__(self, store: Store, compared: ComparedModels | None = None):
        self.store = store
        self.compared = compared or ComparedModels(store.settings)
        self._lock = threading.Lock()
        self._timing = threading.Lock()  # one measurement at a time: two would share the cores
        self._structures: dict[int, tuple[Network, Network]] = {}

    # ---------------------------------------------------------------- structure

    def check_size(self, size: Any) -> int:
        return check_int(size, "Input size", SIZE_MIN, SIZE_MAX)

    def structure(self, size: Any = 299) -> tuple[Network, Network]:
        """(Xception, Inception V3) at `size`×`size` pixels, each with the 1000-class head."""
        side = self.check_size(size)
        with self._lock:
            if side not in self._structures:
                networks = []
                for key in NETWORKS:
                    arch = architecture(key)
                    description = describe_graph(arch, side, classes=1000)
                    networks.append(Network(key, arch.title, description, placement(key, description)))
                self._structures[side] = (networks[0], networks[1])
                while len(self._structures) > 16:  # a few sizes are asked for; the first go first
                    self._structures.pop(next(iter(self._structures)))
            return self._structures[side]

    # ---------------------------------------------------------------- the second network

    def state(self) -> str:
        """Where Inception V3's preparation stands: 'idle', 'preparing', 'ready' or 'failed'."""
        return self.compared.state()

    def prepare(self) -> None:
        """Starts preparing Inception V3 in the background (returns at once)."""
        self.compared.start()

    def inception(self, wait_s: float | None = 0.0) -> ComparedModel:
        """The prepared Inception V3, failures and waits as `UserError`."""
        try:
            return self.compared.get(wait_s)
        except WarmingUp as exc:
            raise UserError(f"{exc}.") from None
        except WeightsUnavailableError as exc:
            raise UserError(public_text(exc)) from None

    def why_no_predictions(self) -> WeightsFailure | None:
        """Why Inception V3 predicts nothing here (None when it has its ImageNet weights, or is not
        prepared yet)."""
        if self.compared.state() != "ready":
            return None
        model = self.compared.get(0)
        return None if model.pretrained else (model.failure or WeightsFailure.UNKNOWN)

    # ---------------------------------------------------------------- the photo

    def _inputs(self, payload: Any, inception: ComparedModel) -> tuple[Any, Image.Image, np.ndarray, np.ndarray]:
        served = served_model(self.store)
        if served.info.architecture != XCEPTION:
            raise UserError("The comparison needs Xception's weights as the app's default.")
        image = payload_to_image(payload, self.store.settings.upload_dir)
        model = inception.model
        return served, image, served.preprocess(image), prepared(image, model.input_size,
                                                                 preprocessing_for(model.info.preset))

    def timings(self, payload: Any, rounds: Any = ROUNDS_DEFAULT, wait_s: float | None = 0.0) -> Timings:
        """Both forwards on the photo, `rounds` times each, alternated (one unmeasured run each first)."""
        rounds = check_int(rounds, "Rounds", 1, ROUNDS_MAX)
        inception = self.inception(wait_s)
        served, _, x, y = self._inputs(payload, inception)
        xception_forward = getattr(served.explorable(served.info.variant), "forward", None)
        if xception_forward is None:
            raise UserError("Timing both networks needs the ONNX Runtime backend (the app runs backend 'tf').")
        forwards = {XCEPTION: (xception_forward, x[None]), INCEPTION_V3: (inception.model.forward, y[None])}
        times: dict[str, list[float]] = {XCEPTION: [], INCEPTION_V3: []}
        first = []
        with self._timing:
            for fn, batch in forwards.values():  # ONNX Runtime's first run of a session costs more
                fn(batch)
            for i in range(rounds):
                order = NETWORKS if i % 2 == 0 else NETWORKS[::-1]
                first.append(order[0])
                for key in order:
                    fn, batch = forwards[key]
                    start = time.perf_counter()
                    fn(batch)
                    times[key].append((time.perf_counter() - start) * 1000)
        threads = {XCEPTION: int(getattr(self.store.settings, "onnx_threads", 0)),
                   INCEPTION_V3: int(inception.model.runner.threads)}
        sizes = {XCEPTION: int(x.shape[0]), INCEPTION_V3: int(y.shape[0])}
        # Each at its own side (Xception's weights may take a side below Inception V3's smallest).
        macs = {key: describe_graph(architecture(key), side, classes=1000).total_macs for key, side in sizes.items()}
        return Timings(tuple(times[XCEPTION]), tuple(times[INCEPTION_V3]), sizes, threads, inception.pretrained,
                       tuple(first), macs)

    def predictions(self, payload: Any, wait_s: float | None = 0.0) -> Predictions | None:
        """Both top-5 and Grad-CAM maps over the photo; None when Inception V3's weights are not
        ImageNet's (random weights do not predict) or Xception's labels are not ImageNet's."""
        inception = self.inception(wait_s)
        if not inception.pretrained:
            return None
        served, image, x, y = self._inputs(payload, inception)
        if tuple(served.labels) != inception.model.labels:
            return None
        prediction = served.predict(x, 5)
        features, probabilities = inception.model.forward(y[None])
        theirs = top_k(probabilities[0], inception.model.labels, 5)
        shown = display_copy(image)
        ours_cam = served.gradcam(prediction.features, served.labels.index(prediction.top[0][0]))
        their_cam = inception.model.gradcam(features[0], inception.model.labels.index(theirs[0][0]))
        return Predictions(list(prediction.top), list(theirs), overlay(shown, ours_cam, alpha=CAM_ALPHA),
                           overlay(shown, their_cam, alpha=CAM_ALPHA))

    # ---------------------------------------------------------------- the continuum

    def continuum(self, in_channels: Any, out_channels: Any, side: Any) -> Continuum:
        """Figures 1–4 for `in_channels` → `out_channels` at a `side`×`side` output."""
        c_in = check_int(in_channels, "Input channels", 1, CHANNELS_MAX)
        c_out = check_int(out_channels, "Output channels", 1, CHANNELS_MAX)
        s = check_int(side, "Output side", 1, SIDE_MAX)
        if len(segment_counts(c_out)) > 256:
            raise UserError(f"{c_out} channels split too many ways to draw; choose another output width.")
        return continuum(c_in, c_out, s, s)

    # ---------------------------------------------------------------- the API

    def compare_json(self, payload: Any = None, size: Any = 299, rounds: Any = ROUNDS_DEFAULT,
                     wait_s: float | None = 120.0) -> dict[str, Any]:
        """The `/compare` answer: both networks' totals and placement at `size` with the paper's
        figures; with a photo, both forwards timed on it and, when Inception V3 has its ImageNet
        weights, both top-5."""
        xception, inception = self.structure(size)
        networks = {}
        for network in (xception, inception):
            paper = network.paper
            networks[network.key] = {
                "title": network.title, **network.totals(), "placement": dict(network.placement),
                "paper": {"top1": paper.top1, "top5": paper.top5, "params": paper.params,
                          "steps_per_second": paper.steps_per_second,
                          "params_minus_learned": paper.params - network.description.learned_params}}
        answer: dict[str, Any] = {"input_size": xception.description.input_shape[0], "networks": networks,
                                  "paper_source": PAPER_CITATION, "timings": None, "predictions": None,
                                  "inception_v3_weights": None}
        if payload is None:
            return answer
        timings = self.timings(payload, rounds, wait_s)
        answer["timings"] = timings.to_dict()
        answer["inception_v3_weights"] = "imagenet" if timings.pretrained else "random"
        found = self.predictions(payload, wait_s)
        if found is not None:
            answer["predictions"] = {key: [{"label": label, "probability": round(float(p), 6)} for label, p in top]
                                     for key, top in ((XCEPTION, found.xception), (INCEPTION_V3, found.inception))}
        else:
            answer["predictions_withheld"] = str(self.why_no_predictions() or "labels differ")
        return answer
