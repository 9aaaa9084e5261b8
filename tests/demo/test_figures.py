"""The Explore tab's Plotly figures, built from a real `describe()` of the 299×299 reference model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import plotly.graph_objects as go
import pytest

from demo.ui import figures
from xception_core.runtime.introspection import describe


@pytest.fixture(scope="module")
def description(paper_model):
    return describe(paper_model)


def _roundtrip(fig: go.Figure) -> dict:
    """What Gradio sends the browser (`gr.Plot` calls `to_json()`)."""
    return json.loads(fig.to_json())


def _node_trace(fig: go.Figure) -> go.Scatter:
    return next(t for t in fig.data if t.name == "blocks")


def test_block_view_hover_shows_shapes_params_and_macs(description, paper_model):
    fig = figures.block_view_figure(description)
    nodes = _node_trace(fig)
    assert list(nodes.text) == ["in"] + [str(i) for i in range(1, 15)] + ["head"]
    hover = dict(zip(["input"] + [b.name for b in description.blocks], nodes.hovertext))
    assert "147×147×64" in hover["block1"]
    assert "19×19×728" in hover["block4"] and "10×10×2048" in hover["block14"]
    b4 = description.block("block4")
    assert f"parameters: {b4.params:,} (learned {b4.learned_params:,}" in hover["block4"]
    assert f"({b4.macs:,})" in hover["block4"] and "1×1 conv, stride 2" in hover["block4"]
    assert "shortcut: identity" in hover["block7"]
    assert "299×299×3" in hover["input"]
    # Shortcut arcs: four 1×1-conv shortcuts (blocks 2, 3, 4, 13) and eight identities (5–12).
    arcs = [s for s in fig.layout.shapes if s.type == "path"]
    assert len(arcs) == 12
    assert sum(s.line.dash == "solid" for s in arcs) == 4 and sum(s.line.dash == "dot" for s in arcs) == 8
    flows = {a.text for a in fig.layout.annotations}
    assert flows >= {"<b>Entry flow</b>", "<b>Middle flow (×8)</b>", "<b>Exit flow</b>", "<b>Head</b>"}
    _roundtrip(fig)


def test_block_view_marks_the_four_article_differences(description):
    fig = figures.block_view_figure(description, differences=True)
    badges = next(t for t in fig.data if t.name == "article differences")
    assert list(badges.text) == ["①", "②", "③", "④"]
    assert "same" in badges.hovertext[0] and "block3, block4" in badges.hovertext[1]
    arcs = [s for s in fig.layout.shapes if s.type == "path"]
    assert len(arcs) == 12 + 2  # the article's two entry shortcuts (blocks 3 and 4)
    nodes = _node_trace(fig)
    outlined = [name for name, width in zip(["input"] + [b.name for b in description.blocks], nodes.marker.line.width)
                if width == 3]
    assert outlined == ["block1", "block3", "block4"] + [f"block{i}" for i in range(5, 13)] + ["block14"]
    assert "③ ReLU before each middle-flow sum" in nodes.hovertext[6]  # block6
    _roundtrip(fig)


def test_resolution_ladder(description):
    fig = figures.resolution_figure(description)
    assert "299 → 147 → 74 → 37 → 19 → 10" in fig.layout.title.text
    bars = next(t for t in fig.data if t.type == "bar")
    line = next(t for t in fig.data if t.type == "scatter")
    assert list(bars.x) == ["input"] + [f"block{i}" for i in range(1, 15)]
    assert list(bars.y) == [3, 64, 128, 256] + [728] * 9 + [1024, 2048]
    assert list(line.y)[:5] == [299, 147, 74, 37, 19]
    _roundtrip(fig)


def test_cost_totals_equal_the_model(description, paper_model):
    fig = figures.cost_figure(description)
    params, macs = fig.data[0], fig.data[1]
    assert sum(params.y) == description.total_params == paper_model.count_params() == 22_910_480
    assert sum(macs.y) == description.total_macs
    assert abs(sum(macs.y) - 8.36e9) / 8.36e9 < 0.01
    assert "22,910,480 parameters" in fig.layout.title.text and "8.36 G" in fig.layout.title.text
    assert "22,855,952 learned" in fig.layout.title.text
    treemap = figures.cost_figure(description, kind="treemap").data[0]
    roots = [v for v, parent in zip(treemap.values, treemap.parents) if parent == ""]
    assert sum(roots) == description.total_params
    leaves = [v for v, parent in zip(treemap.values, treemap.parents) if parent]
    assert sum(leaves) == description.total_params
    assert len(set(treemap.ids)) == len(treemap.ids)  # plotly.js draws nothing when ids repeat
    assert set(treemap.parents) - {""} <= set(treemap.ids)
    with pytest.raises(ValueError, match="kind must be 'bar' or 'treemap'"):
        figures.cost_figure(description, kind="pie")


def test_histogram_figure():
    counts, edges = np.array([5, 0, 3]), np.array([0.0, 1.0, 2.0, 3.0])
    fig = figures.histogram_figure(counts, edges, title="block1 activations", zero_fraction=0.25, after_relu=True)
    bar = fig.data[0]
    assert list(bar.x) == [0.5, 1.5, 2.5] and list(bar.y) == [5, 0, 3] and list(bar.width) == [1.0, 1.0, 1.0]
    assert "25.0% exactly zero" in fig.layout.title.text and fig.layout.yaxis.type == "log"
    fig = figures.histogram_figure(counts, edges, zero_fraction=0.0, after_relu=False, log_y=False)
    assert "zeros not meaningful" in fig.layout.title.text and fig.layout.yaxis.type == "linear"
    with pytest.raises(ValueError, match="len\\(edges\\) == len\\(counts\\) \\+ 1"):
        figures.histogram_figure(counts, edges[:-1])
    _roundtrip(fig)


def test_difference_figure():
    from xception_core.runtime.activations import BlockDifference

    rows = [dataclasses.asdict(BlockDifference("block1", (147, 147, 64), (150, 150, 64), True, 0.4, 0.9, 0.1, 0.1,
                                               ("stem_padding",))),
            dataclasses.asdict(BlockDifference("block2", (74, 74, 128), (75, 75, 128), True, 0.5, 0.8, 0.0, 0.0, ()))]
    fig = figures.difference_figure(rows)
    bar = fig.data[0]
    assert list(bar.x) == ["block1", "block2"] and list(bar.y) == [0.4, 0.5]
    assert list(bar.text) == ["①", ""]
    assert "resized" in bar.hovertext[0] and "147×147×64" in bar.hovertext[0] and "150×150×64" in bar.hovertext[0]
    assert "earlier blocks" in bar.hovertext[1]
    assert bar.marker.color[0] != bar.marker.color[1]
    _roundtrip(fig)


def test_number_formats():
    assert figures.fmt_count(22910480) == "22,910,480"
    assert figures.fmt_macs(8.36e9) == "8.36 G" and figures.fmt_macs(2.5e6) == "2.50 M" and figures.fmt_macs(12) == "12"
    assert figures.shape_text((147, 147, 64)) == "147×147×64" and figures.shape_text((None, 3)) == "?×3"


def test_theme_comes_from_the_browsers_report_and_nothing_else():
    assert figures.theme_of({"dark": True, "width": 390}) == figures.Theme(dark=True, narrow=True)
    assert figures.theme_of({"dark": False, "width": 1366}) == figures.LIGHT
    for odd in (None, "dark", {"dark": "yes", "width": "390"}, {"width": True}, {"width": -5}):
        assert figures.theme_of(odd) == figures.LIGHT


@pytest.mark.parametrize("dark", [False, True])
def test_figures_sit_on_the_page_background_in_both_themes(description, dark):
    theme = figures.Theme(dark=dark)
    made = [figures.block_view_figure(description, theme=theme), figures.resolution_figure(description, theme=theme),
            figures.cost_figure(description, theme=theme),
            figures.histogram_figure([1, 2], [0.0, 1.0, 2.0], theme=theme)]
    for fig in made:
        layout = fig.layout
        assert layout.template.layout.paper_bgcolor == "rgba(0,0,0,0)"
        assert layout.template.layout.plot_bgcolor == "rgba(0,0,0,0)"
        assert layout.font.color == theme.ink
    assert figures.Theme(dark=True).ink != figures.LIGHT.ink


def test_phone_figures_put_legends_below_and_drop_the_crowded_labels(description):
    narrow = figures.Theme(narrow=True)
    view = figures.block_view_figure(description, differences=True, theme=narrow)
    assert view.layout.legend.y < 0 and view.layout.legend.yanchor == "top"
    assert not any(t.mode == "text" and t.y and t.y[0] == -0.42 for t in view.data)  # no shape labels
    assert figures.block_view_figure(description).layout.legend.y > 1
    ladder = figures.resolution_figure(description, theme=narrow)
    bars = next(t for t in ladder.data if t.type == "bar")
    assert bars.text is None  # channel counts live in the hover and on the right axis, not on the line's labels
    assert ladder.layout.legend.y < 0


@pytest.mark.parametrize("theme", [figures.LIGHT, figures.Theme(dark=True, narrow=True)])
def test_one_operations_figures_show_the_numbers_given_on_the_pages_background(theme):
    fig = figures.contributions_figure([7, 3], [2.0, -1.0], [0.5, 0.25], [1.0, -0.25], 0.125, 10, 0.0, 0.875,
                                       layer="block5_sepconv1", channel=4, theme=theme)
    bars = fig.data[0]
    assert list(bars.y) == ["#7", "#3", "10 others"] and list(bars.x) == [1.0, -0.25, 0.125]  # no bias bar at 0
    assert bars.marker.color[0] != bars.marker.color[1]  # a negative contribution in another colour
    assert "0.875" in fig.layout.title.text and fig.layout.yaxis.autorange == "reversed"  # largest on top
    macs = figures.macs_figure(531, 42_929, 386_358, layer="block5_sepconv1", grid=(9, 9), theme=theme)
    assert [list(t.x) for t in macs.data] == [[531, 0], [42_929, 0], [0, 386_358]] and macs.layout.barmode == "stack"
    assert "8.9× fewer" in macs.layout.title.text
    for made in (fig, macs):
        assert made.layout.template.layout.paper_bgcolor == "rgba(0,0,0,0)" and made.layout.font.color == theme.ink
        assert made.layout.legend.y is None or made.layout.legend.y < 0  # never under Plotly's tool bar


def test_the_knockout_figures_plot_the_numbers_given():
    from demo.ui.figures import LIGHT, knockout_change_figure, lesion_figure

    rows = [{"block": "block7", "relative_change": 0.25, "intact_mean": 0.1, "knocked_mean": 0.2},
            {"block": "block14", "relative_change": 0.05, "intact_mean": 1.0, "knocked_mean": 1.1}]
    bars = knockout_change_figure(rows, LIGHT).data[0]
    assert list(bars.x) == ["block7", "block14"] and list(bars.y) == [0.25, 0.05]
    table = {"photos": 9, "intact_accuracy": 1.0, "rows": [
        {"block": "block5", "shortcut": "identity", "accuracy": 0.75, "agreement": 0.5},
        {"block": "block13", "shortcut": "conv", "accuracy": 0.125, "agreement": 0.25}]}
    accuracy, agreement = lesion_figure(table, LIGHT).data
    assert list(accuracy.y) == [0.75, 0.125] and list(agreement.y) == [0.5, 0.25]
    assert list(accuracy.customdata) == ["identity shortcut", "conv shortcut"]
