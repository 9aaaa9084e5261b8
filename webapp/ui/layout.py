"""The Gradio Blocks: header, model status, and the Classify and Explore tabs."""

from __future__ import annotations

import gradio as gr

from webapp.netron.exports import Exports
from webapp.services.classify import ClassifyService
from webapp.services.explore import ExploreService
from webapp.store import ModelStore
from webapp.ui import text
from webapp.ui.classify_tab import build_classify_tab
from webapp.ui.explore_tab import build_explore_tab
from webapp.ui.netron_tab import build_netron_section

CSS = """
#status-line { font-size: 0.9em; opacity: 0.85; }
footer { display: none !important; }
"""


def build_demo(store: ModelStore, exports: Exports | None = None) -> gr.Blocks:
    """Builds the app's Blocks around a shared `ModelStore` (loading starts on first page view)."""
    classify = ClassifyService(store)
    explore = ExploreService(store)
    with gr.Blocks(title=text.TITLE) as blocks:
        gr.Markdown(text.INTRO)
        status = gr.Markdown(elem_id="status-line")
        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                refresh_weights, weights = build_classify_tab(store, classify)
            with gr.Tab("Explore", id="explore"):
                build_explore_tab(store, explore)
                if exports is not None:
                    show_graph, graph_variant, graph_frame = build_netron_section(classify, exports)
                else:
                    gr.Markdown(text.EXPORTS_OFF)

        def show_status():
            return text.status_line(store.statuses(), store.is_ready())

        timer = gr.Timer(2.0)
        timer.tick(show_status, None, status, api_visibility="private", queue=False)
        timer.tick(lambda: gr.Timer(active=not store.settled()), None, timer, api_visibility="private", queue=False)
        timer.tick(refresh_weights, weights, weights, api_visibility="private", queue=False)
        blocks.load(show_status, None, status, api_visibility="private", queue=False)
        blocks.load(refresh_weights, weights, weights, api_visibility="private", queue=False)
        if exports is not None:
            blocks.load(show_graph, graph_variant, graph_frame, api_visibility="private")
    return blocks
