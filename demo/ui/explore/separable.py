"""Explore › Separable convolutions: why Xception is cheap for its size. Every separable conv of
the described model against the standard conv it replaces, and a calculator for any other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from demo.services import UserError
from demo.services.explore import check_int
from demo.ui import text
from demo.ui.cards import table_cards
from demo.ui.explore.context import Described, ExploreContext, SubTab
from demo.ui.figures import fmt_count
from xception_core.runtime.introspection import ModelDescription, separable_cost, separable_layers, separable_totals

CALC_MAX = 100_000
TABLE_LABEL = "Every separable conv of the model vs the standard conv it replaces"
CALC_FIELDS = ("kernel size k", "input channels", "output channels", "output side")


@dataclass(frozen=True)
class SeparableView:
    summary: gr.Markdown
    kernel: gr.Number
    in_channels: gr.Number
    out_channels: gr.Number
    side: gr.Number
    answer: gr.Markdown
    table: gr.Dataframe
    cards: gr.HTML  # the same table as cards, shown instead of it on a phone


def calculator_markdown(kernel: Any, cin: Any, cout: Any, side: Any = 1) -> str:
    """The calculator's answer, or one message per bad value (whole numbers from 1 to CALC_MAX)."""
    values, problems = [], []
    for label, v in zip(CALC_FIELDS, (kernel, cin, cout, side)):
        if v is None or (isinstance(v, str) and not v.strip()):
            problems.append(text.calculator_empty(label, CALC_MAX))
            continue
        try:
            values.append(check_int(v, label, 1, CALC_MAX))
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        return text.calculator_problems(problems)
    return text.calculator(separable_cost(*values[:3], values[3], values[3]))


def separable_table(description: ModelDescription) -> pd.DataFrame:
    """One row per separable conv: its weights and cost against a standard conv's."""
    rows = []
    for name, c in separable_layers(description):
        rows.append([name, f"{c.kernel_size}×{c.kernel_size}", f"{c.in_channels} → {c.out_channels}",
                     f"{c.height}×{c.width}", fmt_count(c.depthwise_params), fmt_count(c.pointwise_params),
                     fmt_count(c.separable_params), fmt_count(c.standard_params), f"{c.ratio:.1f}×",
                     fmt_count(c.depthwise_macs), fmt_count(c.pointwise_macs), fmt_count(c.standard_macs),
                     f"{c.standard_macs / c.separable_macs:.1f}×"])
    return pd.DataFrame(rows, columns=["layer", "kernel", "channels", "output", "depthwise params",
                                       "pointwise params", "separable params", "standard conv params",
                                       "× fewer params", "depthwise MACs", "pointwise MACs", "standard conv MACs",
                                       "× fewer MACs"])


def _layout() -> SeparableView:
    gr.Markdown(text.SEPARABLE_INTRO)
    summary = gr.Markdown()
    with gr.Row(equal_height=True):
        kernel = gr.Number(3, label="kernel size k", precision=None, step=1, scale=1, elem_id="calc-k")
        cin = gr.Number(3, label="input channels", precision=None, step=1, scale=1, elem_id="calc-in")
        cout = gr.Number(64, label="output channels", precision=None, step=1, scale=1, elem_id="calc-out")
        side = gr.Number(1, label="output side (1 = per position)", precision=None, step=1, scale=1,
                         elem_id="calc-side")
    answer = gr.Markdown(calculator_markdown(3, 3, 64, 1), elem_id="explore-calculator")
    table = gr.Dataframe(label=TABLE_LABEL, interactive=False, max_height=360, wrap=True, elem_id="explore-separable")
    cards = gr.HTML(elem_id="explore-separable-cards")
    return SeparableView(summary, kernel, cin, cout, side, answer, table, cards)


def build(ctx: ExploreContext, tab: gr.Tab) -> SeparableView:
    view = _layout()

    def fill(described: Described) -> tuple:
        d = described.description
        table = separable_table(d)
        return table, table_cards(table, TABLE_LABEL), text.separable_summary(d, separable_totals(d))

    ctx.fill([view.table, view.cards, view.summary], fill)
    numbers = [view.kernel, view.in_channels, view.out_channels, view.side]
    for number in numbers:
        number.change(calculator_markdown, numbers, view.answer, api_visibility="private", queue=False)
    return view


SUB_TAB = SubTab(id="separable", title="Separable convolutions", elem_id="explore-separable-tab",
                 teaser="separable convolutions", build=build)
