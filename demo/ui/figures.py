"""Plotly figures for the Explore tab: pure functions from a `ModelDescription` or plain numbers
to a `plotly.graph_objects.Figure`. No model math here: every number comes from
`xception_core.runtime.introspection` / `xception_core.runtime.activations`.

Figures use only long-standing Plotly attributes: plotly.py 7 writes them, and Gradio 6.31's
front end draws them with its bundled plotly.js 3.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from demo.fonts import SANS
from xception_core.arch.spec import WIRING_DIFFERENCES, wiring_difference
from xception_core.io.visualize import colorize
from xception_core.runtime.introspection import BlockInfo, ModelDescription

__all__ = [
    "LIGHT",
    "Theme",
    "theme_of",
    "FLOW_COLORS",
    "block_hover",
    "block_view_figure",
    "continuum_figure",
    "contributions_figure",
    "cost_figure",
    "difference_figure",
    "fmt_count",
    "fmt_macs",
    "histogram_figure",
    "macs_figure",
    "placement_figure",
    "resolution_figure",
    "shape_text",
    "timings_figure",
]

FLOW_COLORS: dict[str, str] = {"input": "#9E9E9E", "entry": "#4C78A8", "middle": "#F58518", "exit": "#54A24B",
                               "head": "#B279A2"}
_SHORTCUT_COLORS = {"identity": "#8C8C8C"}  # conv shortcuts take the theme's ink
_ARTICLE_COLOR = "#D62728"

_FONT = dict(family=SANS, size=12)  # the page's own font (served by the app), not a system font


# ------------------------------------------------------------------------------------------ text


def fmt_count(n: int | float) -> str:
    """12345678 → '12,345,678'."""
    return f"{int(n):,}"


def fmt_macs(n: int | float) -> str:
    """Multiply-accumulates with a unit: 8.36e9 → '8.36 G', 1.2e6 → '1.20 M'."""
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def shape_text(shape: Sequence[int | None]) -> str:
    """(147, 147, 64) → '147×147×64'."""
    return "×".join("?" if d is None else str(d) for d in shape)


MIN_TEXT_PX = 11  # the smallest text any chart draws at a desktop's width (readable on a projector)


def _subtitle(text: str) -> str:
    """A title's second line at 12 px (Plotly's <sup> is 70% of the title: 8–10 px, too small to
    read on a projector)."""
    return f"<br><span style='font-size:12px'>{text}</span>"


def _title(text: str, theme: Theme | None = None) -> dict[str, Any]:
    narrow = theme is not None and theme.narrow
    return dict(text=text, x=0.01, xanchor="left", font=dict(size=12 if narrow else 15))


@dataclass(frozen=True)
class Theme:
    """How the page is drawn: its colour scheme and whether the screen is narrow (a phone).

    Figures have transparent backgrounds and take their ink from here, so they sit on the page's
    own background in light and dark mode alike.
    """

    dark: bool = False
    narrow: bool = False

    @property
    def ink(self) -> str:
        return "#E5E7EB" if self.dark else "#333333"

    @property
    def muted(self) -> str:
        return "#A1A1AA" if self.dark else "#555555"

    @property
    def grid(self) -> str:
        return "#3F3F46" if self.dark else "#EBEBEB"


LIGHT = Theme()
NARROW_PX = 700  # screens narrower than this get the phone layout of each figure


def theme_of(client: Any) -> Theme:
    """The `Theme` from what the browser reported ({'dark': bool, 'width': px}); anything else,
    or nothing, is the light desktop theme (the report is a client's word: only read, never trusted)."""
    if not isinstance(client, Mapping):
        return LIGHT
    width = client.get("width")
    narrow = isinstance(width, (int, float)) and not isinstance(width, bool) and 0 < width < NARROW_PX
    return Theme(dark=client.get("dark") is True, narrow=bool(narrow))


# A small template instead of 'plotly_white': applying that one costs ~25 ms per figure (it is
# deep-copied) and adds ~7 KB to every figure's JSON; handlers that draw per request cannot pay that.
@functools.lru_cache(maxsize=4)
def _template(theme: Theme) -> go.layout.Template:
    axis = dict(gridcolor=theme.grid, linecolor=theme.muted, zerolinecolor=theme.grid, automargin=True)
    return go.layout.Template(layout=dict(
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
        colorway=["#4C78A8", "#F58518", "#54A24B", "#E45756", "#B279A2"], xaxis=axis, yaxis=axis,
    ))


def ramp_css() -> str:
    """The feature maps' colour ramp as a CSS `linear-gradient` (left = low), for the colour bar."""
    colours = colorize(np.linspace(0.0, 1.0, 9, dtype=np.float32)[None, :])[0]
    return "linear-gradient(to right, " + ", ".join(f"rgb({r},{g},{b})" for r, g, b in colours) + ")"


def _font(theme: Theme, size: int | None = None) -> dict[str, Any]:
    return dict(_FONT, color=theme.ink, size=size or (11 if theme.narrow else _FONT["size"]))


def _base_layout(fig: go.Figure, height: int, title: str, theme: Theme = LIGHT) -> go.Figure:
    margin = dict(l=40, r=12, t=56, b=40) if theme.narrow else dict(l=60, r=30, t=56, b=40)
    fig.update_layout(height=height, title=_title(title, theme), font=_font(theme), template=_template(theme),
                      margin=margin, hoverlabel=dict(align="left"))
    return fig


def _legend(theme: Theme, y_top: float = 1.02) -> dict[str, Any]:
    """A horizontal legend: above the plot on a desktop, below it on a phone (no clash with the title)."""
    if theme.narrow:
        return dict(orientation="h", x=0, xanchor="left", y=-0.08, yanchor="top")
    return dict(orientation="h", x=1, xanchor="right", y=y_top, yanchor="bottom")


# ------------------------------------------------------------------------------------------ block view


def block_hover(block: BlockInfo, notes: Sequence[str] = ()) -> str:
    """Hover text of one block: flow, output shape, parameters, multiply-accumulates, shortcut."""
    shortcut = {"conv": "1×1 conv, stride 2 (+ BatchNorm)", "identity": "identity", "none": "none"}[block.shortcut]
    lines = [
        f"<b>{block.name}</b> · {block.flow} flow · {block.kind}",
        f"output shape: {shape_text(block.output_shape)}",
        f"parameters: {fmt_count(block.params)} (learned {fmt_count(block.learned_params)}, "
        f"BatchNorm moving statistics {fmt_count(block.moving_statistics_params)})",
        f"multiply-accumulates: {fmt_macs(block.macs)} ({fmt_count(block.macs)})",
    ]
    if block.flow != "head":
        lines.append(f"shortcut: {shortcut}")
    lines += [f"<i>{html.escape(n)}</i>" for n in notes]
    return "<br>".join(lines)


def _arc(x0: float, x1: float, y: float, height: float) -> str:
    """SVG path of a quadratic Bézier from (x0, y) to (x1, y) bulging by `height`."""
    return f"M {x0},{y} Q {(x0 + x1) / 2},{y + 2 * height} {x1},{y}"


def _flow_bands(fig: go.Figure, blocks: Sequence[BlockInfo], x_of: Mapping[str, int], narrow: bool) -> None:
    """A tinted band behind each flow's blocks, named above them."""
    for flow in ("entry", "middle", "exit", "head"):
        xs = [x_of[b.name] for b in blocks if b.flow == flow]
        if not xs:
            continue
        if narrow:
            label = {"middle": f"Middle ×{len(xs)}", "head": "Head"}.get(flow, flow.capitalize())
        else:
            label = {"middle": f"Middle flow (×{len(xs)})", "head": "Head"}.get(flow, f"{flow.capitalize()} flow")
        fig.add_shape(type="rect", x0=min(xs) - 0.45, x1=max(xs) + 0.45, y0=-0.62, y1=0.42, line_width=0,
                      fillcolor=FLOW_COLORS[flow], opacity=0.10, layer="below")
        fig.add_annotation(x=(min(xs) + max(xs)) / 2, y=1.33, text=f"<b>{label}</b>", showarrow=False,
                           font=dict(color=FLOW_COLORS[flow], size=10 if narrow else 13))


def _shortcut_arcs(fig: go.Figure, blocks: Sequence[BlockInfo], x_of: Mapping[str, int], theme: Theme) -> None:
    """Each block's shortcut as an arc above the path, from its input (the previous node) to its
    sum, with one legend entry per kind."""
    seen = set()
    for b in blocks:
        kind = b.shortcut
        if kind == "none":
            continue
        x1 = x_of[b.name]
        color = theme.ink if kind == "conv" else _SHORTCUT_COLORS[kind]
        line = dict(color=color, width=2, dash="solid" if kind == "conv" else "dot")
        fig.add_shape(type="path", path=_arc(x1 - 1, x1, 0.18, 0.38 if kind == "conv" else 0.3), line=line)
        if kind not in seen:
            seen.add(kind)
            name = "shortcut: " + ("1×1 conv /2" if kind == "conv" else "identity")
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line=line))


def _article_shortcuts(fig: go.Figure, x_of: Mapping[str, int]) -> None:
    """The article's entry shortcuts read the previous shortcut: from the top of the previous
    block's shortcut arc (its 1×1 conv output) to this block's sum, skipping its separable convs."""
    line = dict(color=_ARTICLE_COLOR, width=2, dash="dash")
    names = [name for name in wiring_difference("entry_shortcut_from").blocks if name in x_of]
    for name in names:
        x1 = x_of[name]
        start_y = 0.18 + 0.38  # apex of the previous conv-shortcut arc
        fig.add_shape(type="path", path=f"M {x1 - 1.5},{start_y} Q {x1 - 0.6},{1.15} {x1},{0.18}", line=line)
    if names:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="article's entry shortcut", line=line))


def _block_nodes(fig: go.Figure, description: ModelDescription, per_block: Mapping[str, Sequence[str]],
                 selected: str | None, theme: Theme) -> None:
    """A square per node (input, blocks, head) with its hover text; outlined where the article
    differs (red) or selected (ink); on a desktop, each node's output shape under it."""
    narrow, blocks = theme.narrow, description.blocks
    names = ["input"] + [b.name for b in blocks]
    xs = list(range(len(names)))
    hover = [f"<b>input</b><br>{shape_text(description.input_shape)}"]
    hover += [block_hover(b, [wiring_difference(k).label for k in per_block.get(b.name, ())]) for b in blocks]
    labels = ["in"] + [b.name.removeprefix("block") if b.name != "head" else ("H" if narrow else "head")
                       for b in blocks]
    colors = [FLOW_COLORS["input"]] + [FLOW_COLORS.get(b.flow, "#999") for b in blocks]
    outline, widths = [theme.muted] * len(names), [1] * len(names)
    for i, name in enumerate(names):
        if name in per_block:
            outline[i], widths[i] = _ARTICLE_COLOR, 3
        if name == selected:
            outline[i], widths[i] = theme.ink, 4
    fig.add_trace(go.Scatter(
        x=xs, y=[0] * len(names), mode="markers+text", text=labels,
        textfont=dict(color="white", size=10 if narrow else 12), textposition="middle center",
        marker=dict(symbol="square", size=21 if narrow else 34, color=colors, line=dict(color=outline, width=widths)),
        hovertext=hover, hoverinfo="text", showlegend=False, name="blocks",
    ))
    if narrow:  # a phone has no room for the shapes: the hover text carries every one
        return
    shapes = [shape_text(description.input_shape)]
    for b in blocks:
        s = b.output_shape
        shapes.append(f"{s[0]}²<br>×{s[-1]}" if len(s) == 3 and s[0] == s[1] else shape_text(s))
    fig.add_trace(go.Scatter(x=xs, y=[-0.42] * len(names), mode="text", text=shapes,
                             textfont=dict(size=MIN_TEXT_PX, color=theme.muted), hoverinfo="skip",
                             showlegend=False))


def _difference_badges(fig: go.Figure, x_of: Mapping[str, int], narrow: bool) -> None:
    """A numbered badge under the blocks of each of the article's wiring differences."""
    xs, texts, hovers = [], [], []
    for d in WIRING_DIFFERENCES:
        at = [x_of[n] for n in d.blocks if n in x_of]
        if not at:
            continue
        xs.append((min(at) + max(at)) / 2)
        texts.append(d.label[0])
        hovers.append(f"<b>{html.escape(d.label)}</b><br>" + "<br>".join(_wrap(d.note, 70))
                      + f"<br>blocks: {', '.join(d.blocks)}")
    fig.add_trace(go.Scatter(x=xs, y=[-1.05] * len(xs), mode="text", text=texts,
                             textfont=dict(size=15 if narrow else 20, color=_ARTICLE_COLOR), hovertext=hovers,
                             hoverinfo="text", showlegend=False, name="article differences"))


def block_view_figure(
    description: ModelDescription,
    *,
    differences: bool = False,
    selected: str | None = None,
    theme: Theme = LIGHT,
) -> go.Figure:
    """The paper's block diagram as a path: input, stem, entry blocks 2–4, middle 5–12, exit 13–14, head.

    Shortcuts are arcs above the path (red: 1×1 stride-2 conv; grey dashed: identity). Hovering a
    block shows its output shape, parameters and multiply-accumulates.

    Args:
        description: `describe(model)`.
        differences: Mark the article's four wiring differences (`WIRING_DIFFERENCES`) with
            numbered badges, red outlines and, for the entry shortcuts, the article's arcs.
        selected: A block name to outline (the one whose activations are shown).
        theme: Colours and layout for the page (a phone gets smaller nodes, no shape labels, and
            the legend below).
    """
    narrow, blocks = theme.narrow, description.blocks
    x_of = {name: i for i, name in enumerate(["input"] + [b.name for b in blocks])}
    per_block = {b.name: b.wiring_differences for b in blocks if differences and b.wiring_differences}
    fig = go.Figure()
    _flow_bands(fig, blocks, x_of, narrow)
    fig.add_trace(go.Scatter(x=list(x_of.values()), y=[0] * len(x_of), mode="lines",  # the main path
                             line=dict(color=theme.muted, width=2), hoverinfo="skip", showlegend=False))
    _shortcut_arcs(fig, blocks, x_of, theme)
    if differences:
        _article_shortcuts(fig, x_of)
    _block_nodes(fig, description, per_block, selected, theme)
    if differences:
        _difference_badges(fig, x_of, narrow)
    fig.update_xaxes(visible=False, range=[-0.7, len(x_of) - 0.3])
    fig.update_yaxes(visible=False, range=[-1.35 if differences else -0.8, 1.5])
    title = f"Xception block by block · {description.variant} wiring · input {shape_text(description.input_shape)}"
    if narrow:
        title = f"Block by block · {description.variant} wiring<br>input {shape_text(description.input_shape)}"
    _base_layout(fig, (330 if differences else 290) + (50 if narrow else 0), title, theme)
    fig.update_layout(legend=_legend(theme, 1.13), hovermode="closest",
                      margin=dict(l=4, r=4, t=64, b=60 if narrow else 10))
    return fig


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in html.escape(text).split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


# ------------------------------------------------------------------------------------------ ladder


def resolution_figure(description: ModelDescription, theme: Theme = LIGHT) -> go.Figure:
    """Spatial size (line, left axis, labelled where it changes) and channel width (bars, right
    axis; values in the hover, so no label sits on the line's)."""
    blocks = [b for b in description.blocks if len(b.output_shape) == 3]
    names = ["input"] + [b.name for b in blocks]
    sides = [description.input_shape[0]] + [b.output_shape[0] for b in blocks]
    channels = [description.input_shape[-1]] + [b.output_shape[-1] for b in blocks]
    ladder = [s for i, s in enumerate(sides) if i == 0 or s != sides[i - 1]]
    colors = [FLOW_COLORS["input"]] + [FLOW_COLORS[b.flow] for b in blocks]
    fig = go.Figure()
    if theme.narrow:
        names = ["in"] + [b.name.removeprefix("block") if b.name.startswith("block") else b.name for b in blocks]
    fig.add_trace(go.Bar(x=names, y=channels, name="channels", marker=dict(color=colors, opacity=0.45),
                         yaxis="y2", hovertemplate="%{x}: %{y} channels<extra></extra>"))
    fig.add_trace(go.Scatter(x=names, y=sides, name="height = width", mode="lines+markers+text", yaxis="y",
                             line=dict(color=theme.ink, width=3, shape="hv"), marker=dict(size=7),
                             text=[str(s) if i == 0 or s != sides[i - 1] else "" for i, s in enumerate(sides)],
                             textposition="top right", textfont=dict(size=12, color=theme.ink),
                             hovertemplate="%{x}: %{y}×%{y}<extra></extra>"))
    title = "Resolution ladder " + " → ".join(str(s) for s in ladder) + ("<br>" if theme.narrow else " ") + "and channel widths"
    _base_layout(fig, 380 if theme.narrow else 360, title, theme)
    # On a phone the last sizes (18, 9, 5) sit a few pixels apart near zero and their labels run into
    # each other: a log axis gives every halving the same height.
    # (ticks at 10 and 100 only: Plotly's small in-between 2s and 5s read as more labels.)
    yaxis = (dict(title=dict(text="height = width (px, log scale)"), type="log", dtick=1,
                  range=[math.log10(min(sides)) - 0.2, math.log10(max(sides)) + 0.25])
             if theme.narrow else
             dict(title=dict(text="height = width (pixels)"), rangemode="tozero", range=[0, max(sides) * 1.15]))
    fig.update_layout(
        yaxis=yaxis,
        yaxis2=dict(title=dict(text="channels"), overlaying="y", side="right", rangemode="tozero",
                    range=[0, max(channels) * 1.15], showgrid=False),
        legend=_legend(theme), bargap=0.25, xaxis=dict(type="category"),
        margin=dict(l=44, r=44, t=64, b=70) if theme.narrow else dict(l=60, r=60, t=56, b=40),
    )
    return fig


# ------------------------------------------------------------------------------------------ cost


def cost_figure(description: ModelDescription, kind: str = "bar", theme: Theme = LIGHT) -> go.Figure:
    """Parameters and multiply-accumulates per block; the title carries the model's totals.

    Args:
        description: `describe(model)`.
        kind: 'bar' (two rows of bars) or 'treemap' (parameters, flow → block).
    """
    blocks = list(description.blocks)
    title = "Parameters and cost per block" + _subtitle(
        f"total {fmt_count(description.total_params)} parameters ({fmt_count(description.learned_params)} "
        f"learned) · {fmt_macs(description.total_macs)} multiply-accumulates per "
        f"{shape_text(description.input_shape[:2])} image")
    if theme.narrow:
        title = title.replace(" · ", "<br>")
    hover = [block_hover(b) for b in blocks]
    if kind == "treemap":
        flows = list(dict.fromkeys(b.flow for b in blocks))
        # Flow ids get a prefix: the head is both a "flow" and a block, and plotly.js draws
        # nothing at all when two sectors share an id.
        ids = [f"flow:{f}" for f in flows] + [b.name for b in blocks]
        parents = [""] * len(flows) + [f"flow:{b.flow}" for b in blocks]
        values = [sum(b.params for b in blocks if b.flow == f) for f in flows] + [b.params for b in blocks]
        texts = [f"{f} flow" if f != "head" else "head" for f in flows] + [b.name for b in blocks]
        hovers = [f"<b>{t}</b><br>{fmt_count(v)} parameters" for t, v in zip(texts[: len(flows)], values)] + hover
        fig = go.Figure(go.Treemap(
            ids=ids, labels=texts, parents=parents, values=values, branchvalues="total",
            marker=dict(colors=[FLOW_COLORS.get(f, "#999") for f in flows + [b.flow for b in blocks]]),
            hovertext=hovers, hoverinfo="text", texttemplate="%{label}<br>%{value:,}",
        ))
        _base_layout(fig, 420, title.replace("Parameters and cost per block", "Parameters per block (area)"), theme)
        return fig
    if kind != "bar":
        raise ValueError(f"kind must be 'bar' or 'treemap', got {kind!r}")
    names = [b.name.removeprefix("block") if theme.narrow else b.name for b in blocks]
    colors = [FLOW_COLORS.get(b.flow, "#999") for b in blocks]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("parameters", "multiply-accumulates per image"))
    fig.add_trace(go.Bar(x=names, y=[b.params for b in blocks], marker_color=colors, name="parameters",
                         hovertext=hover, hoverinfo="text", showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[b.macs for b in blocks], marker_color=colors, name="multiply-accumulates",
                         hovertext=hover, hoverinfo="text", showlegend=False), row=2, col=1)
    _base_layout(fig, 460, title, theme)  # bars take the block view's flow colours; no legend needed
    fig.update_layout(bargap=0.2, margin=dict(l=44, r=8, t=96, b=40) if theme.narrow else dict(l=60, r=20, t=80, b=40))
    fig.update_annotations(font=dict(color=theme.ink))
    fig.update_xaxes(type="category")  # a phone's short names ('1', '2', …) are names, not numbers
    return fig


# ------------------------------------------------------------------------------------------ activations


def histogram_figure(
    counts: Sequence[int],
    edges: Sequence[float],
    *,
    title: str = "Activation histogram",
    zero_fraction: float | None = None,
    after_relu: bool = True,
    log_y: bool = True,
    theme: Theme = LIGHT,
) -> go.Figure:
    """A block's activation histogram (counts per bin, log scale by default: ReLU outputs pile up at 0).

    Args:
        counts: (bins,) counts.
        edges: (bins + 1,) bin edges.
        zero_fraction: Share of exact zeros, noted in the title when the output is a ReLU's.
        after_relu: Whether the output comes from a ReLU (else zeros are not meaningful).
    """
    counts, edges = [int(c) for c in counts], [float(e) for e in edges]
    if len(edges) != len(counts) + 1:
        raise ValueError(f"need len(edges) == len(counts) + 1, got {len(edges)} and {len(counts)}")
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    if zero_fraction is not None:
        title += _subtitle(f"ReLU output: {zero_fraction:.1%} exactly zero" if after_relu
                           else "a sum / BatchNorm output (no ReLU): zeros not meaningful")
    # Built in one constructor call: drawn per request, and each update_layout() costs milliseconds.
    return go.Figure(
        data=[go.Bar(x=centers, y=counts, width=widths, marker=dict(color="#4C78A8", line=dict(width=0)),
                     customdata=list(zip(edges[:-1], edges[1:])),
                     hovertemplate="[%{customdata[0]:.3g}, %{customdata[1]:.3g}): %{y:,} values<extra></extra>")],
        layout=dict(template=_template(theme), height=320, title=_title(title) | dict(font=dict(size=13)),
                    font=_font(theme),
                    bargap=0, margin=dict(l=60, r=20, t=70, b=40), hoverlabel=dict(align="left"),
                    xaxis=dict(title=dict(text="activation")),
                    yaxis=dict(title=dict(text="count" + (" (log)" if log_y else "")),
                               type="log" if log_y else "linear")),
    )


def difference_figure(rows: Sequence[Mapping[str, Any]], theme: Theme = LIGHT) -> go.Figure:
    """Per-block relative L2 difference between the article's and the paper's outputs.

    Args:
        rows: One mapping per block with 'block', 'relative_l2', 'cosine', 'resized',
            'paper_shape', 'article_shape' and 'wiring' (Variant fields that differ inside the
            block), e.g. `dataclasses.asdict(BlockDifference)`.
    """
    names = [r["block"].removeprefix("block") if theme.narrow else r["block"] for r in rows]
    values = [float(r["relative_l2"]) for r in rows]
    colors = [_ARTICLE_COLOR if r["wiring"] else "#9E9E9E" for r in rows]
    hover = []
    for r in rows:
        lines = [f"<b>{r['block']}</b>", f"relative L2 difference: {float(r['relative_l2']):.3f}",
                 f"cosine similarity: {float(r['cosine']):.3f}",
                 f"paper {shape_text(r['paper_shape'])} · article {shape_text(r['article_shape'])}"]
        if r["resized"]:
            lines.append("<i>sizes differ: the article's map was resized to the paper's grid</i>")
        lines += [f"wired differently here: {wiring_difference(w).label}" for w in r["wiring"]]
        if not r["wiring"]:
            lines.append("wired the same here: the difference comes from earlier blocks")
        hover.append("<br>".join(lines))
    badges = [" ".join(wiring_difference(w).label[0] for w in r["wiring"]) for r in rows]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colors, text=badges, textposition="outside",
                           textfont=dict(color=_ARTICLE_COLOR, size=14), hovertext=hover, hoverinfo="text",
                           showlegend=False))
    fig.add_trace(go.Bar(x=[None], y=[None], marker_color=_ARTICLE_COLOR, name="block wired differently"))
    fig.add_trace(go.Bar(x=[None], y=[None], marker_color="#9E9E9E", name="same wiring (inherits the difference)"))
    title = "Article vs paper, same weights and image: ‖article − paper‖ / ‖paper‖ per block"
    if theme.narrow:
        title = "Article vs paper, same weights and image:<br>‖article − paper‖ / ‖paper‖ per block"
    _base_layout(fig, 380 if theme.narrow else 340, title, theme)
    fig.update_layout(legend=_legend(theme), title=dict(font=dict(size=12 if theme.narrow else 13)),
                      xaxis=dict(type="category"))
    fig.update_yaxes(title=dict(text="relative L2 difference"), rangemode="tozero",
                     range=[0, max(values + [0.1]) * 1.2])
    return fig


# ------------------------------------------------------------------------------------------ one operation

_POSITIVE, _NEGATIVE, _REST = "#4C78A8", "#E45756", "#9E9E9E"


def contributions_figure(channels: Sequence[int], values: Sequence[float], weights: Sequence[float],
                         products: Sequence[float], rest: float, rest_count: int, bias: float, total: float, *,
                         layer: str, channel: int, theme: Theme = LIGHT) -> go.Figure:
    """The pointwise (1×1) step as a ranked bar: each shown input channel's contribution (its
    depthwise value × its weight), largest |contribution| on top, the rest summed in one bar, the
    bias (when there is one); the title carries their sum, the conv's output.

    Args:
        channels, values, weights, products: (n,) the ranked input channels, their depthwise values,
            1×1 weights and products (`xception_core.runtime.operation.PointwiseStep.top`).
        rest, rest_count: Sum of the other contributions, and how many those are.
        bias, total: The conv's bias and its output (every contribution plus the bias).
    """
    labels = [f"#{c}" for c in channels]
    hover = [f"input channel #{c}<br>depthwise value {v:.4g} × weight {w:.4g}<br>= <b>{p:+.4g}</b>"
             for c, v, w, p in zip(channels, values, weights, products)]
    xs, colours = [float(p) for p in products], [_POSITIVE if p >= 0 else _NEGATIVE for p in products]
    if rest_count:
        labels.append(f"{rest_count} others")
        xs.append(float(rest))
        colours.append(_REST)
        hover.append(f"the other {rest_count} input channels together<br>= <b>{rest:+.4g}</b>")
    if bias:
        labels.append("bias")
        xs.append(float(bias))
        colours.append(_REST)
        hover.append(f"the conv's bias {bias:+.4g}")
    title = (f"Pointwise 1×1 into channel #{channel}: {len(channels)} largest contributions + the rest"
             + _subtitle(f"{layer} = sum of all bars = <b>{total:.4g}</b>"))
    if theme.narrow:
        title = (f"Pointwise 1×1 into #{channel}:<br>largest contributions + the rest"
                 + _subtitle(f"sum = <b>{total:.4g}</b>"))
    # Built in one constructor call: drawn on every click.
    return go.Figure(
        data=[go.Bar(x=xs, y=labels, orientation="h", marker=dict(color=colours, line=dict(width=0)),
                     text=[f"{x:+.3g}" for x in xs], textposition="auto", hovertext=hover, hoverinfo="text",
                     cliponaxis=False)],
        layout=dict(template=_template(theme), font=_font(theme), title=_title(title, theme),
                    height=max(260, 90 + 24 * len(xs)), hoverlabel=dict(align="left"), bargap=0.2,
                    # Plotly shrinks a value that does not fit inside its bar (to ~7 px): never below this.
                    uniformtext=dict(minsize=MIN_TEXT_PX, mode="show"),
                    margin=dict(l=70, r=16, t=78, b=40) if theme.narrow else dict(l=90, r=30, t=70, b=40),
                    xaxis=dict(title=dict(text="contribution to the output (value × weight)"), zeroline=True,
                               zerolinecolor=theme.muted),
                    yaxis=dict(type="category", autorange="reversed")),
    )


def macs_figure(depthwise_macs: int, pointwise_macs: int, standard_macs: int, *, layer: str,
                grid: tuple[int, int], theme: Theme = LIGHT) -> go.Figure:
    """This conv's multiply-accumulates over its whole output grid: depthwise + pointwise (stacked)
    against the standard conv with the same kernel and channels."""
    separable = depthwise_macs + pointwise_macs
    names = ["separable", "standard"]
    title = (f"{layer} over its {grid[0]}×{grid[1]} grid: {fmt_macs(separable)} vs {fmt_macs(standard_macs)} "
             f"multiply-accumulates ({standard_macs / separable:.1f}× fewer)")
    if theme.narrow:
        title = (f"{layer}, {grid[0]}×{grid[1]} grid:<br>{fmt_macs(separable)} vs {fmt_macs(standard_macs)} "
                 f"MACs ({standard_macs / separable:.1f}× fewer)")
    bar = lambda x, name, colour: go.Bar(  # noqa: E731
        x=x, y=names, name=name, orientation="h", marker=dict(color=colour, line=dict(width=0)),
        hovertemplate=f"{name}: %{{x:,}} multiply-accumulates<extra></extra>")
    return go.Figure(
        data=[bar([depthwise_macs, 0], "depthwise 3×3", FLOW_COLORS["entry"]),
              bar([pointwise_macs, 0], "pointwise 1×1", FLOW_COLORS["middle"]),
              bar([0, standard_macs], "standard 3×3 conv", _REST)],
        # The legend under the bars at every width: above them it would sit under Plotly's tool bar.
        layout=dict(template=_template(theme), font=_font(theme), title=_title(title, theme), barmode="stack",
                    height=300 if theme.narrow else 250, hoverlabel=dict(align="left"),
                    legend=dict(orientation="h", x=0, xanchor="left", y=-0.22, yanchor="top"),
                    margin=dict(l=76, r=16, t=70, b=96) if theme.narrow else dict(l=84, r=30, t=56, b=70),
                    yaxis=dict(type="category")),
    )


# ------------------------------------------------------------------------------------------ compare

PLACE_COLORS: dict[str, str] = {"stem": "#9E9E9E", "entry flow": FLOW_COLORS["entry"],
                                "middle flow": FLOW_COLORS["middle"], "exit flow": FLOW_COLORS["exit"],
                                "Inception modules": "#E45756", "classifier": FLOW_COLORS["head"]}


def placement_figure(placements: Mapping[str, Sequence[tuple[str, int]]], theme: Theme = LIGHT) -> go.Figure:
    """Where each network's parameters sit: one stacked horizontal bar per network.

    Args:
        placements: {network title: [(place, parameters), ...]} (`demo.services.compare.placement`).
    """
    names = list(placements)
    fig = go.Figure()
    legend: set[str] = set()  # each place once in the legend (both networks have a classifier)
    for network, places in placements.items():
        total = sum(p for _, p in places)
        for place, params in places:
            fig.add_trace(go.Bar(
                y=[network], x=[params], orientation="h", name=place, legendgroup=place,
                marker=dict(color=PLACE_COLORS.get(place, "#999"), line=dict(width=0)),
                showlegend=place not in legend, text=[f"{100 * params / total:.0f}%" if params / total >= 0.06 else ""],
                textposition="inside", insidetextanchor="middle",
                hovertemplate=f"{network} · {place}: %{{x:,}} parameters ({100 * params / total:.1f}%)<extra></extra>"))
            legend.add(place)
    _base_layout(fig, 300 if theme.narrow else 250, "Where the parameters sit" + _subtitle(
        "all parameters, BatchNorm's moving statistics included"), theme)
    fig.update_layout(barmode="stack", legend=dict(orientation="h", x=0, xanchor="left", y=-0.25, yanchor="top"),
                      margin=dict(l=90, r=12, t=60, b=110) if theme.narrow else dict(l=110, r=30, t=60, b=80),
                      yaxis=dict(type="category", categoryorder="array", categoryarray=names[::-1]),
                      xaxis=dict(title=dict(text="parameters")))
    return fig


def timings_figure(times_ms: Mapping[str, Sequence[float]], medians_ms: Mapping[str, float],
                   theme: Theme = LIGHT) -> go.Figure:
    """Each network's forward times on the same photo (ms, one tick per round) and their medians
    (`demo.services.compare.Timings`), both keyed by the network's title."""
    fig = go.Figure()
    colours = [FLOW_COLORS["entry"], "#E45756"]
    for (network, times), colour in zip(times_ms.items(), colours):
        median = medians_ms[network]
        fig.add_trace(go.Bar(y=[network], x=[median], orientation="h", name=f"{network} median",
                             marker=dict(color=colour, line=dict(width=0)), opacity=0.55, showlegend=False,
                             hovertemplate=f"{network}: median %{{x:.1f}} ms<extra></extra>",
                             text=[f"{median:.0f} ms"], textposition="outside"))
        fig.add_trace(go.Scatter(y=[network] * len(times), x=list(times), mode="markers", showlegend=False,
                                 marker=dict(color=theme.ink, size=7, symbol="line-ns-open"),
                                 hovertemplate=f"{network}: %{{x:.1f}} ms<extra></extra>"))
    _base_layout(fig, 230, "One forward, same photo, this host" + _subtitle(
        "bar: median · ticks: each round, the two networks alternated"), theme)
    fig.update_layout(margin=dict(l=90, r=40, t=64, b=44) if theme.narrow else dict(l=110, r=60, t=64, b=44),
                      xaxis=dict(title=dict(text="milliseconds"), rangemode="tozero"),
                      yaxis=dict(type="category", autorange="reversed"))
    return fig


def continuum_figure(segments: Sequence[int], params: Sequence[int], macs: Sequence[int], *, xception_params: int,
                     xception_macs: int, in_channels: int, out_channels: int, side: int,
                     theme: Theme = LIGHT) -> go.Figure:
    """The paper's Figures 1–4 as a curve: parameters and MACs of a 1×1 conv then a 3×3 conv over
    1 … C channel segments, with Xception's depthwise-then-pointwise as a dashed line."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("parameters", f"multiply-accumulates ({side}×{side} output)"))
    for col, values, ours in ((1, params, xception_params), (2, macs, xception_macs)):
        fig.add_trace(go.Scatter(
            x=list(segments), y=list(values), mode="lines+markers", name="1×1 conv, then 3×3 over segments",
            legendgroup="inception", showlegend=col == 1, line=dict(color="#E45756"),
            hovertemplate="%{x} segments: %{y:,}<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=[segments[0], segments[-1]], y=[ours, ours], mode="lines", name="Xception: depthwise 3×3, then 1×1",
            legendgroup="xception", showlegend=col == 1, line=dict(color=FLOW_COLORS["entry"], dash="dash"),
            hovertemplate=f"depthwise then pointwise: {ours:,}<extra></extra>"), row=1, col=col)
    _base_layout(fig, 380 if theme.narrow else 340, "From a regular conv to a depthwise separable one" + _subtitle(
        f"{in_channels} → {out_channels} channels · 1 segment = regular 3×3 · {out_channels} = one per channel"), theme)
    fig.update_xaxes(type="log", title=dict(text="channel segments"))
    fig.update_yaxes(type="log")
    fig.update_annotations(font=dict(color=theme.ink))
    fig.update_layout(legend=dict(orientation="h", x=0, xanchor="left", y=-0.3, yanchor="top"),
                      margin=dict(l=50, r=10, t=90, b=120) if theme.narrow else dict(l=60, r=30, t=90, b=100))
    return fig


# ------------------------------------------------------------------------------------------ knockouts

_INTACT_COLOR, _KNOCKED_COLOR = "#4C78A8", "#E45756"


def knockout_change_figure(rows: Sequence[Mapping[str, Any]], theme: Theme = LIGHT) -> go.Figure:
    """How far each block's output moved under the knockouts: ‖knocked − intact‖ / ‖intact‖.

    Args:
        rows: The `/knockout` answer's 'blocks': {'block', 'relative_change', 'intact_mean',
            'knocked_mean'}, from the first changed block on.
    """
    names = [r["block"].removeprefix("block") if theme.narrow else r["block"] for r in rows]
    values = [float(r["relative_change"]) for r in rows]
    hover = [f"<b>{r['block']}</b><br>relative change: {float(r['relative_change']):.4f}<br>"
             f"mean output: {float(r['intact_mean']):.4f} intact · {float(r['knocked_mean']):.4f} knocked"
             for r in rows]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=_KNOCKED_COLOR, hovertext=hover, hoverinfo="text",
                           showlegend=False))
    title = "Block outputs, knocked vs intact: ‖knocked − intact‖ / ‖intact‖"
    if theme.narrow:
        title = "Block outputs, knocked vs intact:<br>‖knocked − intact‖ / ‖intact‖"
    _base_layout(fig, 340 if theme.narrow else 300, title, theme)
    fig.update_layout(title=dict(font=dict(size=12 if theme.narrow else 13)), xaxis=dict(type="category"))
    fig.update_yaxes(title=dict(text="relative change"), rangemode="tozero", range=[0, max(values + [0.1]) * 1.15])
    return fig


def lesion_figure(table: Mapping[str, Any], theme: Theme = LIGHT) -> go.Figure:
    """The lesion study: top-1 accuracy and agreement with the intact network, per removed branch.

    Args:
        table: `LesionTable.to_json()`: 'intact_accuracy', 'photos' and 'rows' of {'block',
            'shortcut', 'accuracy', 'agreement'}.
    """
    rows = table["rows"]
    names = [r["block"].removeprefix("block") if theme.narrow else r["block"] for r in rows]
    shortcut = [f"{r['shortcut']} shortcut" for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=names, y=[r["accuracy"] for r in rows], mode="lines+markers", name="top-1 accuracy",
                             line=dict(color=_KNOCKED_COLOR), customdata=shortcut,
                             hovertemplate="%{x} removed (%{customdata}): accuracy %{y:.0%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=names, y=[r["agreement"] for r in rows], mode="lines+markers",
                             name="agrees with the intact network", line=dict(color=_INTACT_COLOR, dash="dot"),
                             customdata=shortcut,
                             hovertemplate="%{x} removed (%{customdata}): agreement %{y:.0%}<extra></extra>"))
    fig.add_hline(y=table["intact_accuracy"], line=dict(color=theme.muted, dash="dash"),
                  annotation_text=f"intact {table['intact_accuracy']:.0%}", annotation_position="bottom right")
    title = f"Lesion study: one branch removed at a time ({table['photos']} labelled photos)"
    if theme.narrow:
        title = f"Lesion study: one branch removed<br>at a time ({table['photos']} labelled photos)"
    _base_layout(fig, 380 if theme.narrow else 340, title, theme)
    fig.update_layout(legend=_legend(theme), title=dict(font=dict(size=12 if theme.narrow else 13)),
                      xaxis=dict(type="category", title=dict(text="branch removed")))
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    return fig
