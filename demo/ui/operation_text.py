"""Every sentence of Explore › Inside one operation, and the HTML of its number grids: the
depthwise step (patch × kernel = products → sum) and the stages after it (BatchNorm, ReLU,
max-pool, residual sum), each next to the model's own value. Numbers come from
`xception_core.runtime.operation.SeparableStep` (through `demo.services.operation`); nothing here
computes one, it only formats and colours them."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from demo.ui.figures import fmt_count, fmt_macs
from xception_core.arch.receptive import ReceptiveField
from xception_core.runtime.operation import DepthwiseChannel, SeparableStep
from xception_core.runtime.patches import ChannelPatches

OPERATION_INTRO = """
**What does one separable convolution compute, number by number?** This is Xception's key
operation on *your* photo, with the loaded model's own weights. Choose a block and one of its
separable convs, then **click the photo or the feature map** to pick an output position. Below,
in order: where that position looks in the photo (its **receptive field**), the **depthwise**
step (a 3×3 patch of each input channel times that channel's own 3×3 kernel), the **pointwise**
step (a 1×1 mix of all input channels into one output channel), then BatchNorm, the ReLU and the
block's residual sum. Every number is checked against the value the model itself computed.
"""

HEAD_DEPTHWISE = "### 1 · Depthwise: each input channel filtered alone"
HEAD_POINTWISE = "### 2 · Pointwise: all input channels mixed into one"
HEAD_AFTER = "### 3 · BatchNorm, ReLU and the block's sum"
HEAD_COST = "### 4 · What this step costs"
HEAD_PATCHES = "### 5 · What a channel looks for"

NO_PHOTO = ("No photo yet: pick an example below (or a photo in **Activations**, or upload one there), "
            "then click the photo or the feature map.")
CLICK_HINT = "Click the photo or the map to move the output position; the red square is its receptive field."
PATCHES_INTRO = """
**What does a channel look for?** The photos at hand (the examples, the starter set's photos and
the ones you uploaded in Explore this session) go through the model once each (cached); for the
channel below, each photo's strongest response is found on the block's output grid and the photo is
cut at that position's receptive field. Strongest first.
"""
RF_TABLE_NOTE = ("Each block's output, for this model's input: its grid, the input pixels between neighbouring "
                 "positions (*jump*), the field of an interior position (it can exceed the photo: Xception's late "
                 "blocks see everything) and the field of the centre position, cut at the photo's border.")

# The number grids follow the page's theme: Gradio's CSS variables for ink and borders,
# translucent blue / red fills that read on light and dark backgrounds alike.
GRID_CSS = """
.op-cards { display: flex; flex-direction: column; gap: 14px; }
.op-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px; }
.op-head { font-size: 0.9em; margin-bottom: 6px; }
.op-row { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 8px; }
.op-fig { margin: 0; display: flex; flex-direction: column; align-items: center; width: min-content; }
.op-fig figcaption { font-size: 0.75em; opacity: 0.8; margin-top: 2px; text-align: center; line-height: 1.2; }
.op-grid { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.8em; }
.op-grid td { border: 1px solid var(--border-color-primary); padding: 2px 4px; min-width: 3.3em;
  text-align: right; color: var(--body-text-color); }
.op-grid td.pad { border-style: dashed; opacity: 0.45; }
.op-grid td.hit { outline: 2px solid var(--body-text-color); outline-offset: -2px; }
.op-then { display: flex; align-items: center; gap: 6px; }
.op-sign { font-size: 1.2em; opacity: 0.8; }
.op-sum { font-size: 0.95em; white-space: nowrap; }
.op-stages { display: flex; flex-direction: column; gap: 10px; font-size: 0.92em; line-height: 1.45; }
.op-stage { border-left: 3px solid var(--border-color-primary); padding-left: 8px; overflow-wrap: anywhere; }
.op-check { opacity: 0.8; font-size: 0.9em; }
@media (max-width: 700px) { .op-grid { font-size: 0.72em; } .op-grid td { min-width: 2.9em; padding: 1px 3px; } }
"""


def num(value: float, digits: int = 4) -> str:
    """A number as the page shows it: `digits` significant digits, a true minus sign, and no
    "−0" (a padding zero times a negative weight is still nothing)."""
    return f"{float(value) + 0.0:.{digits}g}".replace("-", "−")


def term(value: float, digits: int = 4) -> str:
    """A number after an operator: negative ones in parentheses, "x − (−0.12)"."""
    shown = num(value, digits)
    return f"({shown})" if shown.startswith("−") else shown


def _cell_style(value: float, largest: float) -> str:
    if not largest or not np.isfinite(value):
        return ""
    alpha = min(abs(value) / largest, 1.0) * 0.55
    rgb = "76,120,168" if value >= 0 else "228,87,86"
    return f' style="background: rgba({rgb},{alpha:.2f})"'


def number_grid(values: np.ndarray, padding: np.ndarray | None = None, hit: tuple[int, int] | None = None,
                digits: int = 3) -> str:
    """A small grid of numbers as an HTML table, coloured by sign and size; padding cells dashed
    (`padding`: (k, k) bool), one cell outlined (`hit`), NaN cells (off the map) left empty."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    rows = []
    for i, row in enumerate(values):
        cells = []
        for j, v in enumerate(row):
            classes = []
            if padding is not None and padding[i, j]:
                classes.append("pad")
            if hit == (i, j):
                classes.append("hit")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            shown = num(v, digits) if np.isfinite(v) else ""
            cells.append(f"<td{cls}{_cell_style(v, largest)}>{shown}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="op-grid">{"".join(rows)}</table>'


def _figure(grid: str, caption: str) -> str:
    return f'<figure class="op-fig">{grid}<figcaption>{html.escape(caption)}</figcaption></figure>'


def depthwise_html(step: SeparableStep, shown: int) -> str:
    """The depthwise step of the `shown` input channels that matter most at the position: for each,
    its 3×3 input patch, its kernel, their products and the sum (the depthwise output)."""
    products = {c.channel: c.product for c in step.pointwise.top}
    relu = step.plan.relu_before
    patch_caption = "input patch (after the ReLU)" if relu else "input patch (no ReLU)"
    cards = []
    for rank, d in enumerate(step.depthwise[:shown], start=1):
        share = products.get(d.channel)
        head = (f"<b>input channel #{d.channel}</b> · rank {rank} by |contribution|"
                + (f" · contributes {num(share)} after the 1×1 weight" if share is not None else ""))
        cards.append(
            f'<div class="op-card op-depthwise" data-channel="{d.channel}"><div class="op-head">{head}</div>'
            f'<div class="op-row">{_figure(number_grid(d.inputs, d.padding), patch_caption)}'
            f'<span class="op-then"><span class="op-sign">×</span>{_figure(number_grid(d.kernel), "its own kernel")}'
            f'</span><span class="op-then"><span class="op-sign">=</span>'
            f'{_figure(number_grid(d.products, d.padding), "products")}</span>'
            f'<div class="op-sum">→ sum Σ = <b class="op-value" data-value="{d.value:.9g}">{num(d.value)}</b></div>'
            "</div></div>")
    note = ""
    if any(d.padding.any() for d in step.depthwise[:shown]):
        note = ('<div class="op-check">Dashed cells hang over the map\'s border: the conv pads with zeros '
                "('same' padding), so they add nothing.</div>")
    feed = (f"the conv reads {html.escape(step.plan.feed)} through the ReLU {html.escape(relu)}" if relu else
            f"the conv reads {html.escape(step.plan.feed)} as it is (no ReLU in front of it)")
    head = (f'<div class="op-head"><b>Depthwise 3×3</b>: each of the {step.plan.in_channels} input channels has its '
            f"own kernel and is filtered alone ({feed}); here the {min(shown, len(step.depthwise))} that matter most "
            f"for output channel #{step.channel}.</div>")
    return f'<div class="op-cards">{head}{"".join(cards)}{note}</div>'


def _check(step: SeparableStep, layer: str) -> str:
    """The model's own value of a layer at the step's place, when the pass kept it."""
    if layer not in step.model:
        return ""
    return f' <span class="op-check">(the model computed {num(step.model[layer], 6)})</span>'


def _relu_role(step: SeparableStep) -> str:
    plan = step.plan
    if plan.add:
        return "the article's ReLU before the middle-flow sum (the paper has none here)"
    if plan.block == "block14":
        return "block 14's ReLU after its conv (block 14 has no shortcut)"
    return "the ReLU in front of the next separable conv"


def stages_html(step: SeparableStep) -> str:
    """What follows the depthwise step, one line per stage with its formula and numbers."""
    pw, bn = step.pointwise, step.batchnorm
    code = lambda name: f"<code>{html.escape(name)}</code>"  # noqa: E731
    lines = [
        f"<b>Pointwise 1×1</b> {code(pw.layer)}: every input channel's depthwise value × its weight into channel "
        f"#{pw.channel}, summed over all {pw.in_channels} (the chart) = "
        f'<b class="op-pointwise" data-value="{pw.value:.9g}">{num(pw.value)}</b>.',
        f"<b>BatchNorm</b> {code(bn.layer)}: (x − μ) / √(σ² + ε) · γ + β = ({num(bn.x)} − {term(bn.mean)}) / "
        f"√({num(bn.variance)} + {num(bn.epsilon, 2)}) · {term(bn.gamma)} + {term(bn.beta)} = "
        f'<b class="op-bn" data-value="{bn.value:.9g}">{num(bn.value)}</b>{_check(step, bn.layer)}. Folded into '
        f"one multiply-add, as the server runs it: s·x + t = {num(bn.scale)} · {term(bn.x)} + {term(bn.shift)}.",
    ]
    if step.relu is not None:
        lines.append(f"<b>ReLU</b> {code(step.relu.layer)} ({_relu_role(step)}): max(0, {num(step.relu.x)}) = "
                     f'<b class="op-relu">{num(step.relu.value)}</b>.')
    elif step.add is not None:
        lines.append("<b>No ReLU here</b>: in this wiring the block's sum reads the BatchNorm output as it is.")
    if step.pool is not None:
        p = step.pool
        lines.append(f"<b>Max-pool 3×3, stride 2</b> {code(p.layer)} at ({p.row}, {p.col}): the largest of the "
                     f"window's BatchNorm outputs (this position outlined) = <b>{num(p.value)}</b>."
                     + _figure(number_grid(p.window, hit=(step.row - p.top, step.col - p.left)),
                               "the pool's window on the conv's grid"))
    if step.add is not None:
        a, s = step.add, step.add.shortcut
        if s.kind == "identity":
            shortcut = f"the block's input {code(s.source)} at ({s.row}, {s.col}), as it is"
        else:
            shortcut = (f"a 1×1 stride-2 conv of {code(s.source)} at ({s.row}, {s.col}) = {num(s.conv.value)}, then "
                        f"its BatchNorm {code(s.layer)}")
        lines.append(f"<b>Residual sum</b> {code(a.layer)} at ({a.row}, {a.col}): main path {num(a.main)} + shortcut "
                     f"{term(s.value)} ({shortcut}) = <b class=\"op-add\">{num(a.value)}</b>{_check(step, a.layer)}.")
    else:
        lines.append(f"No residual sum after this conv: its output goes on to {_next_of(step)}.")
    items = "".join(f'<div class="op-stage">{line}</div>' for line in lines)
    return f'<div class="op-stages">{items}</div>'


def _next_of(step: SeparableStep) -> str:
    if step.relu is not None and step.plan.block != "block14":
        return "the next separable conv"
    return "the global average pool and the classifier" if step.plan.block == "block14" else "the next layer"


def where(step: SeparableStep, input_size: int, hit: bool, ms: float, forward_ms: float | None) -> str:
    """Where the step is, its receptive field in words, and what the click cost on the server
    (`ms`: the whole answer, pictures and charts included)."""
    f: ReceptiveField = step.receptive
    h, w = step.grid
    cut = " (cut at the photo's border)" if f.clipped else ""
    field = (f"**Receptive field**: rows {f.top}–{f.bottom}, columns {f.left}–{f.right} of the {input_size}×"
             f"{input_size} input, **{f.height}×{f.width} pixels**{cut}; an interior position of this layer sees "
             f"{f.rows.size}×{f.cols.size}, and neighbouring positions are {f.rows.jump} pixels apart.")
    if f.covers_input:
        field += " This position already sees the whole photo."
    timing = (f"Cache hit: no forward pass; this answer took **{ms:.0f} ms** on the server." if hit else
              f"One forward pass ({forward_ms:.0f} ms) kept this block's layers; this answer took {ms:.0f} ms in all "
              "(the first in a wiring also prepares that wiring's model).")
    return (f"**{step.plan.layer}** ({step.variant} wiring) · output position **row {step.row}, column {step.col}** "
            f"of its {h}×{w} grid · output channel **#{step.channel}** of {step.plan.out_channels}.  \n"
            f"{field}  \n{timing}")


def cost_text(step: SeparableStep) -> str:
    c, (h, w) = step.cost, step.grid
    return (f"**This conv's cost** over its {h}×{w} grid: depthwise 3·3·{c.in_channels}·{h}·{w} = "
            f"{fmt_count(c.depthwise_macs)} + pointwise {c.in_channels}·{c.out_channels}·{h}·{w} = "
            f"{fmt_count(c.pointwise_macs)} multiply-accumulates ({fmt_macs(c.separable_macs)}); a standard 3×3 conv "
            f"with the same channels: 3·3·{c.in_channels}·{c.out_channels}·{h}·{w} = {fmt_count(c.standard_macs)} "
            f"({fmt_macs(c.standard_macs)}), **{c.standard_macs / c.separable_macs:.1f}× more**. Weights: "
            f"{fmt_count(c.separable_params)} against {fmt_count(c.standard_params)}.")


def patches_summary(found: ChannelPatches, searched: int, uploads: int) -> str:
    """Under the strongest patches: what was searched and how long it took."""
    mine = f", {uploads} of them yours" if uploads else ""
    if found.passes == 0:
        passes = "every one already summarised (no forward pass)"
    elif found.passes == searched:
        passes = "each went through the model once (kept for the next channel)"
    else:
        passes = f"{found.passes} went through the model, the others were already summarised"
    return (f"Channel **#{found.channel}** of **{found.block}**'s output ({found.layer}, {found.variant} wiring), "
            f"over {searched} photos{mine}: {passes}; {found.seconds:.1f} s on the server.")


def patch_caption(label: str, value: float, field: ReceptiveField) -> str:
    return f"{label} · {num(value, 3)} · {field.height}×{field.width} px"


def separable_choices(names: Sequence[str]) -> list[tuple[str, str]]:
    """The radio's choices: 'sepconv2' shown, the layer's full name as the value."""
    return [(n.split("_")[-1], n) for n in names]
