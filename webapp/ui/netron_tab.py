"""The Netron view inside the Explore tab: the exported graph of either wiring, on the app's port."""

from __future__ import annotations

import html

import gradio as gr

from webapp.netron.exports import Exports
from webapp.netron.routes import netron_iframe_src
from webapp.services.classify import ClassifyService
from webapp.services.explore import VARIANTS, check_choice
from webapp.ui import text
from webapp.ui.events import shown

def iframe_html(name: str) -> str:
    src = html.escape(netron_iframe_src(name), quote=True)
    return (f'<iframe id="netron-frame" src="{src}" title="Netron graph of {html.escape(name)}" '
            'style="width:100%;height:720px;border:1px solid var(--border-color-primary);border-radius:8px" '
            '></iframe>')


def build_netron_section(service: ClassifyService, exports: Exports):
    """Inside the caller's layout: variant switch, the Netron iframe, and the full-model download.

    Returns:
        (show, variant, frame): the handler that fills the frame, and its input and output.
    """
    gr.Markdown("## The graph in Netron")
    with gr.Row():
        variant = gr.Radio(["paper", "article"], value="paper", label="Wiring",
                           info="'paper' = Keras reference (what the weights fit); 'article' = the article's code.")
        download = gr.DownloadButton("Download the full .keras (weights included, ~90 MB)", variant="secondary")
    frame = gr.HTML("<p>Loading the graph…</p>", elem_id="netron-view")
    gr.Markdown(text.NETRON_NOTE)

    @shown
    def show(v: str):
        service.model(None)  # waits for the model, with a readable error
        return iframe_html(exports.graph(check_choice(v, "Wiring", VARIANTS)))

    @shown
    def prepare_download(v: str):
        service.model(None)
        return str(exports.full_keras(check_choice(v, "Wiring", VARIANTS)))

    variant.change(show, variant, frame, api_visibility="private")
    download.click(prepare_download, variant, download, api_visibility="private")
    return show, variant, frame
