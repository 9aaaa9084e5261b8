"""Explore › Start here: the guided path through the sub-tabs, in words."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from demo.ui import text
from demo.ui.explore.context import ExploreContext, SubTab


@dataclass(frozen=True)
class StartView:
    intro: gr.Markdown


def build(ctx: ExploreContext, tab: gr.Tab) -> StartView:
    return StartView(gr.Markdown(text.START_HERE))


SUB_TAB = SubTab(id="start", title="Start here", elem_id="explore-start", teaser="", build=build)
