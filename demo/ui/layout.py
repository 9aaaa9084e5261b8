"""The Gradio Blocks: header, model status and weights panel, and the Classify, Explore and Teach
tabs, with the page's CSS. The Blocks do not load the weights: the store's creator starts that
(`app.py` before Gradio is even imported, else `demo.server.create_app`), and the page polls the
store until the model is ready."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import gradio as gr

from demo.fonts import page_font_css
from demo.netron.exports import Exports
from demo.services.classify import ClassifyService
from demo.services.examples import ExampleService
from demo.services.explore import ExploreService
from demo.store import ModelStore
from demo.ui import text
from demo.ui.classify_tab import build_classify_tab
from demo.ui.events import refuse_bad_inputs
from demo.ui.explore.tab import build_explore_tab
from demo.ui.netron_tab import build_netron_section
from demo.ui.teach_tab import build_teach_tab, teach_service

CSS = page_font_css() + """
#status-line { font-size: 0.92em; }
#imagenet-help { font-size: 0.92em; }
#imagenet-help code { word-break: break-all; }
/* A long code line (e.g. Teach's `build_xception(weights="xception_taught.keras")`) wraps on a
   phone instead of running off the screen. */
.prose code { overflow-wrap: anywhere; }
#netron-frame { height: min(720px, 78vh); }
/* Galleries show every tile: Gradio caps an unsized gallery at 55vh and scrolls the rest out of sight. */
#explore-gallery .grid-wrap, #classify-examples .grid-wrap, #explore-examples .grid-wrap, #op-examples .grid-wrap,
#op-patches .grid-wrap { min-height: 0 !important; max-height: none !important; }
/* ...and fit their columns to the width: Gradio's 100 px minimum puts a phone's 4th column out of view. */
#explore-gallery .grid-container, #classify-examples .grid-container, #explore-examples .grid-container,
#op-examples .grid-container, #op-patches .grid-container {
  grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important;
  grid-auto-rows: auto !important; grid-template-rows: none !important; }
#explore-gallery .thumbnail-item, #classify-examples .thumbnail-item, #explore-examples .thumbnail-item,
#op-examples .thumbnail-item, #op-patches .thumbnail-item { aspect-ratio: 1 / 1; height: auto; }
#classify-examples-head p { margin: 0; }
/* Explore's two tables whole at a desktop's width (13 columns in Separable convolutions): the page's
   proportional font with tabular digits instead of Gradio's monospace, and slimmer cell padding. */
#explore-table table, #explore-table .cell-wrap, #explore-separable table, #explore-separable .cell-wrap {
  font-family: var(--font) !important; font-variant-numeric: tabular-nums; }
#explore-table th, #explore-table td, #explore-separable th, #explore-separable td {
  padding-left: 5px !important; padding-right: 5px !important; }
/* Their phone form (`demo.ui.cards`): one card a row, a `label  value` line a column, in the theme's
   colours; shown instead of the tables below 640 px, where 8 or 13 columns cannot fit side by side. */
#explore-table-cards, #explore-separable-cards, #cmp-xception-cards, #cmp-inception-cards { display: none !important; }
.table-cards { max-height: 75vh; overflow-y: auto; overflow-x: hidden; font-variant-numeric: tabular-nums; }
.table-cards-label { margin: 0 0 6px 0; font-size: var(--block-label-text-size); color: var(--block-label-text-color); }
.table-card { margin: 0 0 8px 0; padding: 6px 10px; border: 1px solid var(--border-color-primary);
  border-radius: var(--radius-md); background: var(--block-background-fill); color: var(--body-text-color); }
.table-card > div { display: flex; justify-content: space-between; gap: 12px; line-height: 1.45; }
.table-card dt { color: var(--body-text-color-subdued); }
.table-card dd { margin: 0; text-align: right; overflow-wrap: anywhere; }
.table-card .table-card-title { font-weight: 600; border-bottom: 1px solid var(--border-color-primary);
  margin-bottom: 2px; }
.table-card .table-card-title dt { color: var(--body-text-color); }
@media (max-width: 640px) {
  #explore-table, #explore-separable, #cmp-xception-table, #cmp-inception-table { display: none !important; }
  #explore-table-cards, #explore-separable-cards, #cmp-xception-cards, #cmp-inception-cards { display: block !important; }
}
/* "Use via API" on a phone too (Gradio hides it below 640 px); no divider after the last link. */
footer .show-api { display: flex !important; }
footer > .divider:last-child { display: none; }
@media (max-width: 700px) {
  /* The first screen of a phone: title, one status line, the tabs and the image input. */
  #intro h1 { font-size: 1.55em; margin: 0 0 0.25em 0; }
  #intro p { font-size: 0.92em; line-height: 1.4; margin: 0; }
  #status-line { font-size: 0.85em; line-height: 1.35; }
  /* Example captions whole ("spoon", not "sp…"): three columns. */
  #classify-examples .grid-container, #explore-examples .grid-container, #op-examples .grid-container {
    grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
  /* A channel's patches two a row: big enough to see what it fires on, captions whole. */
  #op-patches .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  /* Sub-tabs packed a little closer: all six in two rows at 390 px, not three. */
  #explore-tabs .tab-container button, #main-tabs .tab-container button { padding: 0 10px; }
}
"""

# Read in the browser on load: the figures follow the page's theme and width.
CLIENT_JS = "() => ({dark: document.body.classList.contains('dark'), width: window.innerWidth})"


def build_demo(store: ModelStore, exports: Exports | None = None, max_upload: str = "10mb",
               disk: Callable[[int], AbstractContextManager[bool]] | None = None) -> gr.Blocks:
    """Builds the app's Blocks around a shared `ModelStore`, loading or loaded (the Blocks only poll it).

    Args:
        exports: Where the Netron graph and the .keras download are written; None turns them off.
        max_upload: The upload limit as the page states it (e.g. "10mb").
        disk: Reserves room on the server's disk budget for a file about to be written (Teach's
            downloads); None: no budget.
    """
    classify = ClassifyService(store)
    explore = ExploreService(store)
    examples = ExampleService(store)
    teach = teach_service(store, disk)  # Explore's lesion study reads the photos a visitor labelled in Teach
    with gr.Blocks(title=text.TITLE) as blocks:
        gr.Markdown(text.INTRO, elem_id="intro")
        status = gr.Markdown(text.status_line([], False), elem_id="status-line")
        with gr.Accordion("How to get the ImageNet-1k weights", open=False, visible=False,
                          elem_id="imagenet-help") as help_box:
            gr.Markdown(text.HOW_TO_GET_IMAGENET)
        client = gr.JSON(visible=False)
        with gr.Tabs(overflow_behavior="wrap", elem_id="main-tabs"):
            with gr.Tab("Classify", id="classify"):
                classify_view = build_classify_tab(store, classify, examples, max_upload)
            with gr.Tab("Explore", id="explore") as explore_tab:
                graph = (lambda: build_netron_section(classify, exports)) if exports is not None else None
                explore_view = build_explore_tab(store, explore, examples, client, graph,
                                                 labelled_uploads=teach.labelled_uploads)
            with gr.Tab("Teach", id="teach"):
                build_teach_tab(store, blocks, client, teach)

        def show_status():
            statuses = store.statuses()
            served = classify.model(None) if store.is_ready() else None
            helps = text.imagenet_help(statuses, served) is not None
            return text.model_status(statuses, served), gr.Accordion(visible=helps)

        timer = gr.Timer(2.0)
        timer.tick(show_status, None, [status, help_box], api_visibility="private", queue=False)
        timer.tick(lambda: gr.Timer(active=not store.settled()), None, timer, api_visibility="private", queue=False)
        for refresh in classify_view.refreshes:
            timer.tick(refresh.fn, refresh.inputs, refresh.outputs, api_visibility="private", queue=False)
        blocks.load(show_status, None, [status, help_box], api_visibility="private", queue=False)
        for refresh in classify_view.refreshes:
            blocks.load(refresh.fn, refresh.inputs, refresh.outputs, api_visibility="private", queue=False)
        blocks.load(None, None, client, js=CLIENT_JS, api_visibility="private", queue=False)
        # Explore starts from the photo chosen in Classify (when it has none of its own, or a newer one).
        explore_tab.select(explore_view.take_image, [classify_view.image, explore_view.image, explore_view.taken],
                           [explore_view.image, explore_view.taken], preprocess=False,
                           api_visibility="private", queue=False)
    return refuse_bad_inputs(blocks)
