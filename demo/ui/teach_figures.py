"""Plotly figures for the Teach tab: the photos' feature map, the confusion matrix, and accuracy
by block. Pure functions from plain numbers and strings to a `plotly.graph_objects.Figure`; every
number comes from `xception_core.runtime.transfer` through `demo.services.teach`.

Plotly's hover labels cannot show pictures, so the map draws each photo's thumbnail at its point
(up to `MAX_THUMBNAILS` photos, up and right of it; a transparent plot area lets them show beneath
the markers),
and the hover text names the photo and what cross-validation made of it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from demo.fonts import SANS
from demo.ui.figures import LIGHT, Theme

__all__ = ["CLASS_COLORS", "accuracy_by_block_figure", "confusion_figure", "feature_map_figure"]

# Ten distinguishable colours (Tableau 10), one per class: at most 10 classes.
CLASS_COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#FF9DA6",
                "#9D755D", "#BAB0AC")
MAX_THUMBNAILS = 60  # photos drawn as pictures on the map; beyond that, markers only (legibility, page size)
THUMBNAIL_SHARE = 0.2  # a thumbnail's side, as a share of the map's spread (40 px or more on a desktop's map)
MISCLASSIFIED = "misclassified (cross-validated)"
CHANCE_MARGIN = 54  # px right of the accuracy chart's plot area, for the chance line's label
_FONT = dict(family=SANS, size=12)


def _layout(fig: go.Figure, title: str, height: int, theme: Theme) -> go.Figure:
    """Transparent paper and plot, ink and grid from the page's theme (light or dark)."""
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=13 if theme.narrow else 15)),
                      font=dict(_FONT, color=theme.ink), paper_bgcolor="rgba(0,0,0,0)",
                      plot_bgcolor="rgba(0,0,0,0)", height=height,
                      margin=dict(l=10, r=10, t=48, b=10), legend=dict(orientation="h", y=-0.12))
    fig.update_xaxes(gridcolor=theme.grid, linecolor=theme.muted, zerolinecolor=theme.grid)
    fig.update_yaxes(gridcolor=theme.grid, linecolor=theme.muted, zerolinecolor=theme.grid)
    return fig


def feature_map_figure(points: np.ndarray, labels: Sequence[int], predicted: Sequence[int], class_names: Sequence[str],
                       photo_names: Sequence[str], thumbnails: Sequence[str | None] = (), *, title: str,
                       explained: Sequence[float] = (), theme: Theme = LIGHT) -> go.Figure:
    """Every photo as a point in the first two principal components of its features.

    Args:
        points: (N, 2) coordinates.
        labels: (N,) class index each photo was given.
        predicted: (N,) class each photo got from a head fitted without it (cross-validation);
            photos where it differs get a ring (one legend entry for all classes).
        class_names: K names.
        photo_names: N short names for the hover text.
        thumbnails: N `data:` URLs (or None) drawn beside the points when N ≤ `MAX_THUMBNAILS`.
        title: Figure title.
        explained: Share of variance along each axis, for the axis titles.
        theme: The page's colours.
    """
    points = np.asarray(points, np.float32).reshape(-1, 2)
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    wrong = predicted != labels
    fig = go.Figure()
    # One meaning per legend entry: a class is its colour (a dot, whatever cross-validation made of
    # the photo), and "misclassified" is one ring in the page's ink around any class's dot.
    for k, raw_name in enumerate(class_names):
        name = html.escape(raw_name)  # Plotly renders trace names (the legend) as HTML, like hover text
        idx = np.flatnonzero(labels == k)
        if not len(idx):
            continue
        hover = [f"<b>{html.escape(photo_names[i])}</b><br>class: {name}"
                 + (f"<br><b>cross-validated as: {html.escape(class_names[predicted[i]])}</b>" if wrong[i] else "")
                 for i in idx]
        fig.add_trace(go.Scatter(
            x=points[idx, 0], y=points[idx, 1], mode="markers", name=name, legendgroup=name,
            marker=dict(color=CLASS_COLORS[k % len(CLASS_COLORS)], size=11, symbol="circle",
                        line=dict(color=theme.ink, width=0.5)),
            hovertext=hover, hoverinfo="text",
        ))
    idx = np.flatnonzero(wrong)
    if len(idx):
        fig.add_trace(go.Scatter(
            x=points[idx, 0], y=points[idx, 1], mode="markers", name=MISCLASSIFIED, legendgroup="misclassified",
            # An "-open" symbol is drawn in the marker's colour (its line colour is not used).
            marker=dict(color=theme.ink, size=21, symbol="circle-open", line=dict(width=2.5)),
            hoverinfo="skip",
        ))
    thumbs = list(thumbnails)
    span = np.ptp(points, axis=0) if len(points) else np.zeros(2)
    side = float(max(span.max(), 1e-6)) * THUMBNAIL_SHARE
    drawn = bool(thumbs) and 0 < len(points) <= MAX_THUMBNAILS
    if drawn:
        # Each thumbnail up and to the right of its dot, its corner on the point: the dot and its
        # ring cover none of it (under the markers, so a neighbour's dot stays on top).
        for (x, y), url in zip(points, thumbs):
            if url:
                fig.add_layout_image(source=url, x=float(x), y=float(y), xref="x", yref="y", sizex=side, sizey=side,
                                     xanchor="left", yanchor="bottom", layer="below", opacity=1.0)
    ex = list(explained) + [0.0, 0.0]
    fig.update_xaxes(title_text=f"component 1 ({ex[0]:.0%} of variance)", showgrid=True, zeroline=False,
                     showticklabels=False)
    fig.update_yaxes(title_text=f"component 2 ({ex[1]:.0%})", showgrid=True, zeroline=False,
                     showticklabels=False, scaleanchor="x", scaleratio=1)
    if drawn:  # Plotly's autorange leaves pictures out: room for the ones at the top and right edges
        pad = side * 0.25
        fig.update_xaxes(range=[float(points[:, 0].min()) - pad, float(points[:, 0].max()) + side + pad])
        fig.update_yaxes(range=[float(points[:, 1].min()) - pad, float(points[:, 1].max()) + side + pad])
    return _layout(fig, title, 460, theme)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], *, title: str,
                     theme: Theme = LIGHT) -> go.Figure:
    """(K, K) counts as a heat map: rows = the class a photo was given, columns = the class a head
    fitted without that photo chose."""
    c = np.asarray(confusion)
    rows = c.sum(axis=1, keepdims=True)
    share = np.divide(c, rows, out=np.zeros(c.shape, float), where=rows > 0)
    names = [html.escape(n) for n in class_names]
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, text=c.astype(int), texttemplate="%{text}", zmin=0, zmax=1,
        # From the page's own background (transparent) to blue: no white panel on a dark page.
        colorscale=[[0, "rgba(76,120,168,0.06)"], [1, "rgba(76,120,168,1)"]], showscale=False,
        textfont=dict(color=theme.ink),
        hovertemplate="given: %{y}<br>chosen: %{x}<br>%{text} photo(s)<extra></extra>",
    ))
    fig.update_xaxes(title_text="chosen by the head (cross-validated)", side="bottom", tickangle=-30)
    fig.update_yaxes(title_text="class given", autorange="reversed")
    return _layout(fig, title, 140 + 36 * len(class_names), theme)


def accuracy_by_block_figure(blocks: Sequence[str], accuracy: Sequence[float], dims: Sequence[int], *, chance: float,
                             selected: str | None = None, title: str, theme: Theme = LIGHT) -> go.Figure:
    """Cross-validated accuracy of a head on each block's pooled features, shallow to deep."""
    colors = ["#F58518" if b == selected else "#4C78A8" for b in blocks]
    fig = go.Figure(go.Bar(
        x=list(blocks), y=list(accuracy), marker_color=colors,
        text=[f"{a:.0%}" for a in accuracy], textposition="outside",
        customdata=list(dims), hovertemplate="%{x}: %{y:.0%} (%{customdata}-d features)<extra></extra>",
    ))
    fig.add_hline(y=chance, line=dict(color="#888888", dash="dot"))
    # The line's label sits in the right margin, beside the plot area: inside it, it would cover a
    # bar or its figure whatever the corner (a bar may stand at any height in any column).
    fig.add_annotation(text="chance", x=1, xref="paper", xanchor="left", xshift=4, y=chance, yref="y",
                       yanchor="middle", showarrow=False, font=dict(size=11))
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", title_text="cross-validated accuracy")
    _layout(fig, title, 300, theme)
    fig.update_layout(margin=dict(r=CHANCE_MARGIN))
    return fig
