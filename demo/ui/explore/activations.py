"""Explore › Activations: the visitor's photo through every block in one forward pass (cached),
a block's most active channels as tiles on their true grid with one colour scale, the block's
histogram and statistics, and one channel at full size."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo.services.explore import N_MAX, ExploreService, check_block
from demo.ui import figures, text
from demo.ui.classify_tab import EXAMPLE_COLUMNS
from demo.ui.events import errors_as_messages
from demo.ui.explore.context import ExploreContext, Photo, SubTab
from xception_core.arch.registry import architecture
from xception_core.runtime.activations import ImageActivations

N_DEFAULT = 16
GALLERY_COLUMNS = 4  # 16 default tiles in four full rows; wide enough to read on a phone too
BLOCK_CHOICES = [(f"{b.name} · {b.flow} flow · {b.kind}, {b.spec.out_channels} channels", b.name)
                 for b in architecture().spec.blocks]
DEFAULT_BLOCK = "block4"


def block_channels(block: str) -> int:
    """Channels of a block's output, from the spec the live model is built from (before a photo is
    shown; a shown photo's record has the live tensor's own count)."""
    return architecture().graph().channels()[architecture().block_output(block)]


@dataclass(frozen=True)
class ActivationsView:
    examples: gr.Gallery
    block: gr.Dropdown
    n_top: gr.Slider
    overlay: gr.Checkbox
    shared_scale: gr.Checkbox
    cache_status: gr.Markdown
    colour_bar: gr.HTML
    tiles: gr.Gallery
    stats: gr.Markdown
    histogram: gr.Plot
    channel: gr.Slider
    full: gr.Image

    def view_outputs(self, photo: Photo) -> list[gr.components.Component]:
        """What a new view of the photo fills (`_view`)."""
        return [self.tiles, self.stats, self.histogram, self.channel, self.full, self.cache_status,
                photo.record_key, self.colour_bar, self.n_top]


def clamped(value: Any, low: int, high: int, default: int) -> int:
    """A number box's value brought into [low, high] (rounded; `default` when it is not a number),
    so the box never keeps showing a value the view did not use."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    if number != number or isinstance(value, bool):  # NaN, or a boolean posing as a number
        return default
    return int(min(max(round(number), low), high))


def _layout(photo: Photo) -> ActivationsView:
    gr.Markdown(text.ACTIVATIONS_INTRO)
    with gr.Row(equal_height=False, elem_id="explore-activations"):
        with gr.Column(scale=4):
            photo.image.render()
            examples = gr.Gallery(label="Examples", columns=EXAMPLE_COLUMNS, height="auto", allow_preview=False,
                                  object_fit="cover", interactive=False, elem_id="explore-examples")
            block = gr.Dropdown(BLOCK_CHOICES, value=DEFAULT_BLOCK, label="Block", elem_id="explore-block")
            n_top = gr.Slider(1, N_MAX, value=N_DEFAULT, step=1, label="Most active channels shown",
                              elem_id="explore-n-top")
            with gr.Row():
                # Off at first: over the photo, 16 tiles on one scale read as one pale wash.
                overlay = gr.Checkbox(value=False, label="Overlay on the image", elem_id="explore-overlay")
                shared_scale = gr.Checkbox(value=True, label="One colour scale for all tiles",
                                           elem_id="explore-shared-scale")
            cache_status = gr.Markdown(elem_id="explore-cache-status")
        with gr.Column(scale=7):
            colour_bar = gr.HTML(elem_id="explore-colour-bar")
            # JPEG tiles: a WebP encode per tile cost more than the view itself (bench/README.md).
            tiles = gr.Gallery(label="Most active channels (click one for full size)", columns=GALLERY_COLUMNS,
                               height="auto", object_fit="contain", allow_preview=False, elem_id="explore-gallery",
                               format="jpeg")
            stats = gr.Markdown(elem_id="explore-stats")
            with gr.Row(equal_height=False):
                histogram = gr.Plot(label="Histogram", elem_id="explore-histogram")
                with gr.Column():
                    channel = gr.Slider(0, block_channels(DEFAULT_BLOCK) - 1, value=0, step=1,
                                        label="Channel (full size)", elem_id="explore-channel")
                    full = gr.Image(label="Channel at full size", type="pil", interactive=False, height=320,
                                    elem_id="explore-full", format="jpeg")
    return ActivationsView(examples, block, n_top, overlay, shared_scale, cache_status, colour_bar, tiles, stats,
                           histogram, channel, full)


def _view(service: ExploreService, view: ActivationsView, photo: Photo, record: ImageActivations, hit: bool,
          block_name: str, n: Any, overlay_on: bool, shared_on: bool, client_value: Any, started: float,
          channel_index: Any = None) -> dict:
    """One view of a photo's record: tiles, statistics, histogram and a channel at full size (the
    most active one, or `channel_index` kept from the view before). `n` out of range is brought
    into it, and the box shows the number used."""
    block_name = check_block(block_name)
    n = clamped(n, 1, N_MAX, N_DEFAULT)
    channels = record.shape(block_name)[-1]
    if channel_index is not None:
        channel_index = clamped(channel_index, 0, channels - 1, 0)
    value_range = service.shared_range(record, block_name, n) if shared_on else None
    tiles = service.tiles(record, block_name, n, bool(overlay_on), value_range)
    chosen = tiles[0][1] if channel_index is None else channel_index
    stats = record.stats[block_name]
    histogram = figures.histogram_figure(stats.histogram_counts, stats.histogram_edges,
                                         title=f"{block_name} activations", zero_fraction=stats.zero_fraction,
                                         after_relu=stats.after_relu, theme=figures.theme_of(client_value))
    shown_channels = [index for _, index, _ in tiles]
    selected = shown_channels.index(chosen) if chosen in shown_channels else None
    big = service.full(record, block_name, chosen, bool(overlay_on), value_range)
    ms = (time.perf_counter() - started) * 1000
    return {view.tiles: gr.update(value=[(tile, text.tile_caption(index, mean)) for tile, index, mean in tiles],
                                  selected_index=selected),
            view.stats: text.block_stats(record, block_name), view.histogram: histogram,
            view.channel: gr.update(maximum=channels - 1, value=chosen, label=f"Channel (0–{channels - 1}) at full size"),
            view.full: big, view.cache_status: text.cache_status(record, hit, service.explorer, ms),
            photo.record_key: record.key, view.n_top: n,
            view.colour_bar: text.colour_bar(figures.ramp_css(), value_range, stats.after_relu)}


def _wire_views(ctx: ExploreContext, view: ActivationsView) -> None:
    """A new photo, block, number of tiles, overlay or colour scale: a new view of the record."""
    service, photo = ctx.service, ctx.photo
    outputs = view.view_outputs(photo)

    def empty(*args) -> dict:
        """No photo (or one that could not be read): nothing of the last photo stays."""
        return {view.tiles: [], view.stats: "", view.histogram: None, view.full: None, view.cache_status: "",
                photo.record_key: None, view.colour_bar: ""}

    @errors_as_messages(clear=empty)
    def on_image(payload, block_name, n, overlay_on, shared_on, client_value):
        started = time.perf_counter()
        if payload is None:
            return empty()
        record, hit = service.activations(payload)
        return _view(service, view, photo, record, hit, block_name, n, overlay_on, shared_on, client_value, started)

    @errors_as_messages
    def on_view(key, payload, block_name, n, overlay_on, shared_on, client_value):
        """A new block or number of tiles: the view starts again from the most active channel."""
        started = time.perf_counter()
        if key is None and payload is None:  # no photo yet: the channel slider follows the block
            return {view.channel: gr.update(maximum=block_channels(check_block(block_name)) - 1),
                    view.n_top: clamped(n, 1, N_MAX, N_DEFAULT)}
        record, hit = service.record(key, payload)
        return _view(service, view, photo, record, hit, block_name, n, overlay_on, shared_on, client_value, started)

    @errors_as_messages
    def on_restyle(key, payload, block_name, n, overlay_on, shared_on, client_value, channel_index):
        """Overlay or colour scale switched: same tiles, same chosen channel."""
        started = time.perf_counter()
        if key is None and payload is None:
            return gr.skip()
        record, hit = service.record(key, payload)
        return _view(service, view, photo, record, hit, block_name, n, overlay_on, shared_on, client_value, started,
                     channel_index)

    controls = [view.block, view.n_top, view.overlay, view.shared_scale, ctx.client]
    photo.on_new(on_image, [photo.image, *controls], outputs, preprocess=False, api_visibility="private",
                 concurrency_id="explore-forward", concurrency_limit=2)
    for control in (view.block, view.n_top):
        control.input(on_view, [photo.record_key, photo.image, *controls], outputs, preprocess=False,
                      api_visibility="private", trigger_mode="always_last")
    for control in (view.overlay, view.shared_scale):
        control.input(on_restyle, [photo.record_key, photo.image, *controls, view.channel], outputs,
                      preprocess=False, api_visibility="private", trigger_mode="always_last")


def _wire_channel(ctx: ExploreContext, view: ActivationsView) -> None:
    """A channel chosen on the slider or by a click on its tile: that channel at full size."""
    service, photo = ctx.service, ctx.photo

    @errors_as_messages
    def on_channel(key, payload, block_name, n, channel_index, overlay_on, shared_on):
        if key is None and payload is None:
            return gr.skip()
        record, _ = service.record(key, payload)
        n = clamped(n, 1, N_MAX, N_DEFAULT)
        value_range = service.shared_range(record, block_name, n) if shared_on else None
        chosen = clamped(channel_index, 0, record.shape(check_block(block_name))[-1] - 1, 0)
        top = record.top_channels(block_name, n)
        shown_channels = [index for index, _ in top]
        selected = shown_channels.index(chosen) if chosen in shown_channels else None
        return (service.full(record, block_name, chosen, bool(overlay_on), value_range),
                gr.update(selected_index=selected), chosen)

    @errors_as_messages
    def on_select(key, payload, block_name, n, evt: gr.SelectData):
        if key is None and payload is None:
            return gr.skip()
        record, _ = service.record(key, payload)
        top = record.top_channels(check_block(block_name), clamped(n, 1, N_MAX, N_DEFAULT))
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(top):
            return gr.skip()
        return gr.update(value=top[evt.index][0])

    channel_inputs = [photo.record_key, photo.image, view.block, view.n_top, view.channel, view.overlay,
                      view.shared_scale]
    view.channel.input(on_channel, channel_inputs, [view.full, view.tiles, view.channel], preprocess=False,
                       api_visibility="private", trigger_mode="always_last")
    view.tiles.select(on_select, [photo.record_key, photo.image, view.block, view.n_top], view.channel,
                      preprocess=False, api_visibility="private").then(
        on_channel, channel_inputs, [view.full, view.tiles, view.channel], preprocess=False, api_visibility="private")


def build(ctx: ExploreContext, tab: gr.Tab) -> ActivationsView:
    view = _layout(ctx.photo)
    _wire_views(ctx, view)
    _wire_channel(ctx, view)
    ctx.wire_examples(view.examples)
    return view


SUB_TAB = SubTab(id="activations", title="Activations", elem_id="explore-activations-tab",
                 teaser="activations on your photo", build=build)
