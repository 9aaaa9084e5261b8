"""The Teach tab's Plotly figures: what the browser receives (`to_json`) for a small case."""

from __future__ import annotations

import json

import numpy as np

from demo.ui import teach_figures


def test_feature_map_marks_the_misclassified_and_draws_thumbnails():
    points = np.array([[0, 0], [1, 0], [0, 1], [5, 5]], np.float32)
    fig = teach_figures.feature_map_figure(points, [0, 0, 1, 1], [0, 1, 1, 1], ["mug", "<b>spoon</b>"],
                                           ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], ["data:image/jpeg;base64,AA"] * 4,
                                           title="map", explained=[0.5, 0.25])
    data = json.loads(fig.to_json())
    # One meaning per legend entry: a dot per class (its every photo), one ring for every misclassified photo.
    legend = [(t.name, t.marker.symbol, t.marker.color) for t in fig.data]
    assert [n for n, _, _ in legend] == ["mug", "&lt;b&gt;spoon&lt;/b&gt;", teach_figures.MISCLASSIFIED]
    assert [s for _, s, _ in legend] == ["circle", "circle", "circle-open"]
    assert legend[0][2] != legend[1][2]
    dots, ring = fig.data[:2], fig.data[2]
    assert list(dots[0].x) == [0.0, 1.0] and list(ring.x) == [1.0]  # b.jpg, a mug taken for a spoon
    assert "cross-validated as" in dots[0].hovertext[1] and "cross-validated as" not in dots[0].hovertext[0]
    assert "&lt;b&gt;spoon" in json.dumps(data["data"])  # class names are escaped in hover text
    for trace in data["data"]:  # and in the legend's trace names and groups (issue 21 item 9)
        for field in ("name", "legendgroup", "hovertext"):
            assert "<b>spoon" not in json.dumps(trace.get(field, "")), (field, trace.get(field))
    assert {t["legendgroup"] for t in data["data"]} == {"mug", "&lt;b&gt;spoon&lt;/b&gt;", "misclassified"}
    images = data["layout"]["images"]
    assert len(images) == 4 and {(i["xanchor"], i["yanchor"]) for i in images} == {("left", "bottom")}
    assert data["layout"]["xaxis"]["range"][1] >= 4 + images[0]["sizex"]  # the right-most picture is inside
    assert "50%" in data["layout"]["xaxis"]["title"]["text"]
    many = teach_figures.feature_map_figure(np.zeros((61, 2)), [0] * 61, [0] * 61, ["a"], ["p"] * 61,
                                            ["data:,"] * 61, title="t")
    assert not many.layout.images  # beyond MAX_THUMBNAILS: markers only


def test_confusion_and_accuracy_figures():
    fig = teach_figures.confusion_figure(np.array([[2, 1], [0, 3]]), ["a", "b"], title="c")
    fig.to_json()
    heat = fig.data[0]
    assert np.asarray(heat.text).tolist() == [[2, 1], [0, 3]] and abs(np.asarray(heat.z)[0][0] - 2 / 3) < 1e-9
    bars = teach_figures.accuracy_by_block_figure(["block 2", "block 14"], [0.5, 0.9], [128, 2048], chance=0.4,
                                                  selected="block 14", title="acc")
    bars.to_json()
    bar = bars.data[0]
    assert list(bar.text) == ["50%", "90%"] and bar.marker.color[1] != bar.marker.color[0]


def test_chance_label_sits_beside_the_plot_area():
    """The chance line's label is outside the bars' area (right margin), at the line's height;
    the browser test checks it covers no bar or figure on the page."""
    fig = teach_figures.accuracy_by_block_figure(["block 2", "block 14"], [0.43, 0.9], [128, 2048], chance=0.36,
                                                 selected="block 14", title="acc")
    data = json.loads(fig.to_json())["layout"]
    (label,) = [a for a in data["annotations"] if a["text"] == "chance"]
    assert (label["xref"], label["x"], label["xanchor"], label["yref"], label["y"]) == ("paper", 1, "left", "y", 0.36)
    assert data["margin"]["r"] >= teach_figures.CHANCE_MARGIN
    (line,) = data["shapes"]
    assert line["y0"] == line["y1"] == 0.36
