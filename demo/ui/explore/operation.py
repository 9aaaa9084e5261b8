"""Explore › Inside one operation: one depthwise-separable conv of the served model on the visitor's
photo, number by number. Pick a block, a separable conv, a wiring and an output channel; click the
photo or the conv's feature map for an output position; see the position's receptive field, the
depthwise step of the input channels that matter most, the pointwise step as ranked
contributions, BatchNorm, ReLU, max-pool and the residual sum (each beside the model's own value),
this conv's cost against a standard conv, and the photos' patches where a channel fires most.

Every number comes from `demo.services.operation.OperationService`, which checks every argument
(a click's coordinates too, once turned into a position here); this module lays out, draws and
words (`demo.ui.operation_text`, `demo.ui.figures`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from demo.services import UserError
from demo.services.explore import cell_side, check_block
from demo.services.operation import MAX_TOP, OPENING_BLOCK, STEP_BLOCKS, OperationService, StepAnswer, check_number
from demo.ui import figures, text
from demo.ui import operation_text as words
from demo.ui.events import errors_as_messages
from demo.ui.explore.context import ExploreContext, SubTab, payload_path
from xception_core.arch.receptive import BlockField
from xception_core.arch.registry import architecture
from xception_core.io.visualize import map_tile
from xception_core.runtime.patches import MAX_PHOTOS

DEFAULT_BLOCK = OPENING_BLOCK  # "block5": a middle-flow block: three convs, an identity shortcut, the wirings differ at its sum
DEFAULT_LAYER = "block5_sepconv3"
SHOWN_DEFAULT, SHOWN_MAX = 3, 8  # input channels whose depthwise step is shown in full
VIEW_SIDE = 300  # the photo and the map are drawn at least this wide: a finger can hit a cell
MAX_UPLOADS = 16  # this session's uploads the channel search includes
EXAMPLES_A_ROW = 9
FIELD_COLOUR = (228, 87, 86)
BLOCK_CHOICES = [(f"{b.name} · {b.flow} flow · {len(b.conv_names())} separable convs", b.name)
                 for b in architecture().spec.blocks if b.name in STEP_BLOCKS]
WIRINGS = [("paper (Keras, the weights')", "paper"), ("article", "article")]


@dataclass(frozen=True)
class OperationView:
    block: gr.Dropdown
    layer: gr.Radio
    variant: gr.Radio
    channel: gr.Number
    strongest: gr.Button
    shown: gr.Slider
    examples: gr.Gallery
    upload: gr.UploadButton
    where: gr.Markdown
    photo_view: gr.Image
    map_view: gr.Image
    map_scale: gr.HTML  # the map's colour scale: the values its two ends stand for
    row: gr.Number
    col: gr.Number
    rf_table: gr.Dataframe
    depthwise: gr.HTML
    pointwise: gr.Plot
    stages: gr.HTML
    macs: gr.Plot
    cost: gr.Markdown
    search: gr.Button
    patches: gr.Gallery
    patches_note: gr.Markdown
    state: gr.State  # {"key", "path", "y", "x"}: the photo's key in the step cache, and the field's centre
    opened: gr.State  # the sub-tab was opened: a new photo is answered here only then
    uploads: gr.State  # this session's uploads in Explore, for the channel search

    def step_outputs(self) -> list[gr.components.Component]:
        return [self.where, self.photo_view, self.map_view, self.map_scale, self.depthwise, self.pointwise,
                self.stages, self.macs, self.cost, self.state, self.row, self.col, self.channel, self.layer,
                self.rf_table]


# ------------------------------------------------------------------------------------------ pictures


def photo_scale(input_size: int) -> int:
    """Whole-number zoom of the model's input on the page (a click maps back exactly)."""
    return max(1, math.ceil(VIEW_SIDE / input_size))


def photo_picture(answer: StepAnswer) -> Image.Image:
    """The photo as the model saw it, zoomed, with the position's receptive field outlined and its
    centre marked."""
    image = answer.image
    scale = photo_scale(image.shape[0])
    picture = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST)
    f = answer.step.receptive
    box = (f.left * scale, f.top * scale, (f.right + 1) * scale - 1, (f.bottom + 1) * scale - 1)
    draw = ImageDraw.Draw(picture)
    draw.rectangle(box, outline=(255, 255, 255), width=5)  # a white rim: the red reads on any photo
    draw.rectangle(box, outline=FIELD_COLOUR, width=3)
    cy, cx = f.rows.centre(f.row) * scale + scale / 2, f.cols.centre(f.col) * scale + scale / 2
    r = max(4, scale * 2)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 255, 255), fill=FIELD_COLOUR, width=2)
    return picture


def map_side(grid: int) -> int:
    return cell_side(grid, VIEW_SIDE)


def map_picture(answer: StepAnswer) -> Image.Image:
    """The chosen channel of the conv's BatchNorm output on its true grid, the chosen cell outlined."""
    values = answer.output_map
    h, w = values.shape
    side = map_side(h)
    picture = map_tile(values, side, nearest=True, grid=True)
    cell = side // h
    r, c = answer.step.row, answer.step.col
    draw = ImageDraw.Draw(picture)
    draw.rectangle((c * cell, r * cell, (c + 1) * cell - 1, (r + 1) * cell - 1), outline=(255, 255, 255), width=3)
    draw.rectangle((c * cell + 3, r * cell + 3, (c + 1) * cell - 4, (r + 1) * cell - 4), outline=(0, 0, 0), width=1)
    return picture


def map_scale_html(answer: StepAnswer) -> str:
    """The colour bar under the map: `map_picture` stretches the channel's own minimum and maximum
    over the ramp."""
    values = answer.output_map
    return text.colour_bar(figures.ramp_css(), (float(values.min()), float(values.max())),
                           kind=f"{answer.step.plan.batchnorm} output, channel #{answer.step.channel} "
                                "(this map's own minimum to maximum; can be negative)")


def patch_picture(patch: np.ndarray, at_least: int = 96) -> Image.Image:
    """A patch enlarged by a whole factor (pixels stay sharp)."""
    scale = max(1, math.ceil(at_least / max(patch.shape[:2])))
    return Image.fromarray(patch).resize((patch.shape[1] * scale, patch.shape[0] * scale), Image.Resampling.NEAREST)


def receptive_frame(rows: tuple[BlockField, ...]) -> pd.DataFrame:
    """The receptive-field table: one row per block's output."""
    return pd.DataFrame([[r.block, r.layer, f"{r.grid[0]}×{r.grid[1]}", r.jump, f"{r.size}×{r.size}",
                          f"{r.centre.height}×{r.centre.width}"] for r in rows],
                        columns=["block", "output", "grid", "jump (px)", "interior field (px)", "centre field (px)"])


# ------------------------------------------------------------------------------------------ clicks


def click_point(index: Any, width: int, height: int) -> tuple[float, float]:
    """(y, x) of a click on a picture `width`×`height` (Gradio's `SelectData.index` is [x, y] in
    the picture's pixels; a client could send anything)."""
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise UserError(f"A click must be [x, y] in pixels, got {str(index)[:40]!r}.")
    x = check_number(index[0], "x", 0, width - 1)
    y = check_number(index[1], "y", 0, height - 1)
    return y, x


def known_key(state: Any, payload: Any) -> str | None:
    """The step cache's key of the photo, when `state` was made for this same payload (a new
    photo must never be answered from the last one's tensors)."""
    if isinstance(state, dict) and payload_path(payload) is not None and state.get("path") == payload_path(payload):
        key = state.get("key")
        return key if isinstance(key, str) else None
    return None


def _shown(value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return SHOWN_DEFAULT
    return SHOWN_DEFAULT if number != number else int(min(max(round(number), 1), SHOWN_MAX))


# ------------------------------------------------------------------------------------------ the view


def _layout() -> OperationView:
    gr.Markdown(words.OPERATION_INTRO, elem_id="op-intro")
    with gr.Row(equal_height=False):
        block = gr.Dropdown(BLOCK_CHOICES, value=DEFAULT_BLOCK, label="Block", elem_id="op-block", min_width=220)
        layer = gr.Radio(words.separable_choices(architecture().block(DEFAULT_BLOCK).conv_names()), value=DEFAULT_LAYER,
                         label="Separable conv", elem_id="op-layer", min_width=200)
        variant = gr.Radio(WIRINGS, value="paper", label="Wiring", elem_id="op-variant", min_width=200)
    with gr.Row(equal_height=False):
        with gr.Column(min_width=160):
            channel = gr.Number(0, label="Output channel", precision=0, minimum=0, elem_id="op-channel")
            strongest = gr.Button("The strongest channel here", size="sm", elem_id="op-strongest")
        shown = gr.Slider(1, SHOWN_MAX, value=SHOWN_DEFAULT, step=1, label="Input channels shown in full",
                          elem_id="op-shown", min_width=200)
    # One row on a desktop (the lesson is below it); three a row on a phone (the page's CSS).
    examples = gr.Gallery(label="Examples (or the photo chosen in Activations)", columns=EXAMPLES_A_ROW,
                          height="auto", allow_preview=False, object_fit="cover", interactive=False,
                          elem_id="op-examples")
    upload = gr.UploadButton("Or upload your own photo", file_types=["image"], size="sm", elem_id="op-upload")
    where = gr.Markdown(words.NO_PHOTO, elem_id="op-where")
    with gr.Row(equal_height=False):
        photo_view = gr.Image(label="Your photo as the model sees it: click to pick a position", type="pil",
                              interactive=False, format="jpeg", buttons=[], height=VIEW_SIDE + 60, elem_id="op-photo",
                              min_width=280)
        with gr.Column(min_width=280):
            map_view = gr.Image(label="The conv's output channel (after BatchNorm): click a cell", type="pil",
                                interactive=False, format="png", buttons=[], height=VIEW_SIDE + 60, elem_id="op-map")
            map_scale = gr.HTML(elem_id="op-map-scale")
    with gr.Row():
        row = gr.Number(None, label="Row", precision=0, minimum=0, elem_id="op-row", min_width=100)
        col = gr.Number(None, label="Column", precision=0, minimum=0, elem_id="op-col", min_width=100)
    gr.Markdown(words.CLICK_HINT)
    with gr.Accordion("Receptive field by block", open=False, elem_id="op-rf"):
        gr.Markdown(words.RF_TABLE_NOTE)
        rf_table = gr.Dataframe(interactive=False, wrap=True, max_height=420, elem_id="op-rf-table")
    gr.Markdown(words.HEAD_DEPTHWISE)
    depthwise = gr.HTML(css_template=words.GRID_CSS, elem_id="op-depthwise")
    gr.Markdown(words.HEAD_POINTWISE)
    pointwise = gr.Plot(label="Pointwise contributions", show_label=False, elem_id="op-pointwise")
    gr.Markdown(words.HEAD_AFTER)
    stages = gr.HTML(css_template=words.GRID_CSS, elem_id="op-stages")
    gr.Markdown(words.HEAD_COST)
    macs = gr.Plot(label="Multiply-accumulates", show_label=False, elem_id="op-macs")
    cost = gr.Markdown(elem_id="op-cost")
    gr.Markdown(words.HEAD_PATCHES)
    gr.Markdown(words.PATCHES_INTRO)
    search = gr.Button("Find the strongest patches of this block's output channel", elem_id="op-search")
    patches = gr.Gallery(label="Strongest patches", columns=4, height="auto", allow_preview=False,
                         object_fit="contain", interactive=False, elem_id="op-patches", format="png")
    patches_note = gr.Markdown(elem_id="op-patches-note")
    return OperationView(block, layer, variant, channel, strongest, shown, examples, upload, where, photo_view,
                         map_view, map_scale, row, col, rf_table, depthwise, pointwise, stages, macs, cost, search,
                         patches, patches_note, gr.State(None), gr.State(False), gr.State([]))


def _answer(service: OperationService, view: OperationView, answer: StepAnswer, payload: Any, shown: Any,
            client: Any, table: bool, started: float) -> dict:
    """One step's outputs (the receptive-field table and the conv's cost too when `table`);
    `started`: when the event's handler began (the time said is the whole answer's)."""
    step, theme = answer.step, figures.theme_of(client)
    pw = step.pointwise
    f = step.receptive
    state = {"key": answer.photo, "path": payload_path(payload), "y": f.rows.centre(f.row), "x": f.cols.centre(f.col)}
    out = {
        view.photo_view: photo_picture(answer),
        view.map_view: gr.update(value=map_picture(answer),
                                 label=f"{step.plan.batchnorm}, channel #{step.channel}: click a cell"),
        view.map_scale: map_scale_html(answer),
        view.depthwise: words.depthwise_html(step, _shown(shown)),
        view.pointwise: figures.contributions_figure(
            [c.channel for c in pw.top], [c.value for c in pw.top], [c.weight for c in pw.top],
            [c.product for c in pw.top], pw.rest, pw.rest_count, pw.bias, pw.value, layer=pw.layer,
            channel=pw.channel, theme=theme),
        view.stages: words.stages_html(step),
        view.state: state,
        view.row: step.row, view.col: step.col,
        view.channel: gr.update(value=step.channel, maximum=step.plan.out_channels - 1,
                                label=f"Output channel (0–{step.plan.out_channels - 1})"),
    }
    if table:  # what only a new conv or wiring changes: a click in the same conv leaves them (and the
        # browser redraws no chart it need not)
        out[view.rf_table] = receptive_frame(service.receptive_table(step.variant))
        out[view.macs] = figures.macs_figure(step.cost.depthwise_macs, step.cost.pointwise_macs,
                                             step.cost.standard_macs, layer=step.plan.layer, grid=step.grid,
                                             theme=theme)
        out[view.cost] = words.cost_text(step)
    out[view.where] = words.where(step, answer.image.shape[0], answer.cache_hit,
                                  (time.perf_counter() - started) * 1000,
                                  None if answer.forward_seconds is None else answer.forward_seconds * 1000)
    return out


def _empty(view: OperationView, message: str = words.NO_PHOTO) -> dict:
    """No photo: nothing of an earlier one stays."""
    return {view.where: message, view.photo_view: None, view.map_view: None, view.map_scale: "", view.depthwise: "",
            view.pointwise: None, view.stages: "", view.macs: None, view.cost: "", view.state: None}


def handlers(service: OperationService, view: OperationView) -> dict[str, Any]:
    """The sub-tab's event handlers by name (the tests call them as the page does)."""

    def step(payload, state, block, layer, variant, row, col, channel, shown, client, table=False):
        started = time.perf_counter()
        answer = service.step(known_key(state, payload), payload, block, layer, row, col, channel, variant, MAX_TOP)
        return _answer(service, view, answer, payload, shown, client, table, started)

    def moved(payload, state, block, layer, variant, channel, shown, client, table=True):
        """A new block, conv or wiring: the position whose field is centred nearest the last one's
        centre (the photo's centre at first), the channel kept when the conv has it."""
        plan = service.plan(block, layer, variant)
        size = service.model().input_size
        y, x = ((state.get("y"), state.get("x")) if isinstance(state, dict) and state.get("y") is not None
                else ((size - 1) / 2, (size - 1) / 2))
        row, col = service.position_at(plan.block, plan.layer, y, x, variant)
        try:
            channel = min(max(int(channel), 0), plan.out_channels - 1)
        except (TypeError, ValueError, OverflowError):
            channel = 0
        return step(payload, state, plan.block, plan.layer, variant, row, col, channel, shown, client, table)

    @errors_as_messages
    def op_show(payload, state, block, layer, variant, channel, shown, client):
        """The sub-tab opened: answer for the photo there is, or say how to get one."""
        if payload is None:
            return {view.opened: True, **_empty(view)}
        return {view.opened: True, **moved(payload, state, block, layer, variant, channel, shown, client)}

    @errors_as_messages(clear=lambda *args: _empty(view, words.NO_PHOTO))
    def op_photo(opened, payload, block, layer, variant, channel, shown, client):
        """A new photo: answered when the sub-tab was opened (its pass is not run for readers elsewhere)."""
        if opened is not True:
            return gr.skip()
        if payload is None:
            return _empty(view)
        return moved(payload, None, block, layer, variant, channel, shown, client)

    @errors_as_messages
    def op_block(payload, state, block, variant, channel, shown, client):
        """A new block: its separable convs to choose from, the last one chosen."""
        names = service.separable_layers(block)
        choices = gr.update(choices=words.separable_choices(names), value=names[-1])
        if payload is None:
            return {view.layer: choices}
        return {view.layer: choices, **moved(payload, state, block, names[-1], variant, channel, shown, client)}

    @errors_as_messages
    def op_controls(payload, state, block, layer, variant, channel, shown, client):
        if payload is None:
            return gr.skip()
        return moved(payload, state, block, layer, variant, channel, shown, client)

    @errors_as_messages
    def op_position(payload, state, block, layer, variant, row, col, channel, shown, client):
        """Row, column, channel or the number of channels shown typed in."""
        if payload is None:
            return gr.skip()
        return step(payload, state, block, layer, variant, row, col, channel, shown, client)

    @errors_as_messages
    def op_strongest(payload, state, block, layer, variant, row, col, shown, client):
        """The output channel that fires most at the position shown."""
        if payload is None:
            return gr.skip()
        channel = service.strongest_channel(known_key(state, payload), payload, block, layer, row, col, variant)
        return step(payload, state, block, layer, variant, row, col, channel, shown, client)

    @errors_as_messages
    def op_photo_click(payload, state, block, layer, variant, channel, shown, client, evt: gr.SelectData):
        """A click on the photo: the position whose field is centred nearest it."""
        if payload is None:
            return gr.skip()
        plan = service.plan(block, layer, variant)
        size = service.model().input_size
        scale = photo_scale(size)
        y, x = click_point(evt.index, size * scale, size * scale)
        row, col = service.position_at(plan.block, plan.layer, y / scale, x / scale, variant)
        return step(payload, state, plan.block, plan.layer, variant, row, col, channel, shown, client)

    @errors_as_messages
    def op_map_click(payload, state, block, layer, variant, channel, shown, client, evt: gr.SelectData):
        """A click on the map: the cell under it."""
        if payload is None:
            return gr.skip()
        h, w = service.grid(block, layer, variant)
        side = map_side(h)
        y, x = click_point(evt.index, map_side(w), side)
        cell = side // h
        return step(payload, state, block, layer, variant, int(y // cell), int(x // cell), channel, shown, client)

    @errors_as_messages(clear=lambda *args: {view.patches: [], view.patches_note: ""})
    def op_search(block, channel, variant, uploads):
        """The strongest patches of a channel of the block's output over the photos at hand."""
        block = check_block(block)
        mine = [(f"your photo {i + 1}", p) for i, p in enumerate(uploads if isinstance(uploads, list) else [])]
        photos = [*mine[:MAX_UPLOADS], *service.default_photos()][:MAX_PHOTOS]
        found = service.channel_patches(photos, block, channel, variant, k=8)
        items = [(patch_picture(p.patch), words.patch_caption(p.label, p.value, p.receptive)) for p in found.patches]
        return {view.patches: items, view.patches_note: words.patches_summary(found, len(photos), len(mine))}

    def op_upload(payload, uploads):
        """An upload in Explore joins this session's photos for the channel search (newest first, bounded)."""
        if payload_path(payload) is None:
            return gr.skip()
        kept = [p for p in (uploads if isinstance(uploads, list) else []) if payload_path(p) != payload_path(payload)]
        return [{"path": payload_path(payload), "meta": {"_type": "gradio.FileData"}}, *kept][:MAX_UPLOADS]

    @errors_as_messages
    def op_upload_button(payload, uploads):
        """A photo uploaded here becomes Explore's photo (the service reads it, and refuses what is not
        an image) and joins this session's photos."""
        if payload_path(payload) is None:
            return gr.skip()
        return payload_path(payload), op_upload(payload, uploads)

    return {f.__name__: f for f in (op_show, op_photo, op_block, op_controls, op_position, op_strongest,
                                    op_photo_click, op_map_click, op_search, op_upload, op_upload_button)}


def _wire(ctx: ExploreContext, view: OperationView, tab: gr.Tab, service: OperationService) -> None:
    h = handlers(service, view)
    photo, client = ctx.photo.image, ctx.client
    outputs = view.step_outputs()
    common = dict(preprocess=False, api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    settings = [view.block, view.layer, view.variant, view.channel, view.shown, client]
    tab.select(h["op_show"], [photo, view.state, *settings], [view.opened, *outputs], **common)
    ctx.photo.on_new(h["op_photo"], [view.opened, photo, *settings], outputs, **common)
    photo.upload(h["op_upload"], [photo, view.uploads], view.uploads, preprocess=False, api_visibility="private",
                 queue=False)
    view.block.input(h["op_block"], [photo, view.state, view.block, view.variant, view.channel, view.shown, client],
                     outputs, trigger_mode="always_last", **common)
    for control in (view.layer, view.variant):
        control.input(h["op_controls"], [photo, view.state, *settings], outputs, trigger_mode="always_last", **common)
    position = [photo, view.state, view.block, view.layer, view.variant, view.row, view.col, view.channel,
                view.shown, client]
    for control in (view.row, view.col, view.channel, view.shown):
        control.input(h["op_position"], position, outputs, trigger_mode="always_last", **common)
    view.strongest.click(h["op_strongest"], [photo, view.state, view.block, view.layer, view.variant, view.row,
                                             view.col, view.shown, client], outputs, **common)
    view.upload.upload(h["op_upload_button"], [view.upload, view.uploads], [photo, view.uploads], preprocess=False,
                       api_visibility="private", queue=False)
    clicks = [photo, view.state, *settings]
    view.photo_view.select(h["op_photo_click"], clicks, outputs, trigger_mode="always_last", **common)
    view.map_view.select(h["op_map_click"], clicks, outputs, trigger_mode="always_last", **common)
    view.search.click(h["op_search"], [view.block, view.channel, view.variant, view.uploads],
                      [view.patches, view.patches_note], **common)


def build(ctx: ExploreContext, tab: gr.Tab) -> OperationView:
    view = _layout()
    _wire(ctx, view, tab, ctx.operation)
    ctx.wire_examples(view.examples)
    # The receptive-field table before any photo (the paper's wiring; a shown step has its own).
    ctx.fill([view.rf_table], lambda described: (receptive_frame(ctx.operation.receptive_table("paper")),),
             again=False)
    return view


SUB_TAB = SubTab(id="operation", title="Inside one operation", elem_id="explore-operation-tab",
                 teaser="inside one operation, number by number", build=build)


__all__ = ["OperationView", "SUB_TAB", "handlers", "receptive_frame"]
