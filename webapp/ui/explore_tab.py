"""The Explore tab: Xception's architecture at a glance, depthwise-separable convolutions made
concrete, live activations on the user's image, and the article's wiring against the paper's.

`build_explore_tab(store, service)` builds it inside the caller's `gr.Tab`. The work is
`webapp.services.explore.ExploreService`'s; figures are `webapp.ui.figures`', words
`webapp.ui.text`'s. Public API events: `/architecture` (no inputs → JSON) and `/activations`
(image, block → JSON).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import gradio as gr
import pandas as pd

from webapp.services import UserError
from webapp.services.explore import LOADED, N_MAX, REFERENCE, ExploreService, check_block, check_choice, check_int
from webapp.store import ModelStore
from webapp.ui import figures, text
from webapp.ui.events import shown
from xception.arch.spec import XCEPTION_SPEC
from xception.io.assets import example_images
from xception.runtime.introspection import ModelDescription, separable_cost, separable_layers, separable_totals

__all__ = ["build_explore_tab", "calculator_markdown"]

N_DEFAULT = 16
CALC_MAX = 100_000
BLOCK_CHOICES = [(f"{b.name} · {b.flow} flow · {b.kind}, {b.spec.out_channels} channels", b.name)
                 for b in XCEPTION_SPEC.blocks]
DEFAULT_BLOCK = "block4"
COST_KINDS = ("bar", "treemap")


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


@shown
def calculator_markdown(kernel: Any, cin: Any, cout: Any, side: Any = 1) -> str:
    """The calculator's answer; a bad input gets a message naming what is allowed."""
    values = [check_int(v, label, 1, CALC_MAX) for label, v in (
        ("kernel size", kernel), ("input channels", cin), ("output channels", cout), ("output side", side))]
    return text.calculator(separable_cost(*values[:3], values[3], values[3]))


# ------------------------------------------------------------------------------------------ the tab


def build_explore_tab(store: ModelStore, service: ExploreService) -> None:
    """Builds the Explore tab inside the caller's `gr.Tab` context (no Blocks of its own)."""
    examples = example_images(store.settings.assets_dir)
    figure_cache: dict[tuple, Any] = {}

    def figure(name: str, d: ModelDescription, **options: Any):
        """A figure of a description, made once (descriptions are cached by the service)."""
        key = (name, id(d), tuple(sorted(options.items())))
        if key not in figure_cache:
            make = {"block_view": figures.block_view_figure, "resolution": figures.resolution_figure,
                    "cost": figures.cost_figure}[name]
            figure_cache[key] = make(d, **options)
        return figure_cache[key]

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
    gr.Markdown(text.SEPARABLE_INTRO)
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
    gr.Markdown(text.ACTIVATIONS_INTRO)
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
    gr.Markdown(text.ARTICLE_INTRO + "\n" + text.difference_list())
    diff_view = gr.Plot(label="Where the article's wiring differs (hover the numbers)", elem_id="explore-diff-view")
    compare = gr.Button("Compare both wirings on this image", variant="primary")
    diff_plot = gr.Plot(label="Per-block difference", elem_id="explore-diff")
    with gr.Row():
        top_paper = gr.Label(label="Top 5 · paper wiring", num_top_classes=5)
        top_article = gr.Label(label="Top 5 · article wiring", num_top_classes=5)
    diff_md = gr.Markdown()

    # The Netron view (webapp/ui/netron_tab.py, elem_id "netron-view") is added by webapp/ui/layout.py right here,
    # after this function returns, inside the same Explore tab.

    # -------------------------------------------------------------- handlers
    @shown
    def fill_architecture(which_value: str, kind: str, layers: bool):
        kind, layers = check_choice(kind, "Cost chart", COST_KINDS), bool(layers)
        try:
            d = service.description(which_value)
        except UserError as exc:
            return (gr.update(value=f"Waiting: {exc}"),) + (gr.skip(),) * 7
        summary = text.architecture_summary(d, service.model() if which_value == LOADED else None)
        return (summary, figure("block_view", d), figure("resolution", d),
                figure("cost", d, kind=kind), _block_table(d, layers), _separable_table(d),
                text.separable_summary(d, separable_totals(d)), figure("block_view", d, differences=True))

    arch_outputs = [arch_status, block_view, ladder, cost, table, sep_table, sep_summary, diff_view]

    @shown
    def first_fill(which_value: str, kind: str, layers: bool):
        """Timer tick until the model is ready: then fill everything once and stop."""
        if not store.is_ready():
            status = text.status_line(store.statuses(), False)
            return (gr.update(value=f"Waiting for the model… {status}"),) + (gr.skip(),) * 8
        service.warm_up_in_background()
        return (*fill_architecture(which_value, kind, layers), gr.Timer(active=False))

    timer = gr.Timer(1.0)
    timer.tick(first_fill, [which, cost_kind, show_layers], arch_outputs + [timer], api_visibility="private")
    for control in (which, cost_kind, show_layers):
        control.input(fill_architecture, [which, cost_kind, show_layers], arch_outputs, api_visibility="private")
    @shown
    def architecture() -> dict[str, Any]:
        return service.architecture()

    arch_button.click(architecture, None, arch_json, api_name="architecture",
                      api_description="Xception's blocks for the loaded weights: totals and, per block, name, flow, "
                                      "output shape, parameters and multiply-accumulates.")

    for number in (calc_k, calc_in, calc_out, calc_side):
        number.change(calculator_markdown, [calc_k, calc_in, calc_out, calc_side], calc_out_md,
                      api_visibility="private", queue=False)

    view_outputs = [gallery, stats_md, hist, channel, full, cache_md, record_key]

    def render(record, hit: bool, block_name: str, n: int, overlay_on: bool, started: float,
               channel_index: int | None = None):
        tiles = service.tiles(record, block_name, n, bool(overlay_on))
        channels = record.shape(block_name)[-1]
        c = tiles[0][1] if channel_index is None else min(max(int(channel_index), 0), channels - 1)
        s = record.stats[block_name]
        histogram = figures.histogram_figure(s.histogram_counts, s.histogram_edges, title=f"{block_name} activations",
                                             zero_fraction=s.zero_fraction, after_relu=s.after_relu)
        gallery_items = [(tile, f"#{channel_index} · {mean:.2f}") for tile, channel_index, mean in tiles]
        big = service.full(record, block_name, c, bool(overlay_on))
        ms = (time.perf_counter() - started) * 1000
        return (gallery_items, text.block_stats(record, block_name), histogram,
                gr.update(maximum=channels - 1, value=c, label=f"Channel (0–{channels - 1}) at full size"),
                big, text.cache_status(record, hit, service.explorer, ms), record.key)

    @shown
    def on_image(payload, block_name, n, overlay_on):
        started = time.perf_counter()
        if payload is None:
            return [], "", None, gr.update(), None, "", None
        record, hit = service.activations(payload)
        return render(record, hit, block_name, n, overlay_on, started)

    @shown
    def on_view(key, payload, block_name, n, overlay_on):
        started = time.perf_counter()
        if key is None and payload is None:
            return (gr.skip(),) * 7
        record, hit = service.record(key, payload)
        return render(record, hit, block_name, n, overlay_on, started)

    @shown
    def on_channel(key, payload, block_name, channel_index, overlay_on):
        if key is None and payload is None:
            return gr.skip()
        record, _ = service.record(key, payload)
        return service.full(record, block_name, channel_index, bool(overlay_on))

    @shown
    def on_select(key, payload, block_name, n, evt: gr.SelectData):
        if key is None and payload is None:
            return gr.skip()
        record, _ = service.record(key, payload)
        top = record.top_channels(check_block(block_name), check_int(n, "Number of channels", 1, N_MAX))
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
    @shown
    def activations(image, block: str) -> dict[str, Any]:
        return service.activations_json(image, block)

    act_button.click(activations, [image_in, block], act_json, preprocess=False, api_name="activations",
                     concurrency_id="explore-forward", concurrency_limit=2,
                     api_description="One block's activations for an image: its shape and the mean activation of "
                                     "each channel (one forward pass per image, cached).")

    @shown
    def on_compare(key, payload):
        if payload is None:
            raise gr.Error(text.NO_IMAGE)
        result = service.compare(key, payload)
        last = result.differences[-1]
        resized = [d.block for d in result.differences if d.resized]
        return (figures.difference_figure([dataclasses.asdict(d) for d in result.differences]),
                dict(result.paper_top), dict(result.article_top),
                text.comparison(result.paper_top, result.article_top, last.relative_l2, last.cosine, resized))

    compare.click(on_compare, [record_key, image_in], [diff_plot, top_paper, top_article, diff_md], preprocess=False,
                  api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
