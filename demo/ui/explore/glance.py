"""Explore › At a glance: how Xception is built. The block view, the resolution ladder, parameters
and cost per block, and the block (or layer) table, of the loaded model or the 299 px reference.

Its "Describe" choice and status line are what every fill of Explore follows
(`demo.ui.explore.tab`); the JSON accordion shows the `/architecture` answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from demo.services.explore import LOADED, REFERENCE, check_choice
from demo.ui import figures, text
from demo.ui.cards import table_cards
from demo.ui.explore.api import architecture_handler
from demo.ui.explore.context import Described, ExploreContext, SubTab
from demo.ui.figures import fmt_count, shape_text
from xception_core.arch.registry import architecture
from xception_core.runtime.introspection import ModelDescription

COST_KINDS = ("bar", "treemap")
BLOCK_PICKS = [(f"{b.name} · {b.flow} flow", b.name) for b in architecture().spec.blocks] + [("head · classifier", "head")]


@dataclass(frozen=True)
class GlanceView:
    """`which` chooses what Explore describes; `status` says what it is, or what it waits for."""

    status: gr.Markdown
    which: gr.Radio
    cost_kind: gr.Radio
    block_view: gr.Plot
    block_pick: gr.Dropdown  # a block chosen by name: outlined in the diagram, its numbers in words
    block_details: gr.Markdown
    ladder: gr.Plot
    cost: gr.Plot
    show_layers: gr.Checkbox
    table: gr.Dataframe
    cards: gr.HTML  # the same table as cards, shown instead of it on a phone
    json_button: gr.Button
    json: gr.JSON


def block_table(description: ModelDescription, layers: bool) -> pd.DataFrame:
    """One row per block and a total, or (`layers`) one row per layer."""
    d = description
    if layers:
        rows = [[layer.block, layer.name, layer.class_name, shape_text(layer.input_shape),
                 shape_text(layer.output_shape), fmt_count(layer.params), fmt_count(layer.learned_params),
                 fmt_count(layer.moving_statistics_params), fmt_count(layer.macs)] for b in d.blocks for layer in b.layers]
        return pd.DataFrame(rows, columns=["block", "layer", "type", "input shape", "output shape", "params",
                                           "learned", "BatchNorm moving statistics", "multiply-accumulates"])
    rows = [[b.name, b.flow, b.kind, shape_text(b.output_shape), fmt_count(b.params), fmt_count(b.learned_params),
             fmt_count(b.moving_statistics_params), fmt_count(b.macs)] for b in d.blocks]
    rows.append(["total", "", "", "", fmt_count(d.total_params), fmt_count(d.learned_params),
                 fmt_count(d.moving_statistics_params), fmt_count(d.total_macs)])
    return pd.DataFrame(rows, columns=["block", "flow", "kind", "output shape", "params", "learned",
                                       "BatchNorm moving statistics", "multiply-accumulates"])


def _layout() -> GlanceView:
    gr.Markdown(text.GLANCE_INTRO)
    status = gr.Markdown("Loading the model description…", elem_id="explore-arch-status")
    with gr.Row():
        which = gr.Radio([("The model that runs here", LOADED),
                          ("Reference Xception: 299×299, ImageNet head", REFERENCE)], value=LOADED,
                         label="Describe", scale=3)
        cost_kind = gr.Radio([("bars", "bar"), ("treemap", "treemap")], value="bar", label="Cost chart", scale=1)
    block_view = gr.Plot(label="Block view", elem_id="explore-block-view")
    with gr.Row(equal_height=True):
        block_pick = gr.Dropdown(BLOCK_PICKS, value=None, label="Block", scale=1, min_width=220,
                                 elem_id="explore-block-pick")
        block_details = gr.Markdown(text.block_details(None), elem_id="explore-block-details", min_width=240)
    with gr.Row():
        ladder = gr.Plot(label="Resolution and channels", elem_id="explore-ladder")
        cost = gr.Plot(label="Parameters and cost", elem_id="explore-cost")
    show_layers = gr.Checkbox(label="Show every layer", value=False)
    table = gr.Dataframe(label="Blocks", interactive=False, max_height=420, wrap=True, elem_id="explore-table")
    cards = gr.HTML(elem_id="explore-table-cards")
    with gr.Accordion("Architecture as JSON (API: /architecture)", open=False):
        json_button = gr.Button("Show JSON", size="sm")
        json = gr.JSON(label="architecture")
    return GlanceView(status, which, cost_kind, block_view, block_pick, block_details, ladder, cost, show_layers, table,
                      cards, json_button, json)


def build(ctx: ExploreContext, tab: gr.Tab) -> GlanceView:
    view = _layout()

    def fill(described: Described, kind: Any, layers: Any, picked: Any) -> tuple:
        kind = check_choice(kind, "Cost chart", COST_KINDS)
        d, theme, drawn = described.description, described.theme, ctx.figures
        block = next((b for b in d.blocks if b.name == picked), None) if isinstance(picked, str) else None
        summary = text.architecture_summary(d, described.served if described.which == LOADED else None)
        view_figure = drawn.get(figures.block_view_figure, d, theme, selected=block.name if block else None)
        table = block_table(d, bool(layers))
        return (summary, view_figure, text.block_details(block), drawn.get(figures.resolution_figure, d, theme),
                drawn.get(figures.cost_figure, d, theme, kind=kind), table,
                table_cards(table, "Layers" if layers else "Blocks"))

    ctx.fill([view.status, view.block_view, view.block_details, view.ladder, view.cost, view.table, view.cards], fill,
             inputs=[view.cost_kind, view.show_layers, view.block_pick])

    view.json_button.click(architecture_handler(ctx.service, page=True), [view.which], view.json,
                           api_name="architecture_view",
                           api_visibility="private")
    return view


SUB_TAB = SubTab(id="glance", title="At a glance", elem_id="explore-glance", teaser="Xception at a glance",
                 build=build)
