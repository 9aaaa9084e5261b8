"""The Explore tab as a lesson in sub-tabs: start here, Xception at a glance, depthwise-separable
convolutions, live activations on the visitor's photo, the article's wiring against the
paper's, and the graph in Netron.

`build_explore_tab(...)` builds it inside the caller's `gr.Tab`. The work is
`demo.services.explore.ExploreService`'s; figures are `demo.ui.figures`', words
`demo.ui.text`'s. Public API events: `/architecture` (which → JSON) and `/activations`
(image, block, top_n → JSON and channel maps).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from demo.services import UserError
from demo.services.examples import ExampleService
from demo.services.explore import LOADED, N_MAX, REFERENCE, ExploreService, check_block, check_choice, check_int
from demo.store import ModelStore
from demo.ui import figures, text
from demo.ui.classify_tab import EXAMPLE_COLUMNS, example_items
from demo.ui.events import shown
from xception_core.arch.spec import XCEPTION_SPEC
from xception_core.runtime.introspection import ModelDescription, separable_cost, separable_layers, separable_totals

__all__ = ["ExploreTab", "build_explore_tab", "calculator_markdown"]

N_DEFAULT = 16
GALLERY_COLUMNS = 4  # 16 default tiles in four full rows; wide enough to read on a phone too
CALC_MAX = 100_000
BLOCK_CHOICES = [(f"{b.name} · {b.flow} flow · {b.kind}, {b.spec.out_channels} channels", b.name)
                 for b in XCEPTION_SPEC.blocks]
DEFAULT_BLOCK = "block4"
COST_KINDS = ("bar", "treemap")
SUBTABS = ("start", "glance", "separable", "activations", "article", "graph")


@dataclass
class ExploreTab:
    """What the layout wires to the Classify tab: the image, and which Classify image it took last."""

    image: gr.Image
    shared: gr.State
    take_image: Callable


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


CALC_FIELDS = ("kernel size k", "input channels", "output channels", "output side")


def calculator_markdown(kernel: Any, cin: Any, cout: Any, side: Any = 1) -> str:
    """The calculator's answer, or one message per bad value (whole numbers from 1 to CALC_MAX)."""
    values, problems = [], []
    for label, v in zip(CALC_FIELDS, (kernel, cin, cout, side)):
        try:
            values.append(check_int(v, label, 1, CALC_MAX))
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        return text.calculator_problems(problems)
    return text.calculator(separable_cost(*values[:3], values[3], values[3]))


def _next_button(tabs: gr.Tabs, to: str, label: str) -> None:
    gr.Button(f"Next: {label} →", size="sm", elem_classes=["explore-next"]).click(
        lambda: gr.Tabs(selected=to), None, tabs, api_visibility="private", queue=False)


# ------------------------------------------------------------------------------------------ the tab


def build_explore_tab(store: ModelStore, service: ExploreService, examples: ExampleService, client: gr.JSON,
                      graph: Callable | None = None) -> ExploreTab:
    """Builds the Explore tab inside the caller's `gr.Tab` context (no Blocks of its own).

    Args:
        client: The browser's report ({dark, width}); figures follow its theme and width.
        graph: Builds the Netron view inside the Graph sub-tab; returns (show, variant, frame),
            and `show` runs when the sub-tab opens.
    """
    figure_cache: dict[tuple, Any] = {}

    def figure(name: str, d: ModelDescription, theme: figures.Theme, **options: Any):
        """A figure of a description, made once per theme (descriptions are cached by the service)."""
        key = (name, id(d), theme, tuple(sorted(options.items())))
        if key not in figure_cache:
            make = {"block_view": figures.block_view_figure, "resolution": figures.resolution_figure,
                    "cost": figures.cost_figure}[name]
            figure_cache[key] = make(d, theme=theme, **options)
        return figure_cache[key]

    with gr.Tabs(elem_id="explore-tabs") as tabs:
        # ---------------------------------------------------------- start here
        with gr.Tab("Start here", id="start", elem_id="explore-start"):
            gr.Markdown(text.START_HERE)
            _next_button(tabs, "glance", "Xception at a glance")

        # ---------------------------------------------------------- architecture
        with gr.Tab("At a glance", id="glance", elem_id="explore-glance"):
            gr.Markdown(text.GLANCE_INTRO)
            arch_status = gr.Markdown("Loading the model description…", elem_id="explore-arch-status")
            with gr.Row():
                which = gr.Radio([("The model that runs here", LOADED),
                                  ("Reference Xception: 299×299, ImageNet head", REFERENCE)], value=LOADED,
                                 label="Describe", scale=3)
                cost_kind = gr.Radio([("bars", "bar"), ("treemap", "treemap")], value="bar", label="Cost chart",
                                     scale=1)
            block_view = gr.Plot(label="Block view (hover a block)", elem_id="explore-block-view")
            with gr.Row():
                ladder = gr.Plot(label="Resolution and channels", elem_id="explore-ladder")
                cost = gr.Plot(label="Parameters and cost", elem_id="explore-cost")
            show_layers = gr.Checkbox(label="Show every layer", value=False)
            table = gr.Dataframe(label="Blocks", interactive=False, max_height=420, wrap=True,
                                 elem_id="explore-table")
            with gr.Accordion("Architecture as JSON (API: /architecture)", open=False):
                arch_button = gr.Button("Show JSON", size="sm")
                arch_json = gr.JSON(label="architecture")
            _next_button(tabs, "separable", "separable convolutions")

        # ---------------------------------------------------------- separable convolutions
        with gr.Tab("Separable convolutions", id="separable", elem_id="explore-separable-tab"):
            gr.Markdown(text.SEPARABLE_INTRO)
            sep_summary = gr.Markdown()
            with gr.Row(equal_height=True):
                calc_k = gr.Number(3, label="kernel size k", precision=None, step=1, scale=1, elem_id="calc-k")
                calc_in = gr.Number(3, label="input channels", precision=None, step=1, scale=1, elem_id="calc-in")
                calc_out = gr.Number(64, label="output channels", precision=None, step=1, scale=1,
                                     elem_id="calc-out")
                calc_side = gr.Number(1, label="output side (1 = per position)", precision=None, step=1, scale=1,
                                      elem_id="calc-side")
            calc_out_md = gr.Markdown(calculator_markdown(3, 3, 64, 1), elem_id="explore-calculator")
            sep_table = gr.Dataframe(label="Every separable conv of the model vs the standard conv it replaces",
                                     interactive=False, max_height=360, elem_id="explore-separable")
            _next_button(tabs, "activations", "activations on your photo")

        # ---------------------------------------------------------- live activations
        with gr.Tab("Activations", id="activations", elem_id="explore-activations-tab"):
            gr.Markdown(text.ACTIVATIONS_INTRO)
            record_key = gr.State(None)
            with gr.Row(equal_height=False, elem_id="explore-activations"):
                with gr.Column(scale=4):
                    image_in = gr.Image(label="Image", type="filepath", sources=["upload", "webcam", "clipboard"],
                                        height=300, elem_id="explore-image")
                    ex_gallery = gr.Gallery(label="Examples", columns=EXAMPLE_COLUMNS, height="auto",
                                            allow_preview=False, object_fit="cover", interactive=False,
                                            elem_id="explore-examples")
                    block = gr.Dropdown(BLOCK_CHOICES, value=DEFAULT_BLOCK, label="Block", elem_id="explore-block")
                    n_top = gr.Slider(1, N_MAX, value=N_DEFAULT, step=1, label="Most active channels shown")
                    with gr.Row():
                        with_image = gr.Checkbox(value=True, label="Overlay on the image", elem_id="explore-overlay")
                        shared = gr.Checkbox(value=True, label="One colour scale for all tiles",
                                             elem_id="explore-shared-scale")
                    cache_md = gr.Markdown(elem_id="explore-cache-status")
                with gr.Column(scale=7):
                    colour_bar = gr.HTML(elem_id="explore-colour-bar")
                    # JPEG tiles: a WebP encode per tile cost more than the view itself (bench/README.md).
                    gallery = gr.Gallery(label="Most active channels (click one for full size)",
                                         columns=GALLERY_COLUMNS, height="auto", object_fit="contain",
                                         allow_preview=False, elem_id="explore-gallery", format="jpeg")
                    stats_md = gr.Markdown(elem_id="explore-stats")
                    with gr.Row(equal_height=False):
                        hist = gr.Plot(label="Histogram", elem_id="explore-histogram")
                        with gr.Column():
                            channel = gr.Slider(0, 727, value=0, step=1, label="Channel (full size)",
                                                elem_id="explore-channel")
                            full = gr.Image(label="Channel at full size", type="pil", interactive=False, height=320,
                                            elem_id="explore-full", format="jpeg")
            _next_button(tabs, "article", "the article's wiring against the paper's")

        # ---------------------------------------------------------- article vs paper
        with gr.Tab("Article vs paper", id="article", elem_id="explore-article-tab"):
            article_intro = gr.Markdown(text.article_intro(None), elem_id="explore-article-intro")
            diff_view = gr.Plot(label="Where the article's wiring differs (hover the numbers)",
                                elem_id="explore-diff-view")
            compare = gr.Button("Compare both wirings on this image", variant="primary")
            diff_plot = gr.Plot(label="Per-block difference", elem_id="explore-diff")
            with gr.Row():
                top_paper = gr.Label(label="Top 5 · paper wiring", num_top_classes=5)
                top_article = gr.Label(label="Top 5 · article wiring", num_top_classes=5)
            diff_md = gr.Markdown(elem_id="explore-diff-text")
            if graph is not None:
                _next_button(tabs, "graph", "the graph in Netron")

        # ---------------------------------------------------------- the graph
        if graph is not None:
            with gr.Tab("Graph (Netron)", id="graph", elem_id="explore-graph-tab") as graph_tab:
                show_graph, graph_variant, graph_frame = graph()
            graph_tab.select(show_graph, graph_variant, graph_frame, api_visibility="private")
        else:  # no folder the server can write exports to
            with gr.Tab("Graph (Netron)", id="graph", elem_id="explore-graph-tab"):
                gr.Markdown(text.EXPORTS_OFF, elem_id="exports-off")

    # -------------------------------------------------------------- the public API's own components
    with gr.Column(visible=False):
        api_which = gr.Textbox(label=text.API_WHICH, value=LOADED)
        api_architecture = gr.JSON(label="architecture: totals and one entry per block")
        api_image = gr.Image(label=text.API_IMAGE, type="filepath")
        api_block = gr.Textbox(label=text.API_BLOCK, value=DEFAULT_BLOCK)
        api_top_n = gr.Number(label=text.API_TOP_N, value=8, precision=None)
        api_activations = gr.JSON(label="activations: shape, channel_means, top_channels, map_range and timings")
        api_maps = gr.Gallery(label="maps: the top_n channel maps (true grid, one colour scale), captioned "
                                    "'#channel · mean' (PNG)", format="png")
        api_arch_trigger = gr.Button(visible=False)
        api_act_trigger = gr.Button(visible=False)

    # -------------------------------------------------------------- handlers
    @shown
    def fill_architecture(which_value: str, kind: str, layers: bool, client_value: Any):
        kind, layers = check_choice(kind, "Cost chart", COST_KINDS), bool(layers)
        theme = figures.theme_of(client_value)
        try:
            d = service.description(which_value)
        except UserError as exc:
            return (gr.update(value=f"Waiting: {exc}"),) + (gr.skip(),) * 8
        served = service.model()
        summary = text.architecture_summary(d, served if which_value == LOADED else None)
        loaded = service.description(LOADED)
        return (summary, figure("block_view", d, theme), figure("resolution", d, theme),
                figure("cost", d, theme, kind=kind), _block_table(d, layers), _separable_table(d),
                text.separable_summary(d, separable_totals(d)),
                figure("block_view", loaded, theme, differences=True), text.article_intro(loaded))

    arch_inputs = [which, cost_kind, show_layers, client]
    arch_outputs = [arch_status, block_view, ladder, cost, table, sep_table, sep_summary, diff_view, article_intro]

    @shown
    def first_fill(which_value: str, kind: str, layers: bool, client_value: Any):
        """Timer tick until the model is ready: then fill everything once and stop."""
        if not store.is_ready():
            status = text.status_line(store.statuses(), False)
            return (gr.update(value=f"Waiting for the model… {status}"),) + (gr.skip(),) * 10
        service.warm_up_in_background()
        photos = examples.examples(service.model())
        return (*fill_architecture(which_value, kind, layers, client_value), example_items(photos),
                gr.Timer(active=False))

    timer = gr.Timer(1.0)
    timer.tick(first_fill, arch_inputs, arch_outputs + [ex_gallery, timer], api_visibility="private")
    for control in (which, cost_kind, show_layers):
        control.input(fill_architecture, arch_inputs, arch_outputs, api_visibility="private")

    @shown
    def architecture(which: str = LOADED) -> dict[str, Any]:
        """Xception block by block, for the loaded weights or the 299 px reference."""
        return service.architecture((which or LOADED).strip() if isinstance(which, str) else which)

    # The public event first: it takes the name; the page's own button is private.
    api_arch_trigger.click(architecture, [api_which], api_architecture, api_name="architecture",
                           api_description=text.API_ARCHITECTURE)
    arch_button.click(architecture, [which], arch_json, api_name="architecture_view", api_visibility="private")

    for number in (calc_k, calc_in, calc_out, calc_side):
        number.change(calculator_markdown, [calc_k, calc_in, calc_out, calc_side], calc_out_md,
                      api_visibility="private", queue=False)

    view_outputs = [gallery, stats_md, hist, channel, full, cache_md, record_key, colour_bar]

    def render(record, hit: bool, block_name: str, n: int, overlay_on: bool, shared_on: bool, client_value: Any,
               started: float, channel_index: Any = None):
        value_range = service.shared_range(record, block_name, n) if shared_on else None
        tiles = service.tiles(record, block_name, n, bool(overlay_on), value_range)
        channels = record.shape(block_name)[-1]
        c = tiles[0][1] if channel_index is None else check_int(channel_index, "Channel", 0, channels - 1)
        s = record.stats[block_name]
        histogram = figures.histogram_figure(s.histogram_counts, s.histogram_edges, title=f"{block_name} activations",
                                             zero_fraction=s.zero_fraction, after_relu=s.after_relu,
                                             theme=figures.theme_of(client_value))
        items = [(tile, text.tile_caption(index, mean)) for tile, index, mean in tiles]
        shown_channels = [index for _, index, _ in tiles]
        selected = shown_channels.index(c) if c in shown_channels else None
        big = service.full(record, block_name, c, bool(overlay_on), value_range)
        ms = (time.perf_counter() - started) * 1000
        return (gr.update(value=items, selected_index=selected), text.block_stats(record, block_name), histogram,
                gr.update(maximum=channels - 1, value=c, label=f"Channel (0–{channels - 1}) at full size"),
                big, text.cache_status(record, hit, service.explorer, ms), record.key,
                text.colour_bar(figures.ramp_css(), value_range, s.after_relu))

    @shown
    def on_image(payload, block_name, n, overlay_on, shared_on, client_value):
        started = time.perf_counter()
        if payload is None:
            return [], "", None, gr.update(), None, "", None, ""
        record, hit = service.activations(payload)
        return render(record, hit, block_name, n, overlay_on, shared_on, client_value, started)

    @shown
    def on_view(key, payload, block_name, n, overlay_on, shared_on, client_value):
        """A new block or number of tiles: the view starts again from the most active channel."""
        started = time.perf_counter()
        if key is None and payload is None:
            return (gr.skip(),) * 8
        record, hit = service.record(key, payload)
        return render(record, hit, block_name, n, overlay_on, shared_on, client_value, started)

    @shown
    def on_restyle(key, payload, block_name, n, overlay_on, shared_on, client_value, channel_index):
        """Overlay or colour scale switched: same tiles, same chosen channel."""
        started = time.perf_counter()
        if key is None and payload is None:
            return (gr.skip(),) * 8
        record, hit = service.record(key, payload)
        return render(record, hit, block_name, n, overlay_on, shared_on, client_value, started, channel_index)

    @shown
    def on_channel(key, payload, block_name, n, channel_index, overlay_on, shared_on):
        if key is None and payload is None:
            return gr.skip(), gr.skip()
        record, _ = service.record(key, payload)
        value_range = service.shared_range(record, block_name, n) if shared_on else None
        c = check_int(channel_index, "Channel", 0, record.shape(check_block(block_name))[-1] - 1)
        shown_channels = [index for index, _ in record.top_channels(block_name, check_int(n, "Number of channels", 1, N_MAX))]
        selected = shown_channels.index(c) if c in shown_channels else None
        return service.full(record, block_name, c, bool(overlay_on), value_range), gr.update(selected_index=selected)

    @shown
    def on_select(key, payload, block_name, n, evt: gr.SelectData):
        if key is None and payload is None:
            return gr.skip()
        record, _ = service.record(key, payload)
        top = record.top_channels(check_block(block_name), check_int(n, "Number of channels", 1, N_MAX))
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(top):
            return gr.skip()
        return gr.update(value=top[evt.index][0])

    image_in.change(on_image, [image_in, block, n_top, with_image, shared, client], view_outputs, preprocess=False,
                    api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    for control in (block, n_top):
        control.input(on_view, [record_key, image_in, block, n_top, with_image, shared, client], view_outputs,
                      preprocess=False, api_visibility="private", trigger_mode="always_last")
    for control in (with_image, shared):
        control.input(on_restyle, [record_key, image_in, block, n_top, with_image, shared, client, channel],
                      view_outputs, preprocess=False, api_visibility="private", trigger_mode="always_last")
    channel_inputs = [record_key, image_in, block, n_top, channel, with_image, shared]
    channel.input(on_channel, channel_inputs, [full, gallery], preprocess=False, api_visibility="private",
                  trigger_mode="always_last")
    gallery.select(on_select, [record_key, image_in, block, n_top], channel, preprocess=False,
                   api_visibility="private").then(
        on_channel, channel_inputs, [full, gallery], preprocess=False, api_visibility="private")

    @shown
    def on_example(evt: gr.SelectData):
        photos = examples.examples(service.model())
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(photos):
            return gr.skip()
        return str(photos[evt.index].path)

    ex_gallery.select(on_example, None, image_in, api_visibility="private", queue=False)

    @shown
    def activations(image, block: str = DEFAULT_BLOCK, top_n: float = 8):
        """One block's activations for a photo, with its most active channels as maps."""
        return service.activation_maps(image, block, top_n)

    api_act_trigger.click(activations, [api_image, api_block, api_top_n], [api_activations, api_maps],
                          preprocess=False, api_name="activations", concurrency_id="explore-forward",
                          concurrency_limit=2, api_description=text.API_ACTIVATIONS)

    @shown
    def on_compare(key, payload, client_value):
        if payload is None:
            raise UserError(text.NO_IMAGE)
        result = service.compare(key, payload)
        last = result.differences[-1]
        resized = [d.block for d in result.differences if d.resized]
        return (figures.difference_figure([dataclasses.asdict(d) for d in result.differences],
                                          theme=figures.theme_of(client_value)),
                dict(result.paper_top), dict(result.article_top),
                text.comparison(result.paper_top, result.article_top, last.relative_l2, last.cosine, resized))

    compare.click(on_compare, [record_key, image_in, client], [diff_plot, top_paper, top_article, diff_md],
                  preprocess=False, api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)

    upload_dir = Path(store.settings.upload_dir).resolve()

    def take_image(classify_payload: Any, explore_payload: Any, last: Any):
        """On opening Explore: the photo chosen in Classify, unless it was taken already (so a photo
        picked in Explore since stays). Only a file of Gradio's upload folder is taken."""
        path = classify_payload.get("path") if isinstance(classify_payload, dict) else None
        if not isinstance(path, str) or path == last:
            return gr.skip(), gr.skip()
        if not Path(path).resolve().is_relative_to(upload_dir):
            return gr.skip(), gr.skip()
        return path, path

    return ExploreTab(image_in, gr.State(None), take_image)
