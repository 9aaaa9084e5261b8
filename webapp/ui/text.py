"""Every sentence the page shows, in one place: fixed texts, and the functions that put numbers
from the loaded model into words. The core returns numbers and states; words are made here."""

from __future__ import annotations

from collections.abc import Sequence

from webapp.store import ServedModel, SlotStatus
from webapp.ui.figures import fmt_macs, shape_text
from xception.arch.spec import WIRING_DIFFERENCES
from xception.runtime.activations import ActivationExplorer, BlockStats, ImageActivations
from xception.runtime.introspection import ModelDescription, SeparableCost, SeparableTotals

TITLE = "Xception Explorer"

INTRO = """
# Xception Explorer
Classify your own photos with a pretrained **Xception** (Chollet, *Xception: Deep Learning with
Depthwise Separable Convolutions*, CVPR 2017, <a href="https://arxiv.org/abs/1610.02357" target="_blank" rel="noopener">arXiv:1610.02357</a>),
see where it looked, and explore how its entry, middle and exit flows transform your image.
"""

GRADCAM_NOTE = (
    "**Where did it look?** Grad-CAM (Selvaraju et al., 2017): the exit flow's last feature maps "
    "(10×10 at 299×299, 5×5 at 150×150), each weighted by how much it raises the chosen class's "
    "score, summed and stretched over the photo. Bright = regions that pushed the model *towards* "
    "that class. It is coarse by design, one cell per 32 pixels."
)

SEPARABLE_INTRO = """
A standard k×k convolution mixes space and channels at once: **k·k·C_in·C_out** weights.
Xception's separable convolution splits that into a **depthwise** k×k filter per input channel
(**k·k·C_in** weights) and a **pointwise** 1×1 convolution that mixes channels
(**C_in·C_out** weights). The article's example, 3×3 from 3 to 64 channels: 3·3·3·64 = **1,728**
weights for the standard conv against 3·3·3 + 3·64 = 27 + 192 = **219**, about 8× fewer.
Below: every separable conv of the loaded model, and a calculator for any other.
"""

ACTIVATIONS_INTRO = """
Pick an example or upload a photo: **one forward pass** computes the output of all 14 blocks at
once and caches it (keyed by the image's pixels and the weights). Switching block, grid size,
overlay or channel then only reads the cache — the status line says when it was a cache hit.
Tiles are the block's most active channels (highest mean activation), each stretched over the
image as the model saw it; click one to see it full size.
"""

ARTICLE_INTRO = """
The article builds Xception with the same layers and the same parameter count, but wires four
things differently from the paper and Keras — so the official weights, which fit the paper's
wiring, do not give the same outputs in it. Both wirings below run the **same weights** on the
**same image**.
"""

NETRON_NOTE = """
**Reading the graph.** Netron draws every Keras layer of the model in use. Its node names are the
explorer's layer names: block *N* of the explorer is every node named `blockN_…`; the shortcut of
a downsampling block is `blockN_residual_conv` → `blockN_residual_bn`, joined to the main path at
`blockN_add`; the classifier is `avg_pool` → `predictions` (or the transfer head's dense layers).
Separable convs show their `depthwise_kernel` (3×3×C×1) and `pointwise_kernel` (1×1×C×C′).
Scroll to zoom, drag to pan, click a node for its attributes.
"""

NO_IMAGE = "No image yet: pick an example or upload a photo above."


def status_line(statuses: Sequence[SlotStatus], ready: bool) -> str:
    """The header's model status: what is loading, ready or failed."""
    words = {"waiting": lambda s: "waiting",
             "loading": lambda s: f"loading ({s.seconds:.0f} s; first start downloads the weights)",
             "ready": lambda s: "ready",
             "failed": lambda s: f"unavailable: {s.error}" if s.error else "unavailable"}
    parts = [f"{s.title}: {words[s.state](s)}" for s in statuses]
    return f"**Model status ({'ready' if ready else 'loading'}):** " + " · ".join(parts)


def classify_info(served: ServedModel, seconds: float) -> str:
    """The line under the top 5: time, weights, wiring, input size, classes."""
    info = served.info
    text = (f"**{seconds * 1000:.0f} ms** in the network · weights: **{served.title}** "
            f"({info.variant} wiring, {served.input_size}×{served.input_size} input, {len(served.labels)} classes)")
    if len(served.labels) <= 20:
        text += f"  \nThese weights only know {len(served.labels)} classes: {', '.join(served.labels)}."
    return text


def difference_list() -> str:
    """The four wiring differences as a Markdown list, with the blocks they live in."""
    return "\n".join(f"- **{d.label}** ({', '.join(d.blocks)}). {d.note}" for d in WIRING_DIFFERENCES)


def architecture_summary(d: ModelDescription, served: ServedModel | None) -> str:
    """Totals of a described model, saying which model it is."""
    if served is not None:
        note = (f"Weights **{served.title}** ({len(served.labels)} classes), "
                f"input {served.input_size}×{served.input_size}. ")
    else:
        note = "Reference Keras Xception (random weights; only the architecture is shown). "
    return (f"{note}**{d.total_params:,}** parameters ({d.trainable_params:,} trainable, "
            f"{d.non_trainable_params:,} non-trainable BatchNorm statistics) · "
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


EXPORTS_OFF = ("The graph view and the model download are off on this server: it has no folder it can "
               "write model files to.")
