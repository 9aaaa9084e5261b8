"""Every sentence of the Teach tab (kept beside `demo.ui.text`, in the same spirit: numbers from
the services are put into words here, and nowhere else)."""

from __future__ import annotations

import html

from demo.services.teach import AddReport, Photo, TeachLimits, Trained
from demo.store import ServedModel
from demo.ui.text import knows
from xception_core.runtime.extractor import FINAL_BLOCK

_INTRO = """
## Teach Xception your own classes
Xception's convolutional layers turn any photo into **2,048 numbers** (the pooled exit-flow
features). {live} Here you train such a classifier yourself, on photos you choose, in seconds:
name a few classes, add photos to each, and press **Train**. You then see how well it works on
photos it was *not* trained on, where your photos sit in feature space, and how the block the
features come from changes what the classifier can tell apart.
"""


def intro(served: ServedModel | None) -> str:
    """The tab's introduction, naming what the live weights are (None: not known yet)."""
    if served is None:
        live = "The model this app serves is that base with a classifier on top."
    elif served.info.preset == "kitchenware":
        live = ("The live kitchenware model is exactly that base with a small classifier trained on top, "
                "for six kitchen utensils.")
    elif served.info.preset == "imagenet":
        live = ("The live ImageNet model is that base with one layer on top that scores the 1,000 ImageNet "
                "classes.")
    else:  # a model taught here and downloaded, or other weights from a file
        live = (f"The live model ({_md(served.title)}) is that base with a classifier on top; it knows "
                f"{_md(knows(served))}.")
    return _INTRO.format(live=live)


INTRO = intro(None)


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
              "each of these blocks was averaged over the image. Early blocks respond to edges, colours and "
              "textures, later ones to larger parts of objects; which of them tells *your* classes apart best "
              "is measured below, on your photos, and it need not be the last. Training shows the best block "
              "first; pick another to compare its accuracy, map and confusion matrix.")

CLASSIFY_NOTE = ("### Try it on a new photo\nThe taught classifier (on block 14's features) and where it "
                 "looked: the class activation map, each cell of the last feature map weighted by the "
                 "classifier's weights for the top class (for a pooled linear classifier this *is* Grad-CAM).")
TRY_BLOCK_WHY = ("block 14 is where a whole Xception model ends: its classifier is the one the downloadable "
                 "model carries (the app and `build_xception` load it back as a whole classifier) and the one "
                 "whose activation map is drawn on the last feature map")


def try_note(trained: Trained | None) -> str:
    """Beside the try box: which block's classifier answers there (and downloads below), how well it
    did, and why it is that one when another block was shown first."""
    if trained is None:
        return "Train first: the classifier tried here is then the one you download below."
    acc = {b: r.cv.accuracy for b, r in trained.blocks.items()}
    best, final = trained.best_block, FINAL_BLOCK
    said = f"{acc[final]:.0%}, {_right(trained, final)} photos right under cross-validation"
    if best == final:
        return (f"**This classifier is block 14's**, the block shown first above ({said}); it is the one you "
                "download below.")
    chance = (f"; always answering the biggest class scores {trained.chance:.0%}"
              if acc[final] - trained.chance < 0.15 else "")
    return (f"**This classifier is block 14's ({said}{chance}), not {_short(best)}'s shown first above "
            f"({acc[best]:.0%}).** Why: {TRY_BLOCK_WHY}. Expect it to be right about as often as its "
            f"{acc[final]:.0%} on photos like yours; {_short(best)}'s figure and map above show how well an "
            "earlier block's features would separate them.")

DOWNLOAD_NOTE = ("### Take it with you\nThe **model** is Xception plus your classifier as one Keras file "
                 "(its size is on the button once prepared): `build_xception(weights=\"xception_taught.keras\")` or "
                 "`XCEPTION_WEIGHTS=xception_taught.keras python app.py` loads it, with your class names. The **head** alone is a small NumPy `.npz`: "
                 "weights (2048 × classes), bias and class names, on the pooled block-14 features.")


def unseen_choices(photos) -> list[tuple[str, int]]:
    """The starter set's unseen photos as a visitor can tell them apart (their files are bare ids)."""
    return [(f"kitchenware photo {i + 1} of {len(photos)} (file {p.name})", i) for i, p in enumerate(photos)]


_THUMB = "width:48px;height:48px;object-fit:cover;border-radius:4px"
EMPTY = "No classes yet: name one, add photos, then a second one."


def add_report(name: str, report: AddReport, limit: int) -> str:
    parts = [f"Added **{report.added}** photo(s) to “{_md(name)}” in {report.seconds:.1f} s"]
    if report.cached:
        parts.append(f"({report.cached} seen before: features reused)")
    text = " ".join(parts) + f"; it has {report.class_size} of {limit}."
    if report.duplicates:
        text += (f"  \nAlready in a class, so not added again (a photo counts once): "
                 + _listed(report.duplicates))
    if report.refused:
        text += "  \nNot added: " + _listed(report.refused)
    return text


def _listed(items: tuple[str, ...], shown: int = 8) -> str:
    text = "; ".join(_md(r) for r in items[:shown])
    return text + (f"; and {len(items) - shown} more" if len(items) > shown else "")


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


def _label(block: str) -> str:
    return BLOCK_LABELS.get(block, block)


def _short(block: str) -> str:
    return _label(block).split(" · ")[0]


def _right(trained: Trained, block: str) -> str:
    cv, n = trained.blocks[block].cv, len(trained.labels)
    return f"{int((cv.predicted == trained.labels).sum())} of {n}"


def train_summary(trained: Trained, block: str) -> str:
    """What cross-validation measured on `block`'s features, how that block compares with the best
    one and with the one the taught classifier uses, and what it did with small classes."""
    result, labels, best = trained.blocks[block], trained.labels, trained.best_block
    acc = {b: r.cv.accuracy for b, r in trained.blocks.items()}
    scheme = ("leave-one-out: each photo classified by a classifier trained on all the others"
              if result.cv.scheme == "leave-one-out" else f"{result.cv.folds}-fold cross-validation: each photo "
              "classified by a classifier trained without its fold")
    head = (f"Your classes separate best on {_label(block)}" if block == best
            else f"Cross-validated accuracy on {_label(block)}")
    lines = [f"**{head}: {acc[block]:.0%}** ({_right(trained, block)} photos right; {scheme}). "
             f"Always answering the biggest class would score {trained.chance:.0%}."]
    ties = [b for b in trained.blocks if b != best and acc[b] == acc[best]]
    if block == best:
        tied = ""
        if ties:
            tied = (f" ({', '.join(_short(b) for b in ties)} {'scores' if len(ties) == 1 else 'score'} the same; "
                    f"{_short(best)}'s classifiers were surer of the right answers)")
        lines.append(f"It is the best of the {len(trained.blocks)} blocks by this same cross-validation{tied}, so "
                     f"the figure is a little optimistic: the choice of block was itself fitted to these "
                     f"{len(labels)} photos.")
    else:
        lines.append(f"The best block for these photos is {_label(best)}: {acc[best]:.0%}.")
    if block == FINAL_BLOCK:
        lines.append("This is the classifier you try and download below.")
    else:
        deepest = " On these photos the deepest features are not the best." if (
            block == best and acc[FINAL_BLOCK] < acc[best]) else ""
        lines.append(f"The classifier you try and download below sits on {_short(FINAL_BLOCK)}'s final features, "
                     f"where a whole Xception model ends: {acc[FINAL_BLOCK]:.0%} ({_right(trained, FINAL_BLOCK)})."
                     + deepest)
    lines.extend(small_classes(trained, block))
    lines.append(f"Trained on {len(labels)} photos of {len(trained.class_names)} classes with "
                 f"{trained.weights_title}: classifier fitted in {trained.fit_seconds * 1000:.0f} ms, cross-validation "
                 f"of all {len(trained.blocks)} blocks in {trained.cv_seconds * 1000:.0f} ms.")
    return "  \n".join(lines)


def small_classes(trained: Trained, block: str) -> list[str]:
    """A sentence for the classes too small for the cross-validation to say much about them: what
    was done with their photos (a class of 2 under leave-one-out is judged by classifiers that saw
    1). Classes in the same case share one sentence."""
    cv = trained.blocks[block].cv
    cases: dict[tuple[int, int, int, bool], list[str]] = {}
    for k, name in enumerate(trained.class_names):
        mine = trained.labels == k
        count, seen = int(mine.sum()), cv.seen[mine]
        fewer_than_folds = cv.scheme == "k-fold" and count < cv.folds
        if count and (seen.min() < 2 or fewer_than_folds):
            cases.setdefault((count, int(seen.min()), int(seen.max()), fewer_than_folds), []).append(f"“{_md(name)}”")
    out = []
    for (count, low, high, fewer_than_folds), names in cases.items():
        one = len(names) == 1
        saw = f"just {low}" if low == high else f"{low} to {high}"
        if fewer_than_folds:
            how = (f"fewer than the {cv.folds} folds: {count} of the folds test one each and the other "
                   f"{cv.folds - count} none of {'it' if one else 'them'}; each photo was classified by a classifier "
                   f"that had seen {saw} of its class")
        elif cv.scheme == "leave-one-out":
            how = f"leave-one-out classified each photo by a classifier that had seen {saw} of its class"
        else:
            how = f"each photo was classified by a classifier that had seen {saw} of its class"
        who = names[0] if one else ", ".join(names[:-1]) + " and " + names[-1]
        rows = "its row of the confusion matrix says" if one else "their rows of the confusion matrix say"
        out.append(f"{who} {'has' if one else 'have'} only {count} photos: {how}, so {rows} little; add photos "
                   f"to {'it' if one else 'them'}.")
    return out


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

