"""The Explore tab: its sub-tabs in order, each leading to the next, the fills that run once the
model is described, and taking the Classify photo along when the tab opens.

A new sub-tab is one module with a `SUB_TAB` (`demo.ui.explore.context.SubTab`) and one line in
`SUB_TABS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from demo.services import UserError
from demo.services.examples import ExampleService
from demo.services.explore import WHICH, ExploreService, check_choice
from demo.services.compare import CompareService
from demo.services.knockout import KnockoutService
from demo.services.operation import OperationService
from demo.store import ModelStore
from demo.ui import figures, text
from demo.ui.events import errors_as_messages
from demo.ui.explore import (activations, article, compare, glance, graph, knockouts, operation, separable,
                             start)
from demo.ui.explore.api import build_explore_api
from demo.ui.explore.context import Described, ExploreContext, Photo, SubTab

SUB_TABS: tuple[SubTab, ...] = (
    start.SUB_TAB,
    glance.SUB_TAB,
    separable.SUB_TAB,
    operation.SUB_TAB,
    activations.SUB_TAB,
    article.SUB_TAB,
    knockouts.SUB_TAB,
    compare.SUB_TAB,
    graph.SUB_TAB,
)


@dataclass(frozen=True)
class ExploreTab:
    """What the layout wires to the Classify tab: the photo, which Classify photo it took last,
    and the handler that takes it (run when Explore opens)."""

    image: gr.Image
    taken: gr.State
    take_image: Callable


def _next_button(tabs: gr.Tabs, to: SubTab) -> None:
    gr.Button(f"Next: {to.teaser} →", size="sm", elem_classes=["explore-next"]).click(
        lambda: gr.Tabs(selected=to.id), None, tabs, api_visibility="private", queue=False)


def _sub_tabs(ctx: ExploreContext) -> dict[str, Any]:
    """Every sub-tab in its `gr.Tab`, with a Next button to the following one; their records by id."""
    views: dict[str, Any] = {}
    # "wrap": every sub-tab stays one tap away on a phone (Gradio's default "menu" hides those
    # that do not fit behind a "⋯" button).
    with gr.Tabs(elem_id="explore-tabs", overflow_behavior="wrap") as tabs:
        for sub_tab, following in zip(SUB_TABS, [*SUB_TABS[1:], None]):
            with gr.Tab(sub_tab.title, id=sub_tab.id, elem_id=sub_tab.elem_id) as tab:
                views[sub_tab.id] = sub_tab.build(ctx, tab)
                if following is not None and following.offered(ctx):
                    _next_button(tabs, following)
    return views


def _distinct(components: list) -> list:
    """`components` without repeats (a status line is both a fill's output and the waiting message's)."""
    return list({id(c): c for c in components}.values())


def _wire_fills(ctx: ExploreContext, described_by: glance.GlanceView) -> None:
    """Every `Fill`: all of them once the model is ready (a timer waits for it, then stops), and
    those marked `again` whenever the reader changes what is described or a fill's own control.
    Failures to describe are said in At a glance's status line."""
    store, service, status = ctx.store, ctx.service, described_by.status
    fills, again = ctx.fills, [f for f in ctx.fills if f.again]

    def run(chosen: list, which_value: Any, client_value: Any, values: tuple) -> dict:
        which_value = check_choice(which_value, "Describe", WHICH)
        try:
            description = service.description(which_value)
        except UserError as exc:
            return {status: f"Waiting: {exc}"}
        described = Described(which_value, description, service.description(), service.model(),
                              figures.theme_of(client_value))
        out, values = {}, list(values)
        for fill in fills:  # the values of every fill's inputs, in order
            own, values = values[: len(fill.inputs)], values[len(fill.inputs):]
            if fill in chosen:
                out.update(zip(fill.outputs, fill.make(described, *own), strict=True))
        return out

    inputs = [described_by.which, ctx.client, *(c for f in fills for c in f.inputs)]
    timer = gr.Timer(1.0)
    first_outputs = _distinct([status, *(c for f in fills for c in f.outputs), timer])
    again_outputs = _distinct([status, *(c for f in again for c in f.outputs)])

    @errors_as_messages
    def first_fill(which_value: Any, client_value: Any, *values: Any) -> dict:
        """Timer tick until the model is ready: then fill everything once and stop."""
        if not store.is_ready():
            return {status: f"Waiting for the model… {text.status_line(store.statuses(), False)}"}
        service.warm_up_in_background()
        return run(fills, which_value, client_value, values) | {timer: gr.Timer(active=False)}

    @errors_as_messages
    def fill_again(which_value: Any, client_value: Any, *values: Any) -> dict:
        return run(again, which_value, client_value, values)

    timer.tick(first_fill, inputs, first_outputs, api_visibility="private")
    for control in (described_by.which, *(c for f in again for c in f.inputs)):
        control.input(fill_again, inputs, again_outputs, api_visibility="private")


def _take_image(store: ModelStore) -> Callable:
    upload_dir = Path(store.settings.upload_dir).resolve()

    def take_image(classify_payload: Any, explore_payload: Any, last: Any):
        """On opening Explore: the photo chosen in Classify, unless it was taken already (so a photo
        picked in Explore since stays). Only a file of Gradio's upload folder is taken."""
        path = classify_payload.get("path") if isinstance(classify_payload, dict) else None
        if not isinstance(path, str) or path == last:
            return gr.skip()
        if not Path(path).resolve().is_relative_to(upload_dir):
            return gr.skip()
        return path, path

    return take_image


def build_explore_tab(store: ModelStore, service: ExploreService, examples: ExampleService, client: gr.JSON,
                      graph_view: Callable | None = None, operation_service: OperationService | None = None,
                      compare_service: CompareService | None = None) -> ExploreTab:
    """Builds the Explore tab inside the caller's `gr.Tab` context (no Blocks of its own).

    Args:
        client: The browser's report ({dark, width}); figures follow its theme and width.
        graph_view: Builds the Netron view inside the Graph sub-tab; returns (show, variant, frame),
            and `show` runs when the sub-tab opens. None: the server cannot export models.
        operation_service: Inside one operation's (default: a new one over `store`).
        compare_service: Xception vs Inception V3's (default: a new one over `store`; it prepares
            nothing until first used).
    """
    operation_service = OperationService(store) if operation_service is None else operation_service
    compare_service = CompareService(store) if compare_service is None else compare_service
    knockout_service = KnockoutService(store)
    ctx = ExploreContext(store, service, examples, client, graph_view, Photo.create(), operation_service,
                         knockout_service, compare_service)
    views = _sub_tabs(ctx)
    build_explore_api(service, operation_service, knockout_service, compare_service)
    _wire_fills(ctx, views[glance.SUB_TAB.id])
    return ExploreTab(ctx.photo.image, ctx.photo.taken, _take_image(store))
