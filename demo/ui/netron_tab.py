"""The Netron view (a sub-tab of Explore): the exported graph of either wiring on the app's port,
names on demand, the nodes where the article differs, and the full-model download."""

from __future__ import annotations

import html
import json

import gradio as gr

from demo.netron.exports import Exports
from demo.netron.routes import netron_iframe_src
from demo.services import UserError
from demo.services.classify import ClassifyService
from demo.services.explore import VARIANTS, check_choice
from demo.ui import text
from demo.ui.events import errors_as_messages

# Netron runs in a same-origin iframe and keeps its view on `window.__view__`: these call its own
# menu commands (View › Show Names, Edit › Find) so the page's buttons do what its keys do.
_VIEW = "const w = document.getElementById('netron-frame')?.contentWindow; const v = w && w.__view__;"
NAMES_JS = f"() => {{ {_VIEW} if (v) v.toggle('names'); }}"


def find_js(name: str) -> str:
    """JS that opens Netron's search with `name` typed in, and selects the first match."""
    return (f"() => {{ {_VIEW} if (!v) return; v.find(); setTimeout(() => {{"
            f" const q = w.document.getElementById('search'); if (!q) return; q.value = {json.dumps(name)};"
            " q.dispatchEvent(new Event('input')); setTimeout(() => {"
            " const hit = w.document.querySelector('.sidebar-find-content li'); if (hit) hit.click(); }, 200);"
            " }, 100); }")


def iframe_html(name: str) -> str:
    src = html.escape(netron_iframe_src(name), quote=True)
    return (f'<iframe id="netron-frame" src="{src}" title="Netron graph of {html.escape(name)}" '
            'style="width:100%;border:1px solid var(--border-color-primary);border-radius:8px" '
            '></iframe>')


def build_netron_section(service: ClassifyService, exports: Exports):
    """Inside the caller's layout (the Graph sub-tab). The frame stays empty until `show` runs:
    the caller runs it when the sub-tab opens, so Netron never loads (nor takes the focus and
    scrolls the page to itself) behind a tab the reader has not opened.

    Returns:
        (show, variant, frame): the handler that fills the frame, and its input and output.
    """
    gr.Markdown(text.NETRON_INTRO)
    with gr.Row():
        variant = gr.Radio([("paper (what the weights fit)", "paper"), ("article (its code)", "article")],
                           value="paper", label="Wiring", elem_id="netron-variant")
        names = gr.Button("Show / hide layer names", size="sm", elem_id="netron-names")
    with gr.Accordion("Where the article's graph differs: click to find the node", open=False):
        with gr.Row():
            for label, node, _ in text.NETRON_DIFFERENCE_NODES:
                gr.Button(label, size="sm").click(None, js=find_js(node))
        gr.Markdown(text.netron_difference_list())
    frame = gr.HTML("<p>Open this tab to load the graph.</p>", elem_id="netron-view")
    gr.Markdown(text.NETRON_NOTE, elem_id="netron-note")
    with gr.Row():
        prepare = gr.Button("Prepare the full .keras download (architecture and weights)", variant="secondary",
                            elem_id="keras-prepare")
        # A link to the app's own /models/ route (allowlisted export names, no server path in the
        # URL), not a Gradio file: a download of ~90 MB is never copied into Gradio's cache.
        download = gr.HTML(visible=False, elem_id="keras-download")
    names.click(None, js=NAMES_JS)

    @errors_as_messages
    def show(wiring: str):
        service.model(None)  # waits for the model, with a readable error
        return iframe_html(exports.graph(check_choice(wiring, "Wiring", VARIANTS)))

    @errors_as_messages
    def prepare_download(wiring: str):
        service.model(None)
        try:
            path = exports.full_keras(check_choice(wiring, "Wiring", VARIANTS))
        except OSError as exc:  # disk full, folder not writable: say so without the path
            raise UserError(f"The .keras file could not be written on the server ({type(exc).__name__}).") from None
        return gr.update(value=text.download_link(path.name, path.stat().st_size), visible=True)

    variant.change(show, variant, frame, api_visibility="private")
    variant.change(lambda: gr.update(value="", visible=False), None, download, api_visibility="private",
                   queue=False)
    prepare.click(prepare_download, variant, download, api_visibility="private")
    return show, variant, frame
