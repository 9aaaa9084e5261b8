"""Plotly figures for the Explore tab: pure functions from a `ModelDescription` or plain numbers
to a `plotly.graph_objects.Figure`. No model math here: every number comes from
`xception.runtime.introspection` / `xception.runtime.activations`.

Figures use only long-standing Plotly attributes: plotly.py 7 writes them, and Gradio 6.31's
front end draws them with its bundled plotly.js 3.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xception.arch.spec import WIRING_DIFFERENCES, wiring_difference
from xception.runtime.introspection import BlockInfo, ModelDescription

__all__ = [
    "FLOW_COLORS",
    "block_hover",
    "block_view_figure",
    "cost_figure",
    "difference_figure",
    "fmt_count",
    "fmt_macs",
    "histogram_figure",
    "resolution_figure",
    "shape_text",
]

FLOW_COLORS: dict[str, str] = {"input": "#9E9E9E", "entry": "#4C78A8", "middle": "#F58518", "exit": "#54A24B",
                               "head": "#B279A2"}
_SHORTCUT_COLORS = {"conv": "#444444", "identity": "#8C8C8C"}
_ARTICLE_COLOR = "#D62728"

_FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12)


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


def _title(text: str) -> dict[str, Any]:
    return dict(text=text, x=0.01, xanchor="left", font=dict(size=15))


# A small template instead of 'plotly_white': applying that one costs ~25 ms per figure (it is
# deep-copied) and adds ~7 KB to every figure's JSON; handlers that draw per request cannot pay that.
_TEMPLATE = go.layout.Template(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white", colorway=["#4C78A8", "#F58518", "#54A24B", "#E45756", "#B279A2"],
    xaxis=dict(gridcolor="#EBEBEB", linecolor="#BBBBBB", zerolinecolor="#DDDDDD", automargin=True),
    yaxis=dict(gridcolor="#EBEBEB", linecolor="#BBBBBB", zerolinecolor="#DDDDDD", automargin=True),
))


def _base_layout(fig: go.Figure, height: int, title: str) -> go.Figure:
    fig.update_layout(height=height, title=_title(title), font=_FONT, template=_TEMPLATE,
                      margin=dict(l=60, r=30, t=56, b=40), hoverlabel=dict(align="left"))
    return fig


# ------------------------------------------------------------------------------------------ block view


def block_hover(block: BlockInfo, notes: Sequence[str] = ()) -> str:
    """Hover text of one block: flow, output shape, parameters, multiply-accumulates, shortcut."""
    shortcut = {"conv": "1×1 conv, stride 2 (+ BatchNorm)", "identity": "identity", "none": "none"}[block.shortcut]
    lines = [
        f"<b>{block.name}</b> · {block.flow} flow · {block.kind}",
        f"output shape: {shape_text(block.output_shape)}",
        f"parameters: {fmt_count(block.params)} (trainable {fmt_count(block.trainable_params)}, "
        f"non-trainable {fmt_count(block.non_trainable_params)})",
        f"multiply-accumulates: {fmt_macs(block.macs)} ({fmt_count(block.macs)})",
    ]
    if block.flow != "head":
        lines.append(f"shortcut: {shortcut}")
    lines += [f"<i>{html.escape(n)}</i>" for n in notes]
    return "<br>".join(lines)


def _arc(x0: float, x1: float, y: float, height: float) -> str:
    """SVG path of a quadratic Bézier from (x0, y) to (x1, y) bulging by `height`."""
    return f"M {x0},{y} Q {(x0 + x1) / 2},{y + 2 * height} {x1},{y}"


def block_view_figure(
    description: ModelDescription,
    *,
    differences: bool = False,
    selected: str | None = None,
) -> go.Figure:
    """The paper's block diagram as a path: input, stem, entry blocks 2–4, middle 5–12, exit 13–14, head.

    Shortcuts are arcs above the path (red: 1×1 stride-2 conv; grey dashed: identity). Hovering a
    block shows its output shape, parameters and multiply-accumulates.

    Args:
        description: `describe(model)`.
        differences: Mark the article's four wiring differences (`WIRING_DIFFERENCES`) with
            numbered badges, red outlines and, for the entry shortcuts, the article's arcs.
        selected: A block name to outline (the one whose activations are shown).
    """
    shown = WIRING_DIFFERENCES if differences else ()
    blocks = list(description.blocks)
    names = ["input"] + [b.name for b in blocks]
    x_of = {name: i for i, name in enumerate(names)}
    per_block = {b.name: b.wiring_differences for b in blocks if differences and b.wiring_differences}

    fig = go.Figure()
    # Flow bands behind the nodes.
    for flow in ("entry", "middle", "exit", "head"):
        xs = [x_of[b.name] for b in blocks if b.flow == flow]
        if not xs:
            continue
        label = {"middle": f"Middle flow (×{len(xs)})", "head": "Head"}.get(flow, f"{flow.capitalize()} flow")
        fig.add_shape(type="rect", x0=min(xs) - 0.45, x1=max(xs) + 0.45, y0=-0.62, y1=0.42, line_width=0,
                      fillcolor=FLOW_COLORS[flow], opacity=0.10, layer="below")
        fig.add_annotation(x=(min(xs) + max(xs)) / 2, y=1.33, text=f"<b>{label}</b>", showarrow=False,
                           font=dict(color=FLOW_COLORS[flow], size=13))
    # The main path.
    fig.add_trace(go.Scatter(x=list(range(len(names))), y=[0] * len(names), mode="lines",
                             line=dict(color="#555", width=2), hoverinfo="skip", showlegend=False))
    # Shortcut arcs: around each block, from its input (the previous node) to its sum.
    seen = set()
    for b in blocks:
        kind = b.shortcut
        if kind == "none":
            continue
        x1 = x_of[b.name]
        line = dict(color=_SHORTCUT_COLORS[kind], width=2, dash="solid" if kind == "conv" else "dot")
        fig.add_shape(type="path", path=_arc(x1 - 1, x1, 0.18, 0.38 if kind == "conv" else 0.3), line=line)
        if kind not in seen:  # one legend entry per kind
            seen.add(kind)
            name = "shortcut: " + ("1×1 conv /2" if kind == "conv" else "identity")
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line=line))
    # The article's entry shortcuts read the previous shortcut: from the top of the previous
    # block's shortcut arc (its 1×1 conv output) to this block's sum, skipping its separable convs.
    entry_shortcuts = wiring_difference("entry_shortcut_from").blocks if differences else ()
    for name in entry_shortcuts:
        if name in x_of:
            x1 = x_of[name]
            start_y = 0.18 + 0.38  # apex of the previous conv-shortcut arc
            fig.add_shape(type="path", path=f"M {x1 - 1.5},{start_y} Q {x1 - 0.6},{1.15} {x1},{0.18}",
                          line=dict(color=_ARTICLE_COLOR, width=2, dash="dash"))
    if entry_shortcuts:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="article's entry shortcut",
                                 line=dict(color=_ARTICLE_COLOR, width=2, dash="dash")))

    # Nodes with hover text.
    hover = [f"<b>input</b><br>{shape_text(description.input_shape)}"]
    hover += [block_hover(b, [wiring_difference(k).label for k in per_block.get(b.name, ())]) for b in blocks]
    labels = ["in"] + [b.name.removeprefix("block") if b.name != "head" else "head" for b in blocks]
    colors = [FLOW_COLORS["input"]] + [FLOW_COLORS.get(b.flow, "#999") for b in blocks]
    outline = ["#333"] * len(names)
    widths = [1] * len(names)
    for i, name in enumerate(names):
        if name in per_block:
            outline[i], widths[i] = _ARTICLE_COLOR, 3
        if name == selected:
            outline[i], widths[i] = "#111", 4
    fig.add_trace(go.Scatter(
        x=list(range(len(names))), y=[0] * len(names), mode="markers+text", text=labels,
        textfont=dict(color="white", size=12), textposition="middle center",
        marker=dict(symbol="square", size=34, color=colors, line=dict(color=outline, width=widths)),
        hovertext=hover, hoverinfo="text", showlegend=False, name="blocks",
    ))
    # Shapes under the nodes: the resolution and channels the block outputs.
    shapes_text = [shape_text(description.input_shape)]
    for b in blocks:
        s = b.output_shape
        shapes_text.append(f"{s[0]}²<br>×{s[-1]}" if len(s) == 3 and s[0] == s[1] else shape_text(s))
    fig.add_trace(go.Scatter(x=list(range(len(names))), y=[-0.42] * len(names), mode="text", text=shapes_text,
                             textfont=dict(size=10, color="#444"), hoverinfo="skip", showlegend=False))
    # Numbered badges for the article's differences.
    if shown:
        bx, by, btext, bhover = [], [], [], []
        for d in shown:
            xs = [x_of[n] for n in d.blocks if n in x_of]
            if not xs:
                continue
            bx.append((min(xs) + max(xs)) / 2)
            by.append(-1.05)
            btext.append(d.label[0])
            bhover.append(f"<b>{html.escape(d.label)}</b><br>"
                          + "<br>".join(_wrap(d.note, 70)) + f"<br>blocks: {', '.join(d.blocks)}")
        fig.add_trace(go.Scatter(x=bx, y=by, mode="text", text=btext, textfont=dict(size=20, color=_ARTICLE_COLOR),
                                 hovertext=bhover, hoverinfo="text", showlegend=False, name="article differences"))
    fig.update_xaxes(visible=False, range=[-0.7, len(names) - 0.3])
    fig.update_yaxes(visible=False, range=[-1.35 if differences else -0.8, 1.5])
    title = f"Xception block by block · {description.variant} wiring · input {shape_text(description.input_shape)}"
    _base_layout(fig, 330 if differences else 290, title)
    fig.update_layout(legend=dict(orientation="h", x=1, xanchor="right", y=1.13, yanchor="bottom"),
                      margin=dict(l=10, r=10, t=64, b=10), hovermode="closest")
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


def resolution_figure(description: ModelDescription) -> go.Figure:
    """Spatial size (line, left axis) and channel width (bars, right axis) after each block."""
    blocks = [b for b in description.blocks if len(b.output_shape) == 3]
    names = ["input"] + [b.name for b in blocks]
    sides = [description.input_shape[0]] + [b.output_shape[0] for b in blocks]
    channels = [description.input_shape[-1]] + [b.output_shape[-1] for b in blocks]
    ladder = [s for i, s in enumerate(sides) if i == 0 or s != sides[i - 1]]
    colors = [FLOW_COLORS["input"]] + [FLOW_COLORS[b.flow] for b in blocks]
    fig = go.Figure()
    channel_text = [str(c) if i == 0 or c != channels[i - 1] else "" for i, c in enumerate(channels)]
    fig.add_trace(go.Bar(x=names, y=channels, name="channels", marker=dict(color=colors, opacity=0.45),
                         yaxis="y2", text=channel_text, textposition="outside", textfont=dict(size=10),
                         hovertemplate="%{x}: %{y} channels<extra></extra>"))
    fig.add_trace(go.Scatter(x=names, y=sides, name="height = width", mode="lines+markers+text", yaxis="y",
                             line=dict(color="#222", width=3, shape="hv"), marker=dict(size=7),
                             text=[str(s) if i == 0 or s != sides[i - 1] else "" for i, s in enumerate(sides)],
                             textposition="top right", textfont=dict(size=12, color="#222"),
                             hovertemplate="%{x}: %{y}×%{y}<extra></extra>"))
    _base_layout(fig, 360, "Resolution ladder " + " → ".join(str(s) for s in ladder) + " and channel widths")
    fig.update_layout(
        yaxis=dict(title=dict(text="height = width (pixels)"), rangemode="tozero", range=[0, max(sides) * 1.15]),
        yaxis2=dict(title=dict(text="channels"), overlaying="y", side="right", rangemode="tozero",
                    range=[0, max(channels) * 1.15], showgrid=False),
        legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"), bargap=0.25,
        margin=dict(l=60, r=60, t=56, b=40),
    )
    return fig


# ------------------------------------------------------------------------------------------ cost


def cost_figure(description: ModelDescription, kind: str = "bar") -> go.Figure:
    """Parameters and multiply-accumulates per block; the title carries the model's totals.

    Args:
        description: `describe(model)`.
        kind: 'bar' (two rows of bars) or 'treemap' (parameters, flow → block).
    """
    blocks = list(description.blocks)
    title = (f"Parameters and cost per block<br><sup>total {fmt_count(description.total_params)} parameters "
             f"({fmt_count(description.trainable_params)} trainable) · {fmt_macs(description.total_macs)} "
             f"multiply-accumulates per {shape_text(description.input_shape[:2])} image</sup>")
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
        _base_layout(fig, 420, title.replace("Parameters and cost per block", "Parameters per block (area)"))
        return fig
    if kind != "bar":
        raise ValueError(f"kind must be 'bar' or 'treemap', got {kind!r}")
    names = [b.name for b in blocks]
    colors = [FLOW_COLORS.get(b.flow, "#999") for b in blocks]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("parameters", "multiply-accumulates per image"))
    fig.add_trace(go.Bar(x=names, y=[b.params for b in blocks], marker_color=colors, name="parameters",
                         hovertext=hover, hoverinfo="text", showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[b.macs for b in blocks], marker_color=colors, name="multiply-accumulates",
                         hovertext=hover, hoverinfo="text", showlegend=False), row=2, col=1)
    _base_layout(fig, 460, title)  # bars take the block view's flow colours; no legend needed
    fig.update_layout(bargap=0.2, margin=dict(l=60, r=20, t=80, b=40))
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
        title += (f"<br><sup>ReLU output: {zero_fraction:.1%} exactly zero</sup>" if after_relu
                  else "<br><sup>a sum / BatchNorm output (no ReLU): zeros not meaningful</sup>")
    # Built in one constructor call: drawn per request, and each update_layout() costs milliseconds.
    return go.Figure(
        data=[go.Bar(x=centers, y=counts, width=widths, marker=dict(color="#4C78A8", line=dict(width=0)),
                     customdata=list(zip(edges[:-1], edges[1:])),
                     hovertemplate="[%{customdata[0]:.3g}, %{customdata[1]:.3g}): %{y:,} values<extra></extra>")],
        layout=dict(template=_TEMPLATE, height=320, title=_title(title) | dict(font=dict(size=13)), font=_FONT,
                    bargap=0, margin=dict(l=60, r=20, t=70, b=40), hoverlabel=dict(align="left"),
                    xaxis=dict(title=dict(text="activation")),
                    yaxis=dict(title=dict(text="count" + (" (log)" if log_y else "")),
                               type="log" if log_y else "linear")),
    )


def difference_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Per-block relative L2 difference between the article's and the paper's outputs.

    Args:
        rows: One mapping per block with 'block', 'relative_l2', 'cosine', 'resized',
            'paper_shape', 'article_shape' and 'wiring' (Variant fields that differ inside the
            block), e.g. `dataclasses.asdict(BlockDifference)`.
    """
    names = [r["block"] for r in rows]
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
    _base_layout(fig, 340, "Article vs paper, same weights and image: ‖article − paper‖ / ‖paper‖ per block")
    fig.update_layout(legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
                      title=dict(font=dict(size=13)))
    fig.update_yaxes(title=dict(text="relative L2 difference"), rangemode="tozero",
                     range=[0, max(values + [0.1]) * 1.2])
    return fig
