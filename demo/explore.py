"""The Explore tab: Xception's architecture at a glance, depthwise-separable convolutions made
concrete, live activations on the user's image, and the article's wiring against the paper's.

`build_explore_tab(store)` builds it inside the caller's `gr.Tab`. Model math lives in
`xception_core` (introspection, activations); figures in `demo.figures`. Public API events:
`/architecture` (no inputs → JSON) and `/activations` (image, block → JSON).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from demo import figures
from demo.classify import get_classifier
from demo.images import payload_to_image
from xception_core.activations import ActivationExplorer, ImageActivations, wiring_difference_blocks
from xception_core.assets import example_images
from xception_core.inference import Classifier
from xception_core.introspection import ModelDescription, describe, separable_cost, separable_layers
from xception_core.serving import ModelStore
from xception_core.spec import DIFFERENCE_NOTES, XCEPTION_SPEC
from xception_core.visualize import colorize, normalize, upsample

logger = logging.getLogger(__name__)

__all__ = ["ExploreBackend", "build_explore_tab"]

THUMB = 128  # gallery tile side (px): big enough to read, cheap to render and send
FULL_MIN = 384  # smallest side of the full-size channel view
N_DEFAULT, N_MAX = 16, 64
OVERLAY_ALPHA = 0.55
LOADED, REFERENCE = "loaded", "reference"

BLOCK_CHOICES = [(f"{b.name} · {b.flow} flow · {b.kind}, {b.spec.out_channels} channels", b.name)
                 for b in XCEPTION_SPEC.blocks]
DEFAULT_BLOCK = "block4"

SEPARABLE_INTRO = """
A standard k×k convolution mixes space and channels at once: **k·k·C_in·C_out** weights.
Xception's separable convolution splits that into a **depthwise** k×k filter per input channel
(**k·k·C_in** weights) and a **pointwise** 1×1 convolution that mixes channels
(**C_in·C_out** weights). The article's example, 3×3 from 3 to 64 channels: 3·3·3·64 = **1,728**
weights for the standard conv against 3·3·3 + 3·64 = 27 + 192 = **219**, about 8× fewer.
Below: every separable conv of the loaded model, and a calculator for any other.
"""

ACTIVATIONS_INTRO = """
Pick an example or upload a photo: **one forward pass** computes the output of all 14 blocks at
once and caches it (keyed by the image's pixels and the weights). Switching block, grid size,
overlay or channel then only reads the cache — the status line says when it was a cache hit.
Tiles are the block's most active channels (highest mean activation), each stretched over the
image as the model saw it; click one to see it full size.
"""

ARTICLE_INTRO = """
The article builds Xception with the same layers and the same 22,910,480 parameters, but wires
four things differently from the paper and Keras — so the official weights, which fit the paper's
wiring, do not give the same outputs in it. Both wirings below run the **same weights** on the
**same image**.
"""


def _difference_list() -> str:
    where = wiring_difference_blocks()
    return "\n".join(f"- **{figures.DIFFERENCE_LABELS[k]}** ({', '.join(where[k])}). {DIFFERENCE_NOTES[k]}"
                     for k in figures.DIFFERENCE_LABELS)


# ------------------------------------------------------------------------------------------ backend


class ExploreBackend:
    """What the tab's handlers share: descriptions and figures built once per model, and the
    activation cache. Independent of Gradio events, so it can be tested and timed directly."""

    def __init__(self, store: ModelStore, explorer: ActivationExplorer | None = None):
        self.store = store
        self.explorer = explorer or ActivationExplorer(max_entries=8)
        self._lock = threading.Lock()
        self._descriptions: dict[Any, ModelDescription] = {}
        self._figures: dict[tuple, Any] = {}
        self._warming = False

    # ---------------------------------------------------------------- architecture

    def classifier(self) -> Classifier:
        return get_classifier(self.store, None)

    def description(self, which: str = LOADED, variant: str = "paper") -> ModelDescription:
        """`describe()` of the loaded model (either wiring), or of the reference 299×299 ImageNet
        Xception (built without weights once, described, and dropped)."""
        if which == REFERENCE:
            key: Any = REFERENCE
        else:
            classifier = self.classifier()
            model = classifier.model if variant == classifier.info.variant else self.store.model_variant(None, variant)
            key = (self.store.default_key, variant, id(model))
        with self._lock:
            if key not in self._descriptions:
                if which == REFERENCE:
                    from xception_core.model import build_architecture

                    self._descriptions[key] = describe(build_architecture(input_shape=(299, 299, 3)))
                else:
                    self._descriptions[key] = describe(model)
            return self._descriptions[key]

    def figure(self, name: str, description: ModelDescription, **options: Any):
        """A cached figure of a description ('block_view', 'resolution', 'cost')."""
        key = (name, id(description), tuple(sorted(options.items())))
        with self._lock:
            if key not in self._figures:
                make = {"block_view": figures.block_view_figure, "resolution": figures.resolution_figure,
                        "cost": figures.cost_figure}[name]
                if name == "block_view" and options.get("differences"):
                    fig = make(description, differences=wiring_difference_blocks(), notes=DIFFERENCE_NOTES)
                else:
                    fig = make(description, **options)
                self._figures[key] = fig
            return self._figures[key]

    def architecture_json(self) -> dict[str, Any]:
        """The `/architecture` answer for the loaded weights (paper wiring)."""
        d = self.description(LOADED)
        out = d.to_dict()
        blocks = [{k: b[k] for k in ("name", "flow", "kind", "output_shape", "params", "trainable_params",
                                     "non_trainable_params", "macs")} for b in out["blocks"]]
        return {"weights": self.store.default_key, "model": d.name, "variant": d.variant,
                "input_shape": out["input_shape"], "total_params": d.total_params,
                "trainable_params": d.trainable_params, "non_trainable_params": d.non_trainable_params,
                "total_macs": d.total_macs, "blocks": blocks}

    def warm_up_in_background(self) -> None:
        """Once the weights are loaded: trace and run the all-blocks forward once in a daemon thread,
        so the first image shown takes ~0.1 s instead of ~1.5 s."""
        with self._lock:
            if self._warming:
                return
            self._warming = True

        def run() -> None:
            try:
                self.explorer.warm_up(self.classifier().model)
            except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first user time
                logger.warning("activation warm-up failed: %s", exc)

        threading.Thread(target=run, name="explore-warm-up", daemon=True).start()

    # ---------------------------------------------------------------- activations

    def activations(self, payload: Any, variant: str = "paper") -> tuple[ImageActivations, bool, Image.Image]:
        """Decode, preprocess and run (or hit the cache). Returns (record, cache_hit, image)."""
        classifier = self.classifier()
        image = payload_to_image(payload)
        x = classifier.preprocess(image)
        model = classifier.model if variant == classifier.info.variant else self.store.model_variant(None, variant)
        record, hit = self.explorer.compute(model, x, weights_key=self.store.default_key or "default")
        return record, hit, image

    def record(self, key: str | None, payload: Any, variant: str = "paper") -> tuple[ImageActivations, bool]:
        """The session's cached record, else recomputed from the image (evicted, or a new server)."""
        if key and (record := self.explorer.lookup(key)) is not None and record.variant == variant:
            return record, True
        if payload is None:
            raise gr.Error("No image yet: pick an example or upload a photo above.")
        record, hit, _ = self.activations(payload, variant)
        return record, hit

    def activations_json(self, payload: Any, block: str) -> dict[str, Any]:
        """The `/activations` answer: the block's shape and per-channel mean activations."""
        block = (block or "").strip()
        names = [b.name for b in XCEPTION_SPEC.blocks]
        if block not in names:
            raise gr.Error(f"Unknown block {block!r}; expected one of {', '.join(names)}.")
        start = time.perf_counter()
        record, hit, _ = self.activations(payload)
        stats = record.stats[block]
        return {
            "block": block, "shape": list(record.shape(block)),
            "channel_means": [round(float(v), 6) for v in record.channel_means[block]],
            "mean": round(stats.mean, 6), "zero_fraction": round(stats.zero_fraction, 6),
            "after_relu": stats.after_relu, "cache_hit": hit, "weights": record.weights_key,
            "variant": record.variant, "input_size": int(record.image.shape[0]),
            "forward_ms": None if hit else round(record.forward_seconds * 1000, 1),
            "server_ms": round((time.perf_counter() - start) * 1000, 1),
        }


# ------------------------------------------------------------------------------------------ views


def _base(record: ImageActivations, side: int) -> Image.Image:
    """The input as the model saw it, at `side` pixels."""
    return Image.fromarray(record.image).resize((side, side), Image.Resampling.BILINEAR)


# `visualize.colorize`'s ramp sampled at 256 levels: a table lookup colours a 128×128 tile in ~0.1 ms
# where interpolating per pixel takes ~1 ms, and a view draws up to 65 tiles.
_LUT = colorize(np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :])[0]


def _tile(record: ImageActivations, block: str, channel: int, side: int, base: Image.Image | None) -> Image.Image:
    """One channel's map, normalised, stretched to `side` pixels (bicubic) and coloured, blended over
    `base` when given: `visualize.overlay` / `heatmap_image` with a lookup table for speed."""
    values = upsample(normalize(record.channel_map(block, channel)), (side, side))
    heat = Image.fromarray(_LUT[np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)], "RGB")
    return Image.blend(base, heat, OVERLAY_ALPHA) if base is not None else heat


def _gallery(record: ImageActivations, block: str, n: int, with_image: bool) -> list[tuple[Image.Image, str]]:
    base = _base(record, THUMB) if with_image else None
    return [(_tile(record, block, c, THUMB, base), f"#{c} · {m:.2f}") for c, m in record.top_channels(block, int(n))]


def _full(record: ImageActivations, block: str, channel: int, with_image: bool) -> Image.Image:
    side = max(FULL_MIN, record.image.shape[0])
    return _tile(record, block, channel, side, _base(record, side) if with_image else None)


def _stats_markdown(record: ImageActivations, block: str) -> str:
    s = record.stats[block]
    return (f"**{block}** output {figures.shape_text(s.shape)} ({s.output_kind}) · mean **{s.mean:.4g}** · "
            f"std {s.std:.4g} · min {s.min:.4g} · max {s.max:.4g}  \n"
            f"Zeros: {s.zero_note}")


def _cache_markdown(record: ImageActivations, hit: bool, explorer: ActivationExplorer, started: float) -> str:
    ms = (time.perf_counter() - started) * 1000
    if hit:
        head = f"**Cache hit** — no forward pass; this view took {ms:.0f} ms on the server."
    else:
        head = (f"**One forward pass** ({record.forward_seconds * 1000:.0f} ms) computed all "
                f"{len(record.blocks)} blocks; this view took {ms:.0f} ms.")
    return (f"{head}  \nForward passes so far: {explorer.forward_calls} · cached images: {len(explorer)} "
            f"({explorer.nbytes / 2**20:.1f} MB, float16) · weights `{record.weights_key}`, "
            f"{record.variant} wiring, {record.image.shape[0]}×{record.image.shape[1]} input")


def _n(value: int) -> str:
    return f"{value:,}"


def _block_table(d: ModelDescription, layers: bool) -> pd.DataFrame:
    if layers:
        rows = [[layer.block, layer.name, layer.class_name, figures.shape_text(layer.input_shape),
                 figures.shape_text(layer.output_shape), _n(layer.params), _n(layer.trainable_params),
                 _n(layer.non_trainable_params), _n(layer.macs)] for b in d.blocks for layer in b.layers]
        return pd.DataFrame(rows, columns=["block", "layer", "type", "input shape", "output shape", "params",
                                           "trainable", "non-trainable", "multiply-accumulates"])
    rows = [[b.name, b.flow, b.kind, figures.shape_text(b.output_shape), _n(b.params), _n(b.trainable_params),
             _n(b.non_trainable_params), _n(b.macs)] for b in d.blocks]
    rows.append(["total", "", "", "", _n(d.total_params), _n(d.trainable_params), _n(d.non_trainable_params),
                 _n(d.total_macs)])
    return pd.DataFrame(rows, columns=["block", "flow", "kind", "output shape", "params", "trainable",
                                       "non-trainable", "multiply-accumulates"])


def _separable_table(d: ModelDescription) -> pd.DataFrame:
    rows = []
    for name, c in separable_layers(d):
        rows.append([name, f"{c.kernel_size}×{c.kernel_size}", f"{c.in_channels} → {c.out_channels}",
                     f"{c.height}×{c.width}", _n(c.depthwise_params), _n(c.pointwise_params),
                     _n(c.separable_params), _n(c.standard_params), f"{c.ratio:.1f}×", _n(c.depthwise_macs),
                     _n(c.pointwise_macs), _n(c.standard_macs), f"{c.standard_macs / c.separable_macs:.1f}×"])
    return pd.DataFrame(rows, columns=["layer", "kernel", "channels", "output", "depthwise params",
                                       "pointwise params", "separable params", "standard conv params",
                                       "× fewer params", "depthwise MACs", "pointwise MACs", "standard conv MACs",
                                       "× fewer MACs"])


def _separable_summary(d: ModelDescription) -> str:
    costs = [c for _, c in separable_layers(d)]
    sep = sum(c.separable_params for c in costs)
    std = sum(c.standard_params for c in costs)
    sep_macs = sum(c.separable_macs for c in costs)
    std_macs = sum(c.standard_macs for c in costs)
    return (f"**{len(costs)} separable convs** hold {sep:,} weights and cost {figures.fmt_macs(sep_macs)} "
            f"multiply-accumulates at {figures.shape_text(d.input_shape[:2])}. Standard convs with the same "
            f"channels would need {std:,} weights (**{std / sep:.1f}×**) and {figures.fmt_macs(std_macs)} "
            f"multiply-accumulates (**{std_macs / sep_macs:.1f}×**).")


def calculator_markdown(kernel: Any, cin: Any, cout: Any, side: Any = 1) -> str:
    """The calculator's answer; bad inputs become a `gr.Error` naming what is allowed."""
    values = []
    fields = (("kernel size", kernel), ("input channels", cin), ("output channels", cout), ("output side", side))
    for label, v in fields:
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(v, bool) or not number.is_integer() or not 1 <= number <= 100_000:
            raise gr.Error(f"{label} must be a whole number from 1 to 100,000, got {v!r}.")
        values.append(int(number))
    k, ci, co, s = values
    c = separable_cost(k, ci, co, s, s)
    where = "per output position" if s == 1 else f"for a {s}×{s} output"
    return (f"**Standard {k}×{k} conv, {ci} → {co}:** {k}·{k}·{ci}·{co} = **{c.standard_params:,}** weights  \n"
            f"**Separable:** depthwise {k}·{k}·{ci} = {c.depthwise_params:,} + pointwise {ci}·{co} = "
            f"{c.pointwise_params:,} → **{c.separable_params:,}** weights  \n"
            f"**{c.ratio:.1f}× fewer** weights. Multiply-accumulates {where}: {c.standard_macs:,} vs "
            f"{c.separable_macs:,} (depthwise {c.depthwise_macs:,} + pointwise {c.pointwise_macs:,}).")


# ------------------------------------------------------------------------------------------ the tab


def build_explore_tab(store: ModelStore, backend: ExploreBackend | None = None) -> ExploreBackend:
    """Builds the Explore tab inside the caller's `gr.Tab` context (no Blocks of its own).

    Returns:
        The backend (descriptions, figures and the activation cache), for tests and benchmarks.
    """
    backend = backend or ExploreBackend(store)
    examples = example_images()

    # -------------------------------------------------------------- architecture
    gr.Markdown("## Architecture at a glance")
    arch_status = gr.Markdown("Loading the model description…", elem_id="explore-arch-status")
    with gr.Row():
        which = gr.Radio([("Loaded weights (the model that runs here)", LOADED),
                          ("Reference Xception: 299×299, ImageNet head", REFERENCE)], value=LOADED,
                         label="Describe", scale=3)
        cost_kind = gr.Radio([("bars", "bar"), ("treemap", "treemap")], value="bar", label="Cost chart", scale=1)
    block_view = gr.Plot(label="Block view (hover a block)", elem_id="explore-block-view")
    with gr.Row():
        ladder = gr.Plot(label="Resolution and channels", elem_id="explore-ladder")
        cost = gr.Plot(label="Parameters and cost", elem_id="explore-cost")
    show_layers = gr.Checkbox(label="Show every layer", value=False)
    table = gr.Dataframe(label="Blocks", interactive=False, max_height=420, wrap=True, elem_id="explore-table")
    with gr.Accordion("Architecture as JSON (API: /architecture)", open=False):
        arch_button = gr.Button("Show JSON", size="sm")
        arch_json = gr.JSON(label="architecture")

    # -------------------------------------------------------------- separable convolutions
    gr.Markdown("## Depthwise-separable convolution, made concrete")
    gr.Markdown(SEPARABLE_INTRO)
    sep_summary = gr.Markdown()
    sep_table = gr.Dataframe(label="Every separable conv vs the standard conv it replaces", interactive=False,
                             max_height=360, elem_id="explore-separable")
    with gr.Row(equal_height=True):
        calc_k = gr.Number(3, label="kernel size k", precision=0, minimum=1, scale=1)
        calc_in = gr.Number(3, label="input channels", precision=0, minimum=1, scale=1)
        calc_out = gr.Number(64, label="output channels", precision=0, minimum=1, scale=1)
        calc_side = gr.Number(1, label="output side (1 = per position)", precision=0, minimum=1, scale=1)
    calc_out_md = gr.Markdown(calculator_markdown(3, 3, 64, 1), elem_id="explore-calculator")

    # -------------------------------------------------------------- live activations
    gr.Markdown("## Live activations on your image")
    gr.Markdown(ACTIVATIONS_INTRO)
    record_key = gr.State(None)
    with gr.Row(equal_height=False, elem_id="explore-activations"):
        with gr.Column(scale=4):
            image_in = gr.Image(label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], height=300,
                                elem_id="explore-image")
            gr.Examples(examples=[[str(e.path)] for e in examples], inputs=[image_in],
                        example_labels=[e.title for e in examples], label="Examples")
            block = gr.Dropdown(BLOCK_CHOICES, value=DEFAULT_BLOCK, label="Block", elem_id="explore-block")
            with gr.Row():
                n_top = gr.Slider(1, N_MAX, value=N_DEFAULT, step=1, label="Most active channels shown")
                with_image = gr.Checkbox(value=True, label="Overlay on the image")
            cache_md = gr.Markdown(elem_id="explore-cache-status")
        with gr.Column(scale=7):
            gallery = gr.Gallery(label="Most active channels (click one for full size)", columns=8,
                                 object_fit="contain", allow_preview=False, elem_id="explore-gallery")
            stats_md = gr.Markdown(elem_id="explore-stats")
            with gr.Row(equal_height=False):
                hist = gr.Plot(label="Histogram", elem_id="explore-histogram")
                with gr.Column():
                    channel = gr.Slider(0, 727, value=0, step=1, label="Channel (full size)")
                    full = gr.Image(label="Channel at full size", type="pil", interactive=False, height=320,
                                    elem_id="explore-full")
    with gr.Accordion("Activations as JSON (API: /activations)", open=False):
        act_button = gr.Button("Show JSON for this image and block", size="sm")
        act_json = gr.JSON(label="activations")

    # -------------------------------------------------------------- article vs paper
    gr.Markdown("## Article vs paper: four wiring differences")
    gr.Markdown(ARTICLE_INTRO + "\n" + _difference_list())
    diff_view = gr.Plot(label="Where the article's wiring differs (hover the numbers)", elem_id="explore-diff-view")
    compare = gr.Button("Compare both wirings on this image", variant="primary")
    diff_plot = gr.Plot(label="Per-block difference", elem_id="explore-diff")
    with gr.Row():
        top_paper = gr.Label(label="Top 5 · paper wiring", num_top_classes=5)
        top_article = gr.Label(label="Top 5 · article wiring", num_top_classes=5)
    diff_md = gr.Markdown()

    # The Netron view (demo/netron_view.py, elem_id "netron-view") is added by demo/ui.py right here,
    # after this function returns, inside the same Explore tab.

    # -------------------------------------------------------------- handlers
    def fill_architecture(which_value: str, kind: str, layers: bool):
        try:
            d = backend.description(which_value)
        except gr.Error as exc:
            return (gr.update(value=f"Waiting: {exc.message}"),) + (gr.skip(),) * 7
        if which_value == LOADED:
            c = backend.classifier()
            note = f"Weights **{c.title}** ({len(c.labels)} classes), input {c.input_size}×{c.input_size}. "
        else:
            note = "Reference Keras Xception (random weights; only the architecture is shown). "
        summary = (f"{note}**{d.total_params:,}** parameters ({d.trainable_params:,} trainable, "
                   f"{d.non_trainable_params:,} non-trainable BatchNorm statistics) · "
                   f"**{figures.fmt_macs(d.total_macs)}** multiply-accumulates per "
                   f"{figures.shape_text(d.input_shape[:2])} image.")
        return (summary, backend.figure("block_view", d), backend.figure("resolution", d),
                backend.figure("cost", d, kind=kind), _block_table(d, layers), _separable_table(d),
                _separable_summary(d), backend.figure("block_view", d, differences=True))

    arch_outputs = [arch_status, block_view, ladder, cost, table, sep_table, sep_summary, diff_view]

    def first_fill(which_value: str, kind: str, layers: bool):
        """Timer tick until the model is ready: then fill everything once and stop."""
        if not store.is_ready():
            return (gr.update(value=f"Waiting for the model… {store.status()}"),) + (gr.skip(),) * 8
        backend.warm_up_in_background()
        return (*fill_architecture(which_value, kind, layers), gr.Timer(active=False))

    timer = gr.Timer(1.0)
    timer.tick(first_fill, [which, cost_kind, show_layers], arch_outputs + [timer], api_visibility="private")
    for control in (which, cost_kind, show_layers):
        control.input(fill_architecture, [which, cost_kind, show_layers], arch_outputs, api_visibility="private")
    arch_button.click(backend.architecture_json, None, arch_json, api_name="architecture",
                      api_description="Xception's blocks for the loaded weights: totals and, per block, name, flow, "
                                      "output shape, parameters and multiply-accumulates.")

    for number in (calc_k, calc_in, calc_out, calc_side):
        number.change(calculator_markdown, [calc_k, calc_in, calc_out, calc_side], calc_out_md,
                      api_visibility="private", queue=False)

    view_outputs = [gallery, stats_md, hist, channel, full, cache_md, record_key]

    def render(record: ImageActivations, hit: bool, block_name: str, n: int, overlay_on: bool, started: float,
               channel_index: int | None = None):
        top = record.top_channels(block_name, int(n))
        c = top[0][0] if channel_index is None else int(channel_index)
        channels = record.shape(block_name)[-1]
        c = min(max(c, 0), channels - 1)
        s = record.stats[block_name]
        histogram = figures.histogram_figure(s.histogram_counts, s.histogram_edges, title=f"{block_name} activations",
                                             zero_fraction=s.zero_fraction, after_relu=s.after_relu)
        tiles = _gallery(record, block_name, n, overlay_on)
        big = _full(record, block_name, c, overlay_on)
        return (tiles, _stats_markdown(record, block_name), histogram,
                gr.update(maximum=channels - 1, value=c, label=f"Channel (0–{channels - 1}) at full size"),
                big, _cache_markdown(record, hit, backend.explorer, started), record.key)

    def on_image(payload, block_name, n, overlay_on):
        started = time.perf_counter()
        if payload is None:
            return [], "", None, gr.update(), None, "", None
        record, hit, _ = backend.activations(payload)
        return render(record, hit, block_name, n, overlay_on, started)

    def on_view(key, payload, block_name, n, overlay_on):
        started = time.perf_counter()
        if key is None and payload is None:
            return (gr.skip(),) * 7
        record, hit = backend.record(key, payload)
        return render(record, hit, block_name, n, overlay_on, started)

    def on_channel(key, payload, block_name, channel_index, overlay_on):
        if key is None and payload is None:
            return gr.skip()
        record, _ = backend.record(key, payload)
        try:
            return _full(record, block_name, int(channel_index), overlay_on)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None

    def on_select(key, payload, block_name, n, evt: gr.SelectData):
        if key is None and payload is None:
            return gr.skip()
        record, _ = backend.record(key, payload)
        top = record.top_channels(block_name, int(n))
        if evt.index is None or not 0 <= int(evt.index) < len(top):
            return gr.skip()
        return gr.update(value=top[int(evt.index)][0])

    image_in.change(on_image, [image_in, block, n_top, with_image], view_outputs, preprocess=False,
                    api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    for control in (block, n_top, with_image):
        control.input(on_view, [record_key, image_in, block, n_top, with_image], view_outputs, preprocess=False,
                      api_visibility="private", trigger_mode="always_last")
    channel.input(on_channel, [record_key, image_in, block, channel, with_image], full, preprocess=False,
                  api_visibility="private", trigger_mode="always_last")
    gallery.select(on_select, [record_key, image_in, block, n_top], channel, preprocess=False,
                   api_visibility="private").then(
        on_channel, [record_key, image_in, block, channel, with_image], full, preprocess=False,
        api_visibility="private")
    act_button.click(backend.activations_json, [image_in, block], act_json, preprocess=False, api_name="activations",
                     concurrency_id="explore-forward", concurrency_limit=2,
                     api_description="One block's activations for an image: its shape and the mean activation of "
                                     "each channel (one forward pass per image, cached).")

    def on_compare(key, payload):
        if payload is None:
            raise gr.Error("No image yet: pick an example or upload a photo above.")
        paper, _ = backend.record(key, payload, "paper")
        article, _ = backend.record(None, payload, "article")
        differences = backend.explorer.compare(paper, article)
        labels = backend.classifier().labels
        rows = [dataclasses.asdict(d) for d in differences]
        p5, a5 = paper.top_k(labels, 5), article.top_k(labels, 5)
        same_top = p5[0][0] == a5[0][0]
        resized = [d.block for d in differences if d.resized]
        text = (f"Top class: paper **{p5[0][0]}** ({p5[0][1]:.1%}), article **{a5[0][0]}** ({a5[0][1]:.1%})"
                f"{' — the same class' if same_top else ' — a different class'}. "
                f"Output difference at block14: {differences[-1].relative_l2:.2f} (relative L2), cosine "
                f"{differences[-1].cosine:.2f}."
                + (f"  \nSpatial sizes differ in {', '.join(resized)} (the article's 'same'-padded stem): the "
                   "article's maps were resized to the paper's grid before comparing." if resized else ""))
        return (figures.difference_figure(rows), dict(p5), dict(a5), text)

    compare.click(on_compare, [record_key, image_in], [diff_plot, top_paper, top_article, diff_md], preprocess=False,
                  api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    return backend
