"""Explore › Graph (Netron): the exported graph of either wiring, loaded when the sub-tab opens
(`demo.ui.netron_tab`), or a note when the server has no folder to export to."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from demo.ui import text
from demo.ui.explore.context import ExploreContext, SubTab


@dataclass(frozen=True)
class GraphView:
    """`frame` is None when exports are off (then `note` says so)."""

    frame: gr.HTML | None
    note: gr.Markdown | None


def build(ctx: ExploreContext, tab: gr.Tab) -> GraphView:
    if ctx.graph is None:
        return GraphView(None, gr.Markdown(text.EXPORTS_OFF, elem_id="exports-off"))
    show, variant, frame = ctx.graph()
    # Netron loads (and takes the focus) only once the reader opens this sub-tab.
    tab.select(show, variant, frame, api_visibility="private")
    return GraphView(frame, None)


SUB_TAB = SubTab(id="graph", title="Graph (Netron)", elem_id="explore-graph-tab", teaser="the graph in Netron",
                 build=build, offered=lambda ctx: ctx.graph is not None)
