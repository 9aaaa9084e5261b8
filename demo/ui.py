"""The Gradio Blocks: header, model status, and the Classify and Explore tabs."""

from __future__ import annotations

import gradio as gr

from demo.classify import build_classify_tab
from xception_core.serving import ModelStore

TITLE = "Xception Explorer"

INTRO = """
# Xception Explorer
Classify your own photos with a pretrained **Xception** (Chollet, *Xception: Deep Learning with
Depthwise Separable Convolutions*, CVPR 2017, <a href="https://arxiv.org/abs/1610.02357" target="_blank" rel="noopener">arXiv:1610.02357</a>),
see where it looked, and explore how its entry, middle and exit flows transform your image.
"""

CSS = """
#status-line { font-size: 0.9em; opacity: 0.85; }
footer { display: none !important; }
"""


def build_demo(store: ModelStore, exports=None) -> gr.Blocks:
    """Builds the app's Blocks around a shared `ModelStore` (loading starts on first page view)."""
    with gr.Blocks(title=TITLE) as blocks:
        gr.Markdown(INTRO)
        status = gr.Markdown(elem_id="status-line")
        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                refresh_weights, weights = build_classify_tab(store)
            with gr.Tab("Explore", id="explore"):
                try:
                    from demo.explore import build_explore_tab
                except ImportError:  # the Explore tab lands in its own change
                    gr.Markdown("The architecture explorer is not part of this build.")
                else:
                    build_explore_tab(store)
                if exports is not None:
                    from demo.netron_view import build_netron_section

                    show_graph, graph_variant, graph_frame = build_netron_section(store, exports)

        def show_status():
            state = "ready" if store.is_ready() else "loading"
            return f"**Model status ({state}):** {store.status()}"

        timer = gr.Timer(2.0)
        timer.tick(show_status, None, status, api_visibility="private", queue=False)
        timer.tick(lambda: gr.Timer(active=not _settled(store)), None, timer, api_visibility="private", queue=False)
        timer.tick(refresh_weights, weights, weights, api_visibility="private", queue=False)
        blocks.load(show_status, None, status, api_visibility="private", queue=False)
        blocks.load(refresh_weights, weights, weights, api_visibility="private", queue=False)
        if exports is not None:
            blocks.load(show_graph, graph_variant, graph_frame, api_visibility="private")
    return blocks


def _settled(store: ModelStore) -> bool:
    """No weights still loading: the status poll can stop."""
    return store.is_ready() and "loading" not in store.status() and "waiting" not in store.status()
