"""Every sentence the page shows, in one place: fixed texts, and the functions that put numbers
from the loaded model into words. The core returns numbers and states; words are made here."""

from __future__ import annotations

import html
from collections.abc import Sequence

from demo.errors import echo, unavailable_reason
from demo.store import ServedModel, SlotStatus
from demo.ui.figures import fmt_macs, shape_text
from xception_core.arch.registry import architecture
from xception_core.runtime.activations import ActivationExplorer, BlockStats, ImageActivations
from xception_core.runtime.introspection import BlockInfo, ModelDescription, SeparableCost, SeparableTotals

TITLE = "Xception Explorer"

INTRO = """
# Xception Explorer
A pretrained **Xception** (Chollet, CVPR 2017, <a href="https://arxiv.org/abs/1610.02357" target="_blank"
rel="noopener">arXiv:1610.02357</a>) running on this server: **Classify** a photo and see where the network
looked, **Explore** how it is built and what each block sees in your photo, and **Teach** it classes of your own.
"""

ARTICLE_TITLE = "Xception: Implementing from scratch using Tensorflow"
ARTICLE_CITATION = (
    f"“{ARTICLE_TITLE}” (*Towards Data Science*, 2021); this project was built from its Chinese "
    "translation, which keeps the English code"
)

# What each preset's classifier knows, in a visitor's words (keyed by preset name).
_KNOWS = {
    "imagenet": "the 1,000 everyday object classes of ImageNet-1k (animals, vehicles, food, tools…)",
    "kitchenware": ("only six kitchen utensils (cup, fork, glass, knife, plate, spoon): every photo, even a cat, "
                    "gets one of these six answers"),
}

HOW_TO_GET_IMAGENET = (
    "To use the full ImageNet classifier, run the app where "
    "`storage.googleapis.com` is reachable (a Hugging Face Space is), or fetch the weights once with "
    "`python -m xception_core fetch imagenet` and restart; `XCEPTION_WEIGHTS=/path/to/"
    "xception_weights_tf_dim_ordering_tf_kernels.h5` uses a copy you already have."
)

GRADCAM_HEAD = "**Where did it look?** Grad-CAM (Selvaraju et al., 2017)"


def gradcam_note(grid: int | None = None, input_size: int | None = None) -> str:
    """What the Grad-CAM picture is; the grid and input size are the loaded model's when known."""
    if grid and input_size:
        where = (f"the exit flow's last feature maps ({grid}×{grid} for this model's "
                 f"{input_size}×{input_size} input, one cell per {input_size / grid:.0f} pixels)")
    else:
        where = "the exit flow's last feature maps (10×10 at the 299 px reference)"
    return (f"{GRADCAM_HEAD}: {where}, each weighted by how much it raises the chosen class's score, "
            "summed and stretched over the photo. Bright = regions that pushed the model *towards* that "
            "class. It is coarse by design.")


GRADCAM_NOTE = gradcam_note()


# A resize filter (`Preprocessing.resize`, Keras's `load_img` names) in words.
RESIZE_WORDS = {"nearest": "nearest-neighbour", "bilinear": "bilinear", "bicubic": "bicubic", "hamming": "Hamming",
                "box": "box", "lanczos": "Lanczos"}


def resize_words(resize: str) -> str:
    """How the weights' images are resized, for the page: 'nearest-neighbour resize, as Keras's load_img'."""
    return f"{RESIZE_WORDS.get(resize, resize)} resize, as Keras's `load_img` feeds these weights"


def upload_note(max_upload: str, input_size: int | None = None, resize: str | None = None) -> str:
    """Under the image input: what may be uploaded, and what the model does to its shape (and with
    which filter, once the weights are known)."""
    size = f"{input_size}×{input_size}" if input_size else "square"
    how = f"; {resize_words(resize)}" if resize else ""
    return (f"JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF, up to {max_upload.upper().replace('MB', ' MB')}. "
            f"The model sees every photo squashed to its {size} input (not cropped{how}): a wide photo "
            "looks narrower to it.")


WIRING_NOTE = (
    "Wiring: as in the paper (Keras's reference, which the pretrained weights fit). The article this "
    "project started from wires four details differently; **Explore › Article vs paper** compares them."
)

SEPARABLE_INTRO = """
**Why is Xception cheap for its size?**
A standard k×k convolution mixes space and channels at once: **k·k·C_in·C_out** weights.
Xception's separable convolution splits that into a **depthwise** k×k filter per input channel
(**k·k·C_in** weights) and a **pointwise** 1×1 convolution that mixes channels
(**C_in·C_out** weights). The article's example, 3×3 from 3 to 64 channels: 3·3·3·64 = **1,728**
weights for the standard conv against 3·3·3 + 3·64 = 27 + 192 = **219**, about 8× fewer.
Below: every separable conv of the loaded model, and a calculator for any other.
"""

ACTIVATIONS_INTRO = """
**What does each block see in your photo?** Pick an example or upload a photo (the one chosen in
Classify comes along): **one forward pass** computes the output of all 14 blocks at once and caches
it, so switching block, number of tiles, overlay or channel only reads the cache (the status line
says when it was a cache hit).

Each tile is one **channel** of the block's output, drawn on its **true grid**: one square per
value, so a 5×5 map is 25 squares, not a smooth blob. Tiles are the block's most active channels;
under each tile, **#channel · mean** is the channel's index and its mean activation over the image
(how strongly it responded, what the ranking uses). With *one colour scale* every tile shares the
colour bar above them, so a dim tile really is weaker; without it each tile is stretched to its own
range. Click a tile to see it full size.
"""

def article_intro(loaded: ModelDescription | None) -> str:
    """The Article-vs-paper sub-tab's text: the article named and cited, then its four departures.

    Numbers in the spec's notes are the 299 px reference's; the loaded model's own stem sizes
    follow when it is described."""
    head = (f"**Which article?** {ARTICLE_CITATION}. It builds Xception from the same layers with the "
            "same parameter count, but wires four things differently from the paper and Keras, so the "
            "official weights, which fit the paper's wiring, do not give the same outputs in it. Both "
            "wirings below run the **same weights** on the **same image**.\n\n"
            "*Sizes in the notes are the 299 px reference's.*")
    return head + "\n\n" + difference_list(loaded)

NETRON_INTRO = """
**The graph, layer by layer.** [Netron](https://netron.app) draws the model that runs here (a
weight-free copy: it loads in seconds). Switch the wiring to see the article's version.
"""

NETRON_NOTE = """
**Reading the graph.** Each box is one Keras layer, labelled with its operation (`Conv2D`,
`SeparableConv2D`, `BatchNormalization`, `ReLU`, `Add`…). To see the layer names instead, press
**Ctrl+U** (⌘U on a Mac) inside the graph, or the *Show / hide layer names* button. Block *N* of the
explorer is every layer named `blockN_…`: a downsampling block's shortcut is `blockN_residual_conv` →
`blockN_residual_bn`, joined to the main path at `blockN_add`; the classifier is `avg_pool` →
`predictions` (or the transfer head's dense layers). Separable convs show their `depthwise_kernel`
(3×3×C×1) and `pointwise_kernel` (1×1×C×C′). Click a box for its attributes; Ctrl+F searches by
name; scroll to zoom, drag to pan.
"""


def _difference_nodes() -> tuple[tuple[str, str, str], ...]:
    """(button label, layer name to find, what to look at) for each wiring difference."""
    by_field = {d.field: d for d in architecture().differences}
    blocks = {b.name: b for b in architecture().spec.blocks}

    def first(field: str):
        return blocks[by_field[field].blocks[0]]

    stem, entry, middle, exit_ = (first("stem_padding"), first("entry_shortcut_from"),
                                  first("middle_relu_before_add"), first("exit_final_relu"))
    return (
        (by_field["stem_padding"].label, stem.conv_names()[0],
         f"`{stem.conv_names()[0]}`: its *padding* attribute is `valid` in the paper's graph, `same` in the article's."),
        (by_field["entry_shortcut_from"].label, entry.residual_conv_name,
         f"`{entry.residual_conv_name}`: its input is the previous block's sum in the paper's graph, the "
         "previous shortcut's BatchNorm in the article's."),
        (by_field["middle_relu_before_add"].label, f"{middle.conv_names()[-1]}_post_act",
         f"`{middle.conv_names()[-1]}_post_act`: a ReLU just before `{middle.add_name}`, found only in the "
         "article's graph (and in every middle block)."),
        (by_field["exit_final_relu"].label, f"{exit_.conv_names()[-1]}_act",
         f"`{exit_.conv_names()[-1]}_act`: the ReLU before `avg_pool`, found only in the paper's graph."),
    )


NETRON_DIFFERENCE_NODES = _difference_nodes()


def netron_difference_list() -> str:
    return "\n".join(f"- **{label}**: {what}" for label, _, what in NETRON_DIFFERENCE_NODES)


NO_IMAGE = "No image yet: pick an example or upload a photo above."
NO_COMPARE_IMAGE = ("No photo to compare yet: choose one in Explore › Activations (an example or your own), or in "
                    "Classify, then press Compare again.")
COMPARE_NOTE = ("*Your photo* is the one in **Activations** (an example or your own), which starts as the photo "
                "chosen in **Classify**.")
EXAMPLES_HEAD = "**Examples**: click one to classify it."


def unknown_class(asked: str, labels: Sequence[str], shown: int = 20) -> str:
    """The answer to a class name the weights do not have: what they do have (the first `shown`)."""
    listed = ", ".join(labels[:shown]) + (f", … ({len(labels):,} in all)" if len(labels) > shown else "")
    return f"{echo(asked)} is not a class of these weights. Their classes: {listed}."


def _state_word(s: SlotStatus) -> str:
    return {"waiting": "waiting",
            "loading": f"loading ({s.seconds:.0f} s)",
            "ready": "ready",
            "failed": f"unavailable: {unavailable_reason(s.failure)}"}[s.state]


def status_line(statuses: Sequence[SlotStatus], ready: bool) -> str:
    """Every weights' state in one line (`/healthz`, and the page while nothing is live): ready,
    loading (never said of weights that failed), or unavailable and why."""
    if ready:
        head = "ready"
    elif any(s.state in ("loading", "waiting") for s in statuses):
        head = "loading"
    else:
        head = "unavailable"
    parts = [f"{s.title}: {_state_word(s)}" for s in statuses]
    return f"**Model status: {head}** · " + " · ".join(parts)


def knows(served: ServedModel) -> str:
    """What the served classifier can answer."""
    if served.info.preset in _KNOWS:
        return _KNOWS[served.info.preset]
    n = len(served.labels)
    return f"{n:,} classes" + (f": {', '.join(served.labels)}" if n <= 20 else "")


def model_status(statuses: Sequence[SlotStatus], served: ServedModel | None) -> str:
    """The page's one status: which weights are live, what they know and their input; or, before
    that, what is loading or why nothing could be. Other weights that failed get one clause."""
    if served is None:
        return status_line(statuses, False)
    line = (f"**Model status: ready** · live weights **{served.title}** ({served.input_size}×{served.input_size} "
            f"input, {resize_words(served.preprocessing.resize)}): they know {knows(served)}.")
    others = [f"{s.title} {_state_word(s)}" for s in statuses if s.key != served.key and s.state != "ready"]
    if others:
        line += " " + "; ".join(others) + "."
    return line


def imagenet_help(statuses: Sequence[SlotStatus], served: ServedModel | None) -> str | None:
    """How to get ImageNet-1k, only where it was asked for and could not be had (never beside
    weights of the visitor's own choosing, nor beside ImageNet itself)."""
    if served is None or served.info.preset == "imagenet":
        return None
    failed = any(s.key == "imagenet" and s.state == "failed" for s in statuses)
    return HOW_TO_GET_IMAGENET if failed else None


def classify_info(served: ServedModel, seconds: float, image_size: tuple[int, int] | None = None) -> str:
    """The line under the top 5: time, weights, wiring, input size, classes, int8 when on, and how
    much a small photo was enlarged to fill the input (`image_size`: the photo's (width, height))."""
    info = served.info
    text = (f"**{seconds * 1000:.0f} ms** in the network · weights: **{served.title}** "
            f"({served.input_size}×{served.input_size} input, {len(served.labels)} classes, "
            f"{'wired as in the paper' if info.variant == 'paper' else 'the article’s wiring'})")
    if image_size and min(image_size) > 0:
        width, height = image_size
        factor = served.input_size / min(width, height)
        if factor >= UPSCALE_NOTE_FROM:
            text += (f"  \n**Your photo is only {width}×{height} pixels**: the model saw it enlarged "
                     f"{factor:.0f}× to {served.input_size}×{served.input_size}, so it has little detail to go on.")
    if served.precision == "int8":
        text += ("  \n**int8 model** (XCEPTION_PRECISION=int8): quantized for speed; its probabilities can "
                 "differ a little from full precision, and on rare photos its top class.")
    if len(served.labels) <= 20:
        text += f"  \nThese weights only know {len(served.labels)} classes: {', '.join(served.labels)}."
    return text


UPSCALE_NOTE_FROM = 2.0  # a photo enlarged this much or more to fill the input gets a word about it


def difference_list(loaded: ModelDescription | None = None) -> str:
    """The four wiring differences as a Markdown list, with the blocks they live in; with a loaded
    model, its own stem sizes in the paper's wiring after the reference's."""
    lines = []
    for d in architecture().differences:
        line = f"- **{d.label}** ({', '.join(d.blocks)}). {d.note}"
        if d.field == "stem_padding" and loaded is not None:
            stem = loaded.block(d.blocks[0])
            sides = [loaded.input_shape[0]] + [layer.output_shape[0] for layer in stem.layers
                                                if layer.class_name == "Conv2D"]
            line += (f" The model loaded here takes {loaded.input_shape[0]} px: its {loaded.variant} stem goes "
                     + "→".join(str(x) for x in sides) + ".")
        lines.append(line)
    return "\n".join(lines)


def architecture_summary(d: ModelDescription, served: ServedModel | None) -> str:
    """Totals of a described model, saying which model it is."""
    if served is not None:
        note = (f"Weights **{served.title}** ({len(served.labels)} classes), "
                f"input {served.input_size}×{served.input_size}. ")
    else:
        note = "Reference Keras Xception (random weights; only the architecture is shown). "
    return (f"{note}**{d.total_params:,}** parameters ({d.learned_params:,} learned, "
            f"{d.moving_statistics_params:,} BatchNorm moving statistics) · "
            f"**{fmt_macs(d.total_macs)}** multiply-accumulates per {shape_text(d.input_shape[:2])} image.")


def separable_summary(d: ModelDescription, t: SeparableTotals) -> str:
    return (f"**{t.count} separable convs** hold {t.separable_params:,} weights and cost {fmt_macs(t.separable_macs)} "
            f"multiply-accumulates at {shape_text(d.input_shape[:2])}. Standard convs with the same "
            f"channels would need {t.standard_params:,} weights (**{t.params_ratio:.1f}×**) and "
            f"{fmt_macs(t.standard_macs)} multiply-accumulates (**{t.macs_ratio:.1f}×**).")


def calculator(c: SeparableCost) -> str:
    """The separable-conv calculator's answer."""
    k, ci, co, s = c.kernel_size, c.in_channels, c.out_channels, c.height
    where = "per output position" if s == 1 else f"for a {s}×{s} output"
    return (f"**Standard {k}×{k} conv, {ci} → {co}:** {k}·{k}·{ci}·{co} = **{c.standard_params:,}** weights  \n"
            f"**Separable:** depthwise {k}·{k}·{ci} = {c.depthwise_params:,} + pointwise {ci}·{co} = "
            f"{c.pointwise_params:,} → **{c.separable_params:,}** weights  \n"
            f"**{c.ratio:.1f}× fewer** weights. Multiply-accumulates {where}: {c.standard_macs:,} vs "
            f"{c.separable_macs:,} (depthwise {c.depthwise_macs:,} + pointwise {c.pointwise_macs:,}).")


def _zero_note(s: BlockStats) -> str:
    if s.after_relu:
        return (f"{s.zero_fraction:.1%} of the values are exactly 0: the units the ReLU switched off "
                "for this image.")
    return (f"{s.zero_fraction:.1%} exact zeros — not meaningful here: this output is a "
            "sum or a BatchNorm output, not a ReLU, so negative values are kept.")


def block_stats(record: ImageActivations, block: str) -> str:
    s = record.stats[block]
    kind = "ReLU" if s.after_relu else "sum / BatchNorm (no ReLU)"
    return (f"**{block}** output {shape_text(s.shape)} ({kind}) · mean **{s.mean:.4g}** · "
            f"std {s.std:.4g} · min {s.min:.4g} · max {s.max:.4g}  \n"
            f"Zeros: {_zero_note(s)}")


def cache_status(record: ImageActivations, hit: bool, explorer: ActivationExplorer, ms: float) -> str:
    if hit:
        head = f"**Cache hit** — no forward pass; this view took {ms:.0f} ms on the server."
    else:
        head = (f"**One forward pass** ({record.forward_seconds * 1000:.0f} ms) computed all "
                f"{len(record.blocks)} blocks; this view took {ms:.0f} ms.")
    return (f"{head}  \nForward passes so far: {explorer.forward_calls} · cached images: {len(explorer)} "
            f"({explorer.nbytes / 2**20:.1f} MB, float16) · weights `{record.weights_key}`, "
            f"{record.variant} wiring, {record.image.shape[0]}×{record.image.shape[1]} input")


def comparison(paper_top: list[tuple[str, float]], article_top: list[tuple[str, float]],
               relative_l2: float, cosine: float, resized: Sequence[str]) -> str:
    same_top = paper_top[0][0] == article_top[0][0]
    text = (f"Top class: paper **{paper_top[0][0]}** ({paper_top[0][1]:.1%}), article **{article_top[0][0]}** "
            f"({article_top[0][1]:.1%}){' — the same class' if same_top else ' — a different class'}. "
            f"Output difference at block14: {relative_l2:.2f} (relative L2), cosine {cosine:.2f}.")
    if resized:
        text += (f"  \nSpatial sizes differ in {', '.join(resized)} (the article's 'same'-padded stem): the "
                 "article's maps were resized to the paper's grid before comparing.")
    return text


def examples_credit(photos) -> str:
    """Under the examples: where they come from."""
    sources = sorted({p.source for p in photos})
    if not sources:
        return ""
    return "Examples from " + "; ".join(sources) + "."


# ---------------------------------------------------------------------------------------- the API
# Labels of the API's own components: the API page and the clients describe each parameter and
# output with them ("The input value that is provided in the <label> component").

API_IMAGE = "image: a photo (JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF, up to the upload limit), squashed to the model's square input"
API_WEIGHTS = "weights: '' for the live default, else a name from /healthz's 'weights' (e.g. 'kitchenware', 'imagenet')"
API_CLASS = "class_name: a class of the weights (see /classify's answer); '' explains the top class"
API_BLOCK = "block: 'block1' (stem) … 'block14' (last exit-flow block)"
API_TOP_N = "top_n: how many of the most active channels to return as maps (1-64)"
API_WHICH = ("which: 'loaded' (the weights that run here), 'reference' (Keras's 299×299 ImageNet Xception, whatever is "
             "loaded) or 'inception_v3' (Keras's 299×299 Inception V3, its structure and cost)")

API_OP_BLOCK = "block: 'block2' … 'block14' (a block with separable convs)"
API_OP_LAYER = "layer: one of the block's separable convs, e.g. 'block5_sepconv3' (blocks 2–4 and 13–14 have 2)"
API_OP_ROW = "row: output position's row on the conv's grid (0 … height − 1; see the answer's 'grid')"
API_OP_COL = "col: output position's column on the conv's grid (0 … width − 1)"
API_OP_CHANNEL = "channel: output channel of the conv (0 … its channels − 1)"
API_OP_VARIANT = "variant: 'paper' (Keras's wiring, the weights') or 'article' (the article's wiring, same weights)"
API_OP_TOP = "top: input channels whose depthwise step and contribution are returned in full (1-16)"

API_CLASSIFY = ("Classify a photo. Returns top5: {class: probability} of the 5 most probable classes of the "
                "weights.")
API_GRADCAM = ("Where the model looked for one class. Returns heatmap: a Grad-CAM heat map of the class over the "
               "photo (PNG, display size), and score: {class_name, probability, rank} of the class. class_name is "
               "matched ignoring case and extra spaces ('  Fork ' is 'fork').")
API_ARCHITECTURE = ("Xception block by block. Returns architecture: totals and, per block, name, flow, output shape, "
                    "parameters (learned_params: kernels, biases and BatchNorm's scale and shift; "
                    "moving_statistics_params: BatchNorm's moving mean and variance) and multiply-accumulates; "
                    "for the loaded weights or the 299 px reference.")
API_ACTIVATIONS = ("One block's activations for a photo. Returns activations: its output shape, the mean activation "
                   "of every channel, the top channels, the maps' value range and timings; and maps: the top_n most "
                   "active channels as pictures on their true grid, one colour scale, captioned '#channel · mean' "
                   "(PNG). One forward pass per photo, cached.")

API_OPERATION = ("One separable conv of the served model at one position and output channel of a photo, number by "
                 "number. Returns operation: the depthwise step of the top input channels (3×3 patch, kernel, "
                 "products, sum), the pointwise contributions ranked with the rest summed, BatchNorm (and its folded "
                 "form), the ReLU, max-pool and residual sum where the wiring has them, each stage beside the "
                 "model's own value ('stages'), the position's receptive field and the conv's cost. One forward "
                 "pass per photo and block, cached.")

API_KNOCKOUT = ("The served network with parts knocked out, on a photo. knockouts is a JSON list of objects: "
                "{kind: 'skip_branch', block} (the block's output becomes its shortcut: for blocks 5-12 its input), "
                "{kind: 'drop_shortcut', block} (only the branch is kept), {kind: 'zero_channels', block, channels: [..]} "
                "(those output channels set to zero) or {kind: 'relu_between', block, layer} (a ReLU between the "
                "depthwise and pointwise steps of that separable conv). Returns knockout: the intact and the knocked "
                "top-5 ({class: probability}, as /classify rounds them), whether the top class changed, and for every "
                "block from the first changed one its output's mean, intact and knocked, and relative change. An "
                "empty list is /classify's answer. Unknown blocks, layers or channels are refused in one sentence.")
API_KNOCKOUTS = "knockouts: a JSON list of {kind, block, layer?, channels?}"

KNOCKOUTS_INTRO = """
### What each piece is worth

The paper's case for Xception rests on **ablations**: without its residual connections Xception
trains much more slowly and ends lower (its Figure 9), and an activation between the depthwise and
the pointwise step makes it worse (Figure 10). Veit et al. (2016) went further on trained ResNets:
**deleting one residual block at test time barely changes the error**, except for the blocks that
downsample. Try both here, on the live network and your photo: pick what to knock out, then run.

*The paper trained networks with a ReLU between the two steps; here a **trained** network is
perturbed at test time, which is a different question (how much does this network rely on the
sign of its depthwise outputs?).*
"""
KNOCKOUTS_KINDS = {
    "skip_branch": "Skip the block's residual branch (its output becomes its shortcut)",
    "drop_shortcut": "Drop the block's shortcut (keep its branch)",
    "zero_channels": "Zero the block's strongest output channels",
    "relu_between": "Insert a ReLU between depthwise and pointwise",
}
KNOCKOUTS_EXAMPLES = "Examples (or the photo you chose in Classify or Activations)"
KNOCKOUTS_MAPS = ("Block outputs, intact beside knocked out (mean over channels, one colour scale per block): "
                  "the first changed block and the last")
KNOCKOUTS_NONE = "No knockouts chosen yet: add one above (the intact network is shown on both sides)."
KNOCKOUTS_LESION_INTRO = ("**The lesion study.** One click removes each middle-flow block's branch in turn (blocks 5-12, "
                          "identity shortcuts), then blocks 4 and 13, whose shortcut is a 1×1 convolution, over every "
                          "labelled photo the app has; the figure plots top-1 accuracy and agreement with the intact "
                          "network against the block removed. Measured on this server, once per weights.")


def knockouts_list(items: list[dict]) -> str:
    """The chosen knockouts, one line each."""
    if not items:
        return KNOCKOUTS_NONE
    lines = []
    for k in items:
        what = KNOCKOUTS_KINDS.get(k.get("kind"), k.get("kind"))
        where = k.get("layer") or k.get("block")
        extra = f" (channels {', '.join(map(str, k['channels'][:8]))}{'…' if len(k['channels']) > 8 else ''})" \
            if k.get("channels") else ""
        lines.append(f"- {what}: **{where}**{extra}")
    return "\n".join(lines)


def knockouts_verdict(answer: dict) -> str:
    """One sentence on what the knockouts did to the top class."""
    intact, knocked = next(iter(answer["intact"].items())), next(iter(answer["knocked"].items()))
    if not answer["knockouts"]:
        return KNOCKOUTS_NONE
    if answer["top1_changed"]:
        return (f"The top class changed: **{intact[0]}** ({intact[1]:.1%}) became **{knocked[0]}** "
                f"({knocked[1]:.1%}); the knocked network ran in {answer['knocked_ms']:.0f} ms from its first changed block.")
    return (f"The top class held: **{knocked[0]}**, {intact[1]:.1%} intact and {knocked[1]:.1%} knocked out "
            f"(the knocked network ran in {answer['knocked_ms']:.0f} ms from its first changed block).")


def lesion_summary(table: dict) -> str:
    """The lesion table in words: intact accuracy, and the worst and mildest removals."""
    rows = table["rows"]
    if not rows:
        return ""
    worst = min(rows, key=lambda r: r["accuracy"])
    middle = [r for r in rows if r["shortcut"] == "identity"]
    mild = sum(r["accuracy"] >= table["intact_accuracy"] - 0.1 for r in middle)
    return (f"Intact: **{table['intact_accuracy']:.0%}** top-1 on {table['photos']} labelled photos. "
            f"{mild} of {len(middle)} middle-flow removals stay within 10 points of it; the worst removal is "
            f"**{worst['block']}** ({worst['shortcut']} shortcut) at {worst['accuracy']:.0%}. "
            f"Measured in {table['seconds']:.1f} s.")


START_HERE = """
### A guided path through Xception, in seven steps

1. **At a glance**: *how is Xception built?* One path of 14 blocks in three flows (entry, middle
   ×8, exit). Hover or choose a block for its output shape, parameters and cost; the resolution
   ladder shows the picture shrinking while the channels grow.
2. **Separable convolutions**: *why is it so cheap for its size?* Nearly every layer is a
   depthwise-separable convolution; the table and the calculator show how many weights that saves.
3. **Inside one operation**: *what does one of them compute?* Click a position on your photo: its
   receptive field, the 3×3 depthwise products, the 1×1 mix of all channels, BatchNorm, ReLU and the
   residual sum, number by number and checked against the model's own values; and what a channel
   looks for across the photos at hand.
4. **Activations**: *what does each block see in my photo?* Pick a photo (the one you chose in
   Classify comes along) and step through the blocks: early blocks respond to edges and colours on a
   fine grid, late blocks to whole objects on a coarse one.
5. **Article vs paper**: *does wiring matter?* The article this project started from wires four
   details differently. The same weights on the same photo show how far that moves every block.
6. **Xception vs Inception V3**: *why does Xception exist?* The paper's own comparison: both
   networks module by module, where their parameters sit, both timed on your photo, and the
   continuum from the Inception module to the depthwise separable conv.
7. **Graph (Netron)**: *what exactly is in the model?* Every layer, searchable by name, with a
   finder for the four places the article's graph differs.

Each step starts with the question it answers. Use **Next** at the bottom of a step to move on.
"""

GLANCE_INTRO = ("**How is Xception built?** Hover a block of the diagram, or choose it under the diagram, for its "
                "output shape, parameters and multiply-accumulates; the table at the bottom lists every block. "
                "The numbers are those of the model described.")
BLOCK_PICK_NONE = "Choose a block above to see its output shape, parameters and cost here."


def block_details(block: BlockInfo | None) -> str:
    """One block in words: what the diagram's hover says, for a reader who cannot hover (a phone)."""
    if block is None:
        return BLOCK_PICK_NONE
    shortcut = {"conv": "a 1×1 stride-2 conv (+ BatchNorm)", "identity": "identity", "none": "none"}[block.shortcut]
    line = (f"**{block.name}** · {block.flow} flow · {block.kind} · output **{shape_text(block.output_shape)}** · "
            f"**{block.params:,}** parameters ({block.learned_params:,} learned) · "
            f"**{fmt_macs(block.macs)}** multiply-accumulates")
    return line + (f" · shortcut: {shortcut}" if block.flow != "head" else "")


def calculator_empty(label: str, high: int) -> str:
    """The calculator's word for a field left empty."""
    return f"{label} is empty: type a whole number from 1 to {high:,}."


def calculator_problems(problems: Sequence[str]) -> str:
    """The calculator's answer to bad values: one line per value, nothing computed."""
    return "**Nothing computed yet:**  \n" + "  \n".join(f"- {p}" for p in problems)


def tile_caption(channel: int, mean: float) -> str:
    """Under a feature-map tile: the channel's index and its mean activation."""
    return f"#{channel} · mean {mean:.2f}"


def colour_bar(gradient_css: str, value_range: tuple[float, float] | None, after_relu: bool = False,
               kind: str | None = None) -> str:
    """A map's colour bar: the shared scale's ends, or a note that each tile has its own; `kind`
    says what the colour stands for (default: a block's activation, after ReLU or not)."""
    if value_range is None:
        low, high = "each tile's own minimum", "its maximum"
    else:
        low, high = f"{value_range[0]:.3g}", f"{value_range[1]:.3g}"
    if kind is None:
        kind = "activation (after ReLU)" if after_relu else "activation (a sum: can be negative)"
    return (f'<div class="colour-bar" style="display:flex;align-items:center;gap:8px;font-size:0.85em">'
            f'<span>{html.escape(low)}</span>'
            f'<span style="flex:1;height:12px;border-radius:3px;background:{gradient_css}"></span>'
            f'<span>{html.escape(high)}</span></div>'
            f'<div style="font-size:0.8em;opacity:0.8">colour = {html.escape(kind)}</div>')


def file_size(size_bytes: int) -> str:
    """A file's size as a visitor's file manager and browser show it: decimal kB/MB (10^3, 10^6)."""
    if size_bytes >= 10**6:
        return f"{size_bytes / 10**6:.0f} MB"
    return f"{max(size_bytes / 10**3, 1):.0f} kB"


def download_link(export_name: str, size_bytes: int) -> str:
    """The .keras download: a link to the app's /models/ route (which names the file)."""
    from urllib.parse import quote

    wiring = "article" if "-article.keras" in export_name else "paper"
    return (f'<a href="models/{quote(export_name)}" download '
            'style="display:inline-block;padding:10px 18px;border-radius:8px;font-weight:600;'
            'background:var(--button-primary-background-fill);color:var(--button-primary-text-color)">'
            f"Download the full .keras, {wiring} wiring ({file_size(size_bytes)})</a>")


EXPORTS_OFF = ("The graph view and the model download are off on this server: it has no folder it can "
               "write model files to.")

# `/` while the page is being built (the plain HTTP API already answers): reloads itself each second.
PAGE_STARTING = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><meta http-equiv='refresh' content='1'>"
                 "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                 "<meta name='color-scheme' content='light dark'><title>Xception Explorer: starting</title></head>"
                 "<body style='font-family: system-ui, sans-serif; margin: 2rem; font-size: 1.1rem'>"
                 "<h1 style='font-size: 1.5rem'>Xception Explorer</h1>"
                 "<p>The page is starting; this tab reloads itself when it is ready (a few seconds).</p></body></html>")

# ---------------------------------------------------------------------------------------- Compare

API_COMPARE_IMAGE = ("image: optional; with a photo, both forwards are timed on it (and both top-5 returned when "
                     "Inception V3's ImageNet weights are here)")
API_SIZE = "size: the input side in pixels for the module tables and totals (75-1024; the paper's 299)"
API_ROUNDS = "rounds: forwards timed per network, alternated (1-20)"
API_COMPARE = ("Xception against Inception V3, the Xception paper's comparison. Returns compare: both networks' "
               "totals at the input size (parameters, learned and BatchNorm moving statistics, multiply-accumulates), "
               "where their parameters sit, the paper's own figures (Table 1 accuracy, Table 3 parameters and "
               "training steps/s); with a photo, both forwards timed on it in this process, alternated (ONNX "
               "Runtime, fp32, batch 1), and both top-5 when Inception V3 has its ImageNet weights (else "
               "'predictions' is null and 'predictions_withheld' says why). The first call prepares Inception V3.")

COMPARE_INTRO = """
### Xception against Inception V3: the paper's central comparison

Xception has about as many parameters as Inception V3 and does better on ImageNet. The paper argues
that is because it **uses its parameters more efficiently**: it pushes the Inception module to its
extreme, a depthwise separable convolution. Below, both networks module by module at the input size
you choose, where their parameters sit, how long one forward takes on this machine, and the
continuum from one to the other (the paper's Figures 1–4).
"""

COMPARE_PREPARING = ("Inception V3 is being prepared for the timings: its ImageNet weights fetched if they can be, "
                     "translated once for ONNX Runtime and cached (about a minute the first time on this machine, "
                     "seconds after). The tables above need none of it.")
COMPARE_NO_PHOTO = "Pick an example or upload a photo (in Activations, or here) to time both networks on it."


def compare_no_predictions(failure: str | None) -> str:
    """The one sentence that says why Inception V3 shows no predictions (`WeightsFailure` value)."""
    why = {"offline": "could not be downloaded (this server has no internet access) and are not in its cache",
           "not-found": "were not found where Keras publishes them",
           "damaged": "failed their md5 check"}.get(failure or "", "could not be had")
    return (f"No predictions are shown: Inception V3's ImageNet weights {why}, so it runs with random weights, "
            "which are honest for timing and structure but predict nothing.")


def _fmt(n: int) -> str:
    return f"{int(n):,}"


def compare_totals(xception, inception) -> str:
    """Both networks' measured totals beside the paper's figures (`demo.services.compare.Network`s),
    each count named for what it is; one list a network, so a phone reads it without scrolling."""
    size = xception.description.input_shape[0]
    parts = []
    for n in (xception, inception):
        d, p = n.description, n.paper
        parts.append(
            f"**{n.title}** at {size}×{size} px\n"
            f"- measured: **{_fmt(d.total_params)}** parameters in all, **{_fmt(d.learned_params)}** learned, "
            f"**{d.total_macs / 1e9:.2f} G** multiply-accumulates per image, {len(d.blocks)} modules with the classifier\n"
            f"- the paper's: {_fmt(p.params)} parameters (Table 3), top-1 / top-5 {p.top1:.3f} / {p.top5:.3f} "
            f"(Table 1), {p.steps_per_second:g} training steps/s (Table 3)")
    gap = inception.paper.params - inception.description.learned_params
    return ("\n\n".join(parts) + "\n\n"
            "*Measured* here from each network's layer graph with the 1000-class ImageNet head (equal to Keras's "
            "`count_params()` for `keras.applications.Xception` and `InceptionV3`). *In all* counts BatchNorm's moving "
            "mean and variance; *learned* leaves them out. The paper's Xception count is the learned one exactly; "
            f"its Inception V3 count is {abs(gap):,} {'more' if gap > 0 else 'fewer'} than Keras's learned count, and "
            "the paper does not say how it counted. The paper's accuracies and steps/s are its own (ImageNet, single "
            "crop; training on 60 NVIDIA K80 GPUs), not measured here: Chollet 2017, arXiv 1610.02357.")


def compare_placement(xception, inception) -> str:
    """Where the parameters sit, in words (shares of each network's total)."""
    def shares(n) -> str:
        total = n.description.total_params
        return ", ".join(f"{place} {100 * params / total:.0f}%" for place, params in n.placement)
    return f"**{xception.title}**: {shares(xception)}. **{inception.title}**: {shares(inception)}."


def compare_timings(timings, paper) -> str:
    """The timings in words (`demo.services.compare.Timings`), beside the paper's training steps/s
    (`demo.services.compare.PAPER`)."""
    m = timings.medians
    x, i = m["xception"], m["inception_v3"]
    sizes = timings.input_sizes
    weights = "ImageNet" if timings.pretrained else "seeded random"
    return (f"Median of {len(timings.xception_ms)} forwards each on this photo, alternated, in this process: "
            f"**Xception {x:.1f} ms** ({sizes['xception']} px), **Inception V3 {i:.1f} ms** "
            f"({sizes['inception_v3']} px, {weights} weights): Inception V3 takes {i / x:.2f}× Xception's time "
            f"(ONNX Runtime, fp32, batch 1, {timings.threads['xception']} threads each). "
            + (f"The sides differ (the weights served here take {sizes['xception']} px), so the work differs: "
               f"{timings.macs['xception'] / 1e9:.2f} G multiply-accumulates per Xception forward against "
               f"{timings.macs['inception_v3'] / 1e9:.2f} G per Inception V3 forward. "
               if sizes["xception"] != sizes["inception_v3"] else "")
            + f"The paper's Table 3 compares training instead: {paper['inception_v3'].steps_per_second:g} steps/s "
            f"for Inception V3 against {paper['xception'].steps_per_second:g} for Xception, on 60 GPUs. These are "
            "this host's figures, taken while others may share its cores.")


def compare_predictions(xception_top, inception_top) -> str:
    """Both top-5 side by side, as a Markdown table."""
    rows = [f"| {i + 1} | {a} | {pa:.3f} | {b} | {pb:.3f} |"
            for i, ((a, pa), (b, pb)) in enumerate(zip(xception_top, inception_top))]
    return "| # | Xception | p | Inception V3 | p |\n|---|---|---:|---|---:|\n" + "\n".join(rows)


def continuum_text(c) -> str:
    """The continuum in words (`xception_core.arch.continuum.Continuum`), order difference included."""
    r, e, x = c.regular, c.extreme, c.xception
    return (f"With **1 segment** the 1×1 conv is followed by a regular 3×3 conv: {_fmt(r.params)} parameters, "
            f"{_fmt(r.macs)} multiply-accumulates. With **{e.segments} segments** (one per channel) it is the "
            f"paper's \"extreme\" Inception, {_fmt(e.params)} parameters ({r.params / e.params:.1f}× fewer), "
            f"{_fmt(e.macs)} multiply-accumulates. Between them, every divisor of {e.out_channels} is a point of "
            "the continuum. **The order differs**: Inception's module runs the 1×1 first, over the input's "
            f"{r.in_channels} channels, then the 3×3 on its {e.out_channels} outputs; Xception's depthwise "
            f"separable conv runs the 3×3 depthwise on the {x.in_channels} input channels first, then the 1×1 "
            f"({_fmt(x.separable_params)} parameters, {_fmt(x.separable_macs)} multiply-accumulates), and puts no "
            "ReLU between the two. The paper argues the order matters little once such layers are stacked.")
