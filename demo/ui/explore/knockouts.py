"""Explore › Knockouts: the paper's ablations and Veit et al.'s lesions on the live network and the
visitor's photo (every number from `demo.services.knockout.KnockoutService`): choose knockouts,
run them, and read both networks' top-5, Grad-CAM and block outputs side by side; one click runs
the lesion study over the labelled photos the app has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from demo.services import UserError
from demo.services.knockout import KnockoutService, answer_json
from demo.ui import figures, text
from demo.ui.classify_tab import EXAMPLE_COLUMNS
from demo.ui.events import errors_as_messages
from demo.ui.explore.context import ExploreContext, SubTab
from xception_core.arch.registry import architecture
from xception_core.runtime.knockout import KINDS, MAX_KNOCKOUTS

BLOCKS = architecture().block_names
DEFAULT_BLOCK = "block7"
N_DEFAULT = 8


def separables(block: str) -> list[str]:
    """The separable convs of a block in the spec (what 'relu_between' may choose)."""
    return [n.name for n in architecture().graph().block_layers(block) if n.op == "separable"]


@dataclass(frozen=True)
class KnockoutsView:
    examples: gr.Gallery
    kind: gr.Dropdown
    block: gr.Dropdown
    layer: gr.Dropdown
    n_channels: gr.Slider
    add: gr.Button
    clear: gr.Button
    run: gr.Button
    chosen: gr.State
    listing: gr.Markdown
    verdict: gr.Markdown
    intact: gr.Label
    knocked: gr.Label
    intact_cam: gr.Image
    knocked_cam: gr.Image
    maps: gr.Gallery
    changes: gr.Plot
    lesion: gr.Button
    lesion_plot: gr.Plot
    lesion_summary: gr.Markdown
    lesion_table: gr.Dataframe


def _layout() -> KnockoutsView:
    gr.Markdown(text.KNOCKOUTS_INTRO)
    # The photo is Explore's (Activations shows it); an example clicked here becomes it.
    examples = gr.Gallery(label=text.KNOCKOUTS_EXAMPLES, columns=EXAMPLE_COLUMNS, height="auto", allow_preview=False,
                          object_fit="cover", interactive=False, elem_id="knockouts-examples")
    with gr.Row(equal_height=False, elem_id="knockouts-controls"):
        kind = gr.Dropdown([(words, kind) for kind, words in text.KNOCKOUTS_KINDS.items()], value=KINDS[0],
                           label="Knockout", elem_id="knockouts-kind")
        block = gr.Dropdown(list(BLOCKS), value=DEFAULT_BLOCK, label="Block", elem_id="knockouts-block")
        layer = gr.Dropdown(separables(DEFAULT_BLOCK), value=separables(DEFAULT_BLOCK)[0],
                            label="Separable conv (for a ReLU between its steps)", elem_id="knockouts-layer")
        n_channels = gr.Slider(1, 64, value=N_DEFAULT, step=1, label="Strongest channels to zero",
                               elem_id="knockouts-n")
    with gr.Row():
        add = gr.Button("Add knockout", elem_id="knockouts-add")
        clear = gr.Button("Clear", elem_id="knockouts-clear")
        run = gr.Button("Run on the photo", variant="primary", elem_id="knockouts-run")
    chosen = gr.State([])
    listing = gr.Markdown(text.KNOCKOUTS_NONE, elem_id="knockouts-list")
    verdict = gr.Markdown(elem_id="knockouts-verdict")
    with gr.Row(equal_height=False):
        with gr.Column():
            intact = gr.Label(num_top_classes=5, label="Intact network: top 5", elem_id="knockouts-intact")
            intact_cam = gr.Image(label="Intact: Grad-CAM of its top class", type="pil", interactive=False,
                                  height=260, elem_id="knockouts-intact-cam", format="jpeg")
        with gr.Column():
            knocked = gr.Label(num_top_classes=5, label="Knocked out: top 5", elem_id="knockouts-knocked")
            knocked_cam = gr.Image(label="Knocked out: Grad-CAM of its top class", type="pil", interactive=False,
                                   height=260, elem_id="knockouts-knocked-cam", format="jpeg")
    maps = gr.Gallery(label=text.KNOCKOUTS_MAPS, columns=4, height="auto", object_fit="contain",
                      allow_preview=False, elem_id="knockouts-maps", format="png")
    changes = gr.Plot(label="Block outputs", elem_id="knockouts-changes")
    gr.Markdown(text.KNOCKOUTS_LESION_INTRO)
    lesion = gr.Button("Run the lesion study", elem_id="knockouts-lesion")
    lesion_plot = gr.Plot(label="Lesion study", elem_id="knockouts-lesion-plot")
    lesion_summary = gr.Markdown(elem_id="knockouts-lesion-summary")
    lesion_table = gr.Dataframe(headers=["branch removed", "shortcut", "top-1 accuracy", "agreement with intact"],
                                interactive=False, elem_id="knockouts-lesion-table")
    return KnockoutsView(examples, kind, block, layer, n_channels, add, clear, run, chosen, listing, verdict, intact, knocked,
                         intact_cam, knocked_cam, maps, changes, lesion, lesion_plot, lesion_summary, lesion_table)


def _wire(ctx: ExploreContext, view: KnockoutsView) -> None:
    service: KnockoutService = ctx.knockouts
    photo = ctx.photo
    results = [view.verdict, view.intact, view.knocked, view.intact_cam, view.knocked_cam, view.maps, view.changes]

    def cleared(*_: Any) -> dict:
        return {view.verdict: "", view.intact: None, view.knocked: None, view.intact_cam: None,
                view.knocked_cam: None, view.maps: [], view.changes: None}

    @errors_as_messages
    def on_block(block: Any) -> Any:
        if block not in BLOCKS:
            return gr.skip()
        names = separables(block)
        return gr.update(choices=names, value=names[0] if names else None)

    @errors_as_messages
    def on_add(items: Any, kind: Any, block: Any, layer: Any, n: Any, payload: Any) -> dict:
        items = list(items or [])
        if len(items) >= MAX_KNOCKOUTS:
            raise UserError(f"At most {MAX_KNOCKOUTS} knockouts at once.")
        item: dict[str, Any] = {"kind": kind, "block": block}
        if kind == "relu_between":
            item["layer"] = layer
        if kind == "zero_channels":
            if payload is None:
                raise UserError("Choose a photo first: the strongest channels are the photo's.")
            item["channels"] = service.strongest(payload, block, n)
        items = [k.to_dict() for k in service.parse([*items, item])]  # checked now, not at the run
        return {view.chosen: items, view.listing: text.knockouts_list(items)}

    @errors_as_messages(clear=cleared)
    def on_run(items: Any, payload: Any, client_value: Any) -> dict:
        if payload is None:
            raise UserError("Choose a photo first (Activations or Classify).")
        answer = service.knockout(payload, items or [])
        data = answer_json(answer)
        intact_cam, knocked_cam = service.pictures(answer, payload)
        theme = figures.theme_of(client_value)
        return {view.verdict: text.knockouts_verdict(data), view.intact: data["intact"], view.knocked: data["knocked"],
                view.intact_cam: intact_cam, view.knocked_cam: knocked_cam, view.maps: service.map_pictures(answer),
                view.changes: figures.knockout_change_figure(data["blocks"], theme) if data["blocks"] else None}

    @errors_as_messages
    def on_lesion(client_value: Any) -> tuple:
        table = service.lesion().to_json()
        frame = pd.DataFrame([[r["block"], r["shortcut"], f"{r['accuracy']:.0%}", f"{r['agreement']:.0%}"]
                              for r in table["rows"]],
                             columns=["branch removed", "shortcut", "top-1 accuracy", "agreement with intact"])
        return (figures.lesion_figure(table, figures.theme_of(client_value)), text.lesion_summary(table), frame)

    view.block.input(on_block, view.block, view.layer, api_visibility="private", queue=False)
    view.add.click(on_add, [view.chosen, view.kind, view.block, view.layer, view.n_channels, photo.image],
                   [view.chosen, view.listing], preprocess=False, api_visibility="private")
    view.clear.click(lambda: ([], text.KNOCKOUTS_NONE), None, [view.chosen, view.listing], api_visibility="private",
                     queue=False)
    view.run.click(on_run, [view.chosen, photo.image, ctx.client], results, preprocess=False,
                   api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    view.lesion.click(on_lesion, [ctx.client], [view.lesion_plot, view.lesion_summary, view.lesion_table],
                      api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    # A new photo: the last photo's answers go (they would sit beside the new photo otherwise).
    photo.on_new(cleared, [], results, api_visibility="private", queue=False, show_progress="hidden")


def build(ctx: ExploreContext, tab: gr.Tab) -> KnockoutsView:
    view = _layout()
    _wire(ctx, view)
    ctx.wire_examples(view.examples)
    return view


SUB_TAB = SubTab(id="knockouts", title="Knockouts", elem_id="explore-knockouts-tab",
                 teaser="knock parts of the network out", build=build)
