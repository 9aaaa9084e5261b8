"""Explore › Article vs paper: where the article's wiring differs from the paper's, and both
wirings on the visitor's photo with the same weights (per-block differences, both top 5s)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo.services import UserError
from demo.ui import figures, text
from demo.ui.events import errors_as_messages
from demo.ui.explore.context import Described, ExploreContext, SubTab


@dataclass(frozen=True)
class ArticleView:
    intro: gr.Markdown
    wiring: gr.Plot  # the block view with the article's differences marked
    compare: gr.Button
    differences: gr.Plot
    paper_top: gr.Label
    article_top: gr.Label
    comparison: gr.Markdown


def _layout() -> ArticleView:
    intro = gr.Markdown(text.article_intro(None), elem_id="explore-article-intro")
    wiring = gr.Plot(label="Where the article's wiring differs (①–④ as in the list above)",
                     elem_id="explore-diff-view")
    compare = gr.Button("Compare both wirings on your photo", variant="primary", elem_id="explore-compare")
    gr.Markdown(text.COMPARE_NOTE, elem_id="explore-compare-note")
    differences = gr.Plot(label="Per-block difference", elem_id="explore-diff")
    with gr.Row():
        paper_top = gr.Label(label="Top 5 · paper wiring", num_top_classes=5)
        article_top = gr.Label(label="Top 5 · article wiring", num_top_classes=5)
    comparison = gr.Markdown(elem_id="explore-diff-text")
    return ArticleView(intro, wiring, compare, differences, paper_top, article_top, comparison)


def build(ctx: ExploreContext, tab: gr.Tab) -> ArticleView:
    view = _layout()

    def fill(described: Described) -> tuple:
        loaded = described.loaded
        return (ctx.figures.get(figures.block_view_figure, loaded, described.theme, differences=True),
                text.article_intro(loaded))

    ctx.fill([view.wiring, view.intro], fill)

    outputs = [view.differences, view.paper_top, view.article_top, view.comparison]

    @errors_as_messages(clear=lambda *args: dict.fromkeys(outputs))  # no answer about another photo stays
    def on_compare(key: Any, payload: Any, client_value: Any):
        if payload is None:
            raise UserError(text.NO_COMPARE_IMAGE)
        result = ctx.service.compare(key, payload)
        last = result.differences[-1]
        resized = [d.block for d in result.differences if d.resized]
        return (figures.difference_figure([dataclasses.asdict(d) for d in result.differences],
                                          theme=figures.theme_of(client_value)),
                dict(result.paper_top), dict(result.article_top),
                text.comparison(result.paper_top, result.article_top, last.relative_l2, last.cosine, resized))

    view.compare.click(on_compare, [ctx.photo.record_key, ctx.photo.image, ctx.client], outputs, preprocess=False,
                       api_visibility="private", concurrency_id="explore-forward", concurrency_limit=2)
    return view


SUB_TAB = SubTab(id="article", title="Article vs paper", elem_id="explore-article-tab",
                 teaser="the article's wiring against the paper's", build=build)
