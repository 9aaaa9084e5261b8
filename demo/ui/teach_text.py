"""Every sentence of the Teach tab (kept beside `demo.ui.text`, in the same spirit: numbers from
the services are put into words here, and nowhere else)."""

from __future__ import annotations

import html

from demo.services.teach import AddReport, Photo, TeachLimits, Trained

INTRO = """
## Teach Xception your own classes
Xception's convolutional layers turn any photo into **2,048 numbers** (the pooled exit-flow
features). The kitchenware model in this app is exactly that base with a small classifier trained
on top. Here you train such a classifier yourself, on photos you choose, in seconds: name a few
classes, add photos to each, and press **Train**. You then see how well it works on photos it
was *not* trained on, where your photos sit in feature space, and how the block the features come
from changes what the classifier can tell apart.
"""


def limits(budget: TeachLimits) -> str:
    return (f"Limits: {budget.max_classes} classes, {budget.max_photos_per_class} photos a class, at least "
            f"{budget.min_photos_per_class} photos in each of at least 2 classes to train. Your photos stay in this "
            "browser session only: nobody else sees them, and they are forgotten when you close the page.")


STARTER_NOTE = ("Or start from a ready-made set: the labelled photos shipped in the kitchenware package "
                "(cup, plate, and knife/fork/spoon as *cutlery*) and this app's example photos (the espresso "
                "as a *cup*, the others as *not kitchenware*).")

BLOCK_LABELS = {
    "block2": "block 2 · early entry flow",
    "block4": "block 4 · end of entry flow",
    "block8": "block 8 · middle flow",
    "block12": "block 12 · end of middle flow",
    "block13": "block 13 · exit flow",
    "block14": "block 14 · final features",
}

BLOCK_NOTE = ("**Which block's features?** Every photo passed through the network once; its output after "
              "each of these blocks was averaged over the image. A classifier on early blocks sees edges and "
              "colours; on the last block it sees object parts. Compare the accuracy and the map.")

CLASSIFY_NOTE = ("### Try it on a new photo\nThe taught classifier (on block 14's features) and where it "
                 "looked: the class activation map, each cell of the last feature map weighted by the "
                 "classifier's weights for the top class (for a pooled linear classifier this *is* Grad-CAM).")

DOWNLOAD_NOTE = ("### Take it with you\nThe **model** is Xception plus your classifier as one Keras file "
                 "(its size is on the button once prepared): `build_xception(weights=\"xception_taught.keras\")` or "
                 "`XCEPTION_WEIGHTS=xception_taught.keras python app.py` loads it, with your class names. The **head** alone is a small NumPy `.npz`: "
                 "weights (2048 × classes), bias and class names, on the pooled block-14 features.")


def unseen_choices(photos) -> list[tuple[str, int]]:
    """The starter set's unseen photos as a visitor can tell them apart (their files are bare ids)."""
    return [(f"kitchenware photo {i + 1} of {len(photos)} (file {p.name})", i) for i, p in enumerate(photos)]


_THUMB = "width:48px;height:48px;object-fit:cover;border-radius:4px"
EMPTY = "No classes yet: name one, add photos, then a second one."


def add_report(name: str, report: AddReport) -> str:
    parts = [f"Added **{report.added}** photo(s) to “{_md(name)}” in {report.seconds:.1f} s"]
    if report.cached:
        parts.append(f"({report.cached} already seen: features reused)")
    text = " ".join(parts) + "."
    if report.refused:
        text += "  \nNot added: " + "; ".join(_md(r) for r in report.refused[:8])
        if len(report.refused) > 8:
            text += f"; and {len(report.refused) - 8} more"
    return text


def starter_report(report: AddReport) -> str:
    text = f"Loaded the starter set: **{report.added}** photos in {report.seconds:.1f} s. Now press **Train**."
    if report.refused:
        text += "  \nNot loaded: " + "; ".join(_md(r) for r in report.refused)
    return text


def overview(classes: list[tuple[str, list[Photo]]], limit: int) -> str:
    """The classes and their photos as HTML (thumbnails inline, nothing written to disk)."""
    if not classes:
        return f'<p class="teach-empty">{html.escape(EMPTY)}</p>'
    rows = []
    for name, photos in classes:
        thumbs = "".join(f'<img src="{p.data_url}" alt="{html.escape(p.name)}" title="{html.escape(p.name)}" '
                         f'style="{_THUMB}">' for p in photos)
        rows.append(f'<div class="teach-class" style="margin:0 0 10px 0"><div><b>{html.escape(name)}</b> '
                    f'<span>{len(photos)}/{limit}</span></div>'
                    f'<div style="display:flex;flex-wrap:wrap;gap:4px">{thumbs}</div></div>')
    return '<div id="teach-overview">' + "".join(rows) + "</div>"


def train_summary(trained: Trained, block: str) -> str:
    result, labels = trained.blocks[block], trained.labels
    final = trained.blocks["block14"]
    scheme = ("leave-one-out: each photo classified by a classifier trained on all the others"
              if result.cv.scheme == "leave-one-out" else f"{result.cv.folds}-fold cross-validation: each photo "
              "classified by a classifier trained without its fold")
    wrong = int((result.cv.predicted != labels).sum())
    text = (f"**Cross-validated accuracy on {BLOCK_LABELS.get(block, block)}: {result.cv.accuracy:.0%}** "
            f"({len(labels) - wrong} of {len(labels)} photos right; {scheme}). "
            f"Always answering the biggest class would score {trained.chance:.0%}.")
    if block != "block14":
        text += f"  \nOn block 14's final features: {final.cv.accuracy:.0%}."
    text += (f"  \nTrained on {len(labels)} photos of {len(trained.class_names)} classes with "
             f"{trained.weights_title}: classifier fitted in {trained.fit_seconds * 1000:.0f} ms, cross-validation "
             f"of all {len(trained.blocks)} blocks in {trained.cv_seconds * 1000:.0f} ms.")
    return text


def map_title(trained: Trained, block: str) -> str:
    return f"{BLOCK_LABELS.get(block, block)}: {trained.blocks[block].dims} features → 2-D"


def result_images(photo_url: str, cam_url: str) -> str:
    fig = 'style="margin:0;flex:1 1 160px;max-width:320px"'
    img = 'style="width:100%;border-radius:6px"'
    return ('<div id="teach-result" style="display:flex;flex-wrap:wrap;gap:8px">'
            f'<figure {fig}><img src="{photo_url}" alt="your photo" {img}><figcaption>your photo</figcaption></figure>'
            f'<figure {fig}><img src="{cam_url}" alt="class activation map" {img}><figcaption>where it looked'
            "</figcaption></figure></div>")


def _md(value: str) -> str:
    """User text inside Markdown: no markup of theirs is interpreted."""
    return html.escape(value).replace("*", "\\*").replace("_", "\\_").replace("`", "\\`").replace("[", "\\[")

