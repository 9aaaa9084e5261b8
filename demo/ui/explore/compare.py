"""Explore › Xception vs Inception V3: the paper's central comparison. Both networks module by
module at a chosen input size, where their parameters sit, both forwards timed on the visitor's
photo, the paper's own figures beside the measured ones, and the continuum of its Figures 1–4.

A sub-tab of Explore rather than a tab of its own: it answers the same photo as the other
sub-tabs (`ctx.photo`), reads the same module tables (At a glance's columns), and is the last step
of the same lesson (why Xception exists). Nothing of Inception V3 is prepared until the sub-tab is
opened (or `/compare` is called): the module tables come from the layer graphs alone, and opening
the sub-tab starts Inception V3's preparation in the background while the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from demo.services import UserError
from demo.services.compare import PAPER, CompareService, Network
from demo.ui import figures, text
from demo.ui.cards import table_cards
from demo.ui.events import errors_as_messages
from demo.ui.explore.context import ExploreContext, SubTab
from demo.ui.figures import fmt_count, fmt_macs, shape_text

COLUMNS = ["module", "kind", "output", "parameters", "multiply-accumulates"]


@dataclass(frozen=True)
class CompareView:
    size: gr.Number
    totals: gr.Markdown
    placement: gr.Plot
    placement_text: gr.Markdown
    xception_table: gr.Dataframe
    inception_table: gr.Dataframe
    xception_cards: gr.HTML
    inception_cards: gr.HTML
    status: gr.Markdown
    run: gr.Button
    timings: gr.Plot
    timings_text: gr.Markdown
    xception_top: gr.Label
    inception_top: gr.Label
    xception_cam: gr.Image
    inception_cam: gr.Image
    channels_in: gr.Number
    channels_out: gr.Number
    side: gr.Number
    continuum: gr.Plot
    continuum_text: gr.Markdown
    poll: gr.Timer


def module_table(network: Network) -> pd.DataFrame:
    """One row per module (and the classifier): kind, output shape, parameters, MACs; a total row."""
    d = network.description
    rows = [[b.name, b.kind, shape_text(b.output_shape), fmt_count(b.params), fmt_macs(b.macs)] for b in d.blocks]
    rows.append(["total", "", "", fmt_count(d.total_params), fmt_macs(d.total_macs)])
    return pd.DataFrame(rows, columns=COLUMNS)


def _layout(ctx: ExploreContext) -> CompareView:
    gr.Markdown(text.COMPARE_INTRO, elem_id="cmp-intro")
    size = gr.Number(299, label="input size (px, 75–1024)", precision=None, step=1, elem_id="cmp-size")
    totals = gr.Markdown(elem_id="cmp-totals")
    placement = gr.Plot(label="Where the parameters sit", elem_id="cmp-placement")
    placement_text = gr.Markdown(elem_id="cmp-placement-text")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            xception_table = gr.Dataframe(label="Xception, block by block", interactive=False, max_height=420,
                                          wrap=True, elem_id="cmp-xception-table")
            xception_cards = gr.HTML(elem_id="cmp-xception-cards")
        with gr.Column(min_width=300):
            inception_table = gr.Dataframe(label="Inception V3, module by module", interactive=False,
                                           max_height=420, wrap=True, elem_id="cmp-inception-table")
            inception_cards = gr.HTML(elem_id="cmp-inception-cards")
    gr.Markdown("#### Both on your photo")
    gallery = gr.Gallery(label="Examples (click one)", columns=6, height=110, allow_preview=False,
                         elem_id="cmp-examples")
    ctx.wire_examples(gallery)
    status = gr.Markdown(text.COMPARE_NO_PHOTO, elem_id="cmp-status")
    run = gr.Button("Time both networks on the photo", variant="primary", elem_id="cmp-run")
    timings = gr.Plot(label="Forward time", elem_id="cmp-timings")
    timings_text = gr.Markdown(elem_id="cmp-timings-text")
    with gr.Row():
        xception_top = gr.Label(label="Top 5 · Xception", num_top_classes=5, visible=False, elem_id="cmp-x-top")
        inception_top = gr.Label(label="Top 5 · Inception V3", num_top_classes=5, visible=False, elem_id="cmp-i-top")
    with gr.Row():
        xception_cam = gr.Image(label="Grad-CAM · Xception", visible=False, interactive=False, elem_id="cmp-x-cam")
        inception_cam = gr.Image(label="Grad-CAM · Inception V3", visible=False, interactive=False,
                                 elem_id="cmp-i-cam")
    gr.Markdown("#### From the Inception module to the depthwise separable conv (the paper's Figures 1–4)")
    with gr.Row(equal_height=True):
        channels_in = gr.Number(128, label="input channels", precision=None, step=1, elem_id="cmp-in")
        channels_out = gr.Number(256, label="output channels", precision=None, step=1, elem_id="cmp-out")
        side = gr.Number(17, label="output side", precision=None, step=1, elem_id="cmp-side")
    continuum = gr.Plot(label="Parameters and cost against the number of channel segments", elem_id="cmp-continuum")
    continuum_text = gr.Markdown(elem_id="cmp-continuum-text")
    poll = gr.Timer(2.0, active=False)
    return CompareView(size, totals, placement, placement_text, xception_table, inception_table, xception_cards,
                       inception_cards, status, run, timings, timings_text, xception_top, inception_top,
                       xception_cam, inception_cam, channels_in, channels_out, side, continuum, continuum_text, poll)


def _state_words(service: CompareService) -> str:
    state = service.state()
    if state in ("idle", "preparing"):
        return text.COMPARE_PREPARING
    if state == "failed":
        try:
            service.inception(0)
        except UserError as exc:
            return str(exc)
    failure = service.why_no_predictions()
    ready = "Inception V3 is ready: choose a photo and time both networks."
    return ready if failure is None else f"{ready} {text.compare_no_predictions(str(failure))}"


def build(ctx: ExploreContext, tab: gr.Tab) -> CompareView:
    view = _layout(ctx)
    service = ctx.compare
    structure_outputs = [view.totals, view.placement, view.placement_text, view.xception_table, view.xception_cards,
                         view.inception_table, view.inception_cards]

    def structure(size: Any, client_value: Any) -> tuple:
        xception, inception = service.structure(size)
        theme = figures.theme_of(client_value)
        x_table, i_table = module_table(xception), module_table(inception)
        return (text.compare_totals(xception, inception),
                figures.placement_figure({n.title: n.placement for n in (xception, inception)}, theme),
                text.compare_placement(xception, inception),
                x_table, table_cards(x_table, "Xception, block by block"),
                i_table, table_cards(i_table, "Inception V3, module by module"))

    def continuum(c_in: Any, c_out: Any, s: Any, client_value: Any) -> tuple:
        c = service.continuum(c_in, c_out, s)
        figure = figures.continuum_figure(
            [p.segments for p in c.steps], [p.params for p in c.steps], [p.macs for p in c.steps],
            xception_params=c.xception.separable_params, xception_macs=c.xception.separable_macs,
            in_channels=c.regular.in_channels, out_channels=c.regular.out_channels, side=c.regular.height,
            theme=figures.theme_of(client_value))
        return figure, text.continuum_text(c)

    @errors_as_messages
    def on_open(size: Any, c_in: Any, c_out: Any, s: Any, client_value: Any) -> tuple:
        """Opening the sub-tab: the tables from the graphs, and Inception V3's preparation started."""
        service.prepare()
        return (*structure(size, client_value), *continuum(c_in, c_out, s, client_value), _state_words(service),
                gr.Timer(active=service.state() in ("idle", "preparing")))

    tab.select(on_open, [view.size, view.channels_in, view.channels_out, view.side, ctx.client],
               [*structure_outputs, view.continuum, view.continuum_text, view.status, view.poll],
               api_visibility="private")
    view.size.submit(errors_as_messages(structure), [view.size, ctx.client], structure_outputs,
                     api_visibility="private")
    view.size.blur(errors_as_messages(structure), [view.size, ctx.client], structure_outputs,
                   api_visibility="private")
    for number in (view.channels_in, view.channels_out, view.side):
        number.change(errors_as_messages(continuum), [view.channels_in, view.channels_out, view.side, ctx.client],
                      [view.continuum, view.continuum_text], api_visibility="private")
    view.poll.tick(lambda: (_state_words(service), gr.Timer(active=service.state() in ("idle", "preparing"))),
                   None, [view.status, view.poll], api_visibility="private", queue=False)

    answer_outputs = [view.timings, view.timings_text, view.xception_top, view.inception_top, view.xception_cam,
                      view.inception_cam, view.status]

    @errors_as_messages(clear=lambda *args: dict.fromkeys(answer_outputs[:2]))
    def on_run(payload: Any, client_value: Any) -> tuple:
        if payload is None:
            raise UserError(text.COMPARE_NO_PHOTO)
        service.prepare()
        if service.state() in ("idle", "preparing"):
            return (gr.skip(),) * 6 + (text.COMPARE_PREPARING,)
        timings = service.timings(payload)
        found = service.predictions(payload)
        theme = figures.theme_of(client_value)
        medians = timings.medians
        figure = figures.timings_figure({"Xception": timings.xception_ms, "Inception V3": timings.inception_ms},
                                        {"Xception": medians["xception"], "Inception V3": medians["inception_v3"]},
                                        theme)
        words = text.compare_timings(timings, PAPER)
        if found is None:
            hidden = gr.update(visible=False, value=None)
            return figure, words, hidden, hidden, hidden, hidden, _state_words(service)
        shown = lambda value: gr.update(visible=True, value=value)  # noqa: E731
        words += "\n\n" + text.compare_predictions(found.xception, found.inception)
        return (figure, words, shown(dict(found.xception)), shown(dict(found.inception)), shown(found.xception_cam),
                shown(found.inception_cam), _state_words(service))

    view.run.click(on_run, [ctx.photo.image, ctx.client], answer_outputs, preprocess=False,
                   api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    return view


SUB_TAB = SubTab(id="compare", title="Xception vs Inception V3", elem_id="explore-compare-tab",
                 teaser="Xception against Inception V3", build=build)
