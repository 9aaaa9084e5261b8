"""The Netron view inside the Explore tab: the exported graph of either wiring, on the app's port."""

from __future__ import annotations

import html

import gradio as gr

from demo.classify import get_classifier
from demo.exports import Exports
from demo.netron import netron_iframe_src
from xception_core.serving import ModelStore

NETRON_NOTE = """
**Reading the graph.** Netron draws every Keras layer of the model in use. Its node names are the
explorer's layer names: block *N* of the explorer is every node named `blockN_…`; the shortcut of
a downsampling block is `blockN_residual_conv` → `blockN_residual_bn`, joined to the main path at
`blockN_add`; the classifier is `avg_pool` → `predictions` (or the transfer head's dense layers).
Separable convs show their `depthwise_kernel` (3×3×C×1) and `pointwise_kernel` (1×1×C×C′).
Scroll to zoom, drag to pan, click a node for its attributes.
"""


def iframe_html(name: str) -> str:
    src = html.escape(netron_iframe_src(name), quote=True)
    return (f'<iframe id="netron-frame" src="{src}" title="Netron graph of {html.escape(name)}" '
            'style="width:100%;height:720px;border:1px solid var(--border-color-primary);border-radius:8px" '
            '></iframe>')


def build_netron_section(store: ModelStore, exports: Exports) -> None:
    """Inside the caller's layout: variant switch, the Netron iframe, and the full-model download."""
    gr.Markdown("## The graph in Netron")
    with gr.Row():
        variant = gr.Radio(["paper", "article"], value="paper", label="Wiring",
                           info="'paper' = Keras reference (what the weights fit); 'article' = the article's code.")
        download = gr.DownloadButton("Download the full .keras (weights included, ~90 MB)", variant="secondary")
    frame = gr.HTML("<p>Loading the graph…</p>", elem_id="netron-view")
    gr.Markdown(NETRON_NOTE)

    def show(v: str):
        get_classifier(store, None)  # waits for the model, with a readable error
        return iframe_html(exports.graph(v))

    def prepare_download(v: str):
        get_classifier(store, None)
        return str(exports.full_keras(v))

    variant.change(show, variant, frame, api_visibility="private")
    download.click(prepare_download, variant, download, api_visibility="private")
    return show, variant, frame
