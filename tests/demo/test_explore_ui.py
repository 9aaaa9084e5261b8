"""The Explore tab's wiring without a browser, on the real Blocks and a tiny random model: the
sub-tabs in order with their Next buttons, a new sub-tab added with one line, what the first tick
after the model is ready fills (the wide tables' phone cards too), the channel slider's bounds,
the figure cache's keys and bound, and taking the Classify photo along."""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from pathlib import Path

import gradio as gr
import pytest

from demo.store import ModelStore
from demo.ui.explore import tab as explore_tab
from demo.ui.explore.activations import DEFAULT_BLOCK, block_channels
from demo.ui.explore.context import FigureCache, SubTab
from demo.ui.figures import Theme
from demo.ui.layout import build_demo
from xception_core.arch.registry import architecture
from xception_core.runtime.introspection import ModelDescription
from xception_core.settings import Settings

SIZE = 96
TITLES = ["Start here", "At a glance", "Separable convolutions", "Inside one operation", "Activations",
          "Article vs paper", "Knockouts", "Xception vs Inception V3", "Graph (Netron)"]


@pytest.fixture(scope="module")
def blocks(store):
    return build_demo(store)


def handler(blocks: gr.Blocks, name: str):
    """The registered event function named `name` (its inputs, outputs and fn)."""
    return next(fn for fn in blocks.fns.values() if fn.name == name)


def card_cells(html: str) -> list[list[tuple[str, str]]]:
    """The (label, value) pairs of each `<dl>` card in `html`, as the browser would read them."""
    cards: list[list[tuple[str, str]]] = []
    texts: list[str] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "dl":
                cards.append([])
            if tag in ("dt", "dd"):
                texts.append("")

        def handle_data(self, data):
            if texts:
                texts[-1] += data

        def handle_endtag(self, tag):
            if tag == "dd":
                cards[-1].append((texts[-2], texts[-1]))

    Reader().feed(html)
    return cards


def explore_sub_tabs(blocks: gr.Blocks) -> list[tuple[str, str | None]]:
    """(title, its Next button's label or None) of every Explore sub-tab, in page order."""
    config = blocks.get_config_file()
    props = {c["id"]: c.get("props", {}) for c in config["components"]}

    def find(node, test):
        if node["id"] in props and test(props[node["id"]]):
            return node
        return next((hit for child in node.get("children", []) if (hit := find(child, test))), None)

    tabs = find(config["layout"], lambda p: p.get("elem_id") == "explore-tabs")
    out = []
    for item in tabs["children"]:
        button = find(item, lambda p: "explore-next" in (p.get("elem_classes") or []))
        out.append((props[item["id"]]["label"], props[button["id"]]["value"] if button else None))
    return out


def test_sub_tabs_come_in_order_each_pointing_to_the_next(blocks, store, upload_dir):
    expected_next = ["Next: Xception at a glance →", "Next: separable convolutions →",
                     "Next: inside one operation, number by number →", "Next: activations on your photo →",
                     "Next: the article's wiring against the paper's →", "Next: knock parts of the network out →",
                     "Next: Xception against Inception V3 →"]
    # Without an export folder the Graph sub-tab only says so: Article vs paper does not point there.
    assert explore_sub_tabs(blocks) == list(zip(TITLES, expected_next + [None, None]))
    with_graph = build_demo(store, exports=_exports(store, upload_dir))
    assert explore_sub_tabs(with_graph) == list(zip(TITLES, expected_next + ["Next: the graph in Netron →", None]))


def _exports(store, folder: Path):
    from demo.netron.exports import Exports

    return Exports(store, folder / "exports")


def test_a_new_sub_tab_is_one_record_in_sub_tabs(store, monkeypatch):
    def build(ctx, tab):  # uses what a real sub-tab may: the photo and a fill from the description
        words = gr.Markdown(elem_id="explore-new")
        ctx.fill([words], lambda described: (f"{described.loaded.total_params:,} parameters",))
        return words

    new = SubTab(id="step", title="One step", elem_id="explore-step-tab", teaser="one step, number by number",
                 build=build)
    at = explore_tab.SUB_TABS.index(next(s for s in explore_tab.SUB_TABS if s.id == "separable")) + 1
    monkeypatch.setattr(explore_tab, "SUB_TABS", (*explore_tab.SUB_TABS[:at], new, *explore_tab.SUB_TABS[at:]))
    blocks = build_demo(store)
    titles = explore_sub_tabs(blocks)
    assert [t for t, _ in titles] == TITLES[:3] + ["One step"] + TITLES[3:]
    assert titles[2][1] == "Next: one step, number by number →"
    assert titles[3][1] == "Next: inside one operation, number by number →"
    first = handler(blocks, "first_fill")
    out = first.fn(*[c.value for c in first.inputs])
    words = next(c for c in first.outputs if getattr(c, "elem_id", None) == "explore-new")
    description = store.get().loaded.model.count_params()
    assert out[words] == f"{description:,} parameters"


def test_the_first_tick_waits_for_the_model_then_fills_every_sub_tab_once_and_stops(blocks, store, upload_dir):
    loading = build_demo(ModelStore(Settings(upload_dir=upload_dir), ["never-started"]))
    first = handler(loading, "first_fill")
    out = first.fn(*[c.value for c in first.inputs])
    assert [c.elem_id for c in out] == ["explore-arch-status"]  # nothing else touched while it waits
    assert next(iter(out.values())).startswith("Waiting for the model…")

    first = handler(blocks, "first_fill")
    out = first.fn(*[c.value for c in first.inputs])
    assert len({id(c) for c in first.outputs}) == len(first.outputs)  # each output once
    assert {id(c) for c in out} == {id(c) for c in first.outputs}  # and every one filled
    by_id = {c.elem_id: value for c, value in out.items() if c.elem_id}
    params = store.get().loaded.model.count_params()
    assert f"**{params:,}** parameters" in by_id["explore-arch-status"]
    assert f"input {SIZE}×{SIZE}" in by_id["explore-arch-status"]
    assert list(by_id["explore-table"]["block"])[-1] == "total" and len(by_id["explore-separable"]) > 30
    for table in ("explore-table", "explore-separable"):  # the phone's cards: the same cells, a card a row
        frame = by_id[table]
        expected = [[(c, str(v)) for c, v in zip(frame.columns, row) if str(v)]
                    for row in frame.itertuples(index=False)]
        assert card_cells(by_id[f"{table}-cards"]) == expected
    assert by_id["explore-examples"]  # the live weights' example photos
    timer = next(c for c in first.outputs if isinstance(c, gr.Timer))
    assert out[timer].active is False

    # Changing what is described fills again, from the same cached figures; the examples stay.
    again = handler(blocks, "fill_again")
    refill = again.fn(*[c.value for c in again.inputs])
    assert not any(c.elem_id == "explore-examples" for c in refill)
    plots = [c for c in refill if isinstance(c, gr.Plot)]
    assert len(plots) == 4 and all(refill[p] is out[p] for p in plots)


def test_the_channel_slider_spans_the_chosen_blocks_channels(blocks, store):
    slider = next(c for fn in blocks.fns.values() for c in fn.inputs if getattr(c, "elem_id", "") == "explore-channel")
    assert slider.maximum == block_channels(DEFAULT_BLOCK) - 1 == 727
    on_view = handler(blocks, "on_view")
    out = on_view.fn(None, None, "block14", 16, True, True, None)  # no photo yet: only the slider follows
    assert list(out)[0] is slider and out[slider]["maximum"] == 2047
    n_top = next(c for c in out if c is not slider)  # the tiles' number box, brought back into range
    assert out[n_top] == 16 and on_view.fn(None, None, "block14", 100, True, True, None)[n_top] == 64
    with pytest.raises(gr.Error):
        on_view.fn(None, None, "block99", 16, True, True, None)
    # The spec's counts are the live model's: the slider's bound before a photo is the one after.
    live = {layer.name: layer.output.shape[-1] for layer in store.get().loaded.model.layers}
    for block in architecture().spec.blocks:
        last = block.add_name or f"{block.conv_names()[-1]}_act"
        assert block_channels(block.name) == live[last], block.name


def test_figures_are_cached_by_value_and_bounded():
    calls = []

    def draw(description, theme, **options):
        calls.append(description.name)
        return object()

    def description(name: str) -> ModelDescription:
        return ModelDescription(name, "paper", (8, 8, 3), (), 1, 1, 0, 1)

    cache = FigureCache(size=2)
    a = cache.get(draw, description("a"), Theme())
    assert cache.get(draw, copy.deepcopy(description("a")), Theme()) is a  # an equal description: one figure
    assert cache.get(draw, description("a"), Theme(dark=True)) is not a  # another theme: another figure
    assert calls == ["a", "a"]
    cache.get(draw, description("b"), Theme())  # the oldest unused goes
    assert len(cache) == 2 and calls == ["a", "a", "b"]
    assert cache.get(draw, description("a"), Theme()) is not a and calls[-1] == "a"


def test_explore_takes_the_classify_photo_once_and_only_from_the_upload_folder(blocks, upload_dir, tmp_path):
    take = handler(blocks, "take_image").fn
    inside = str(upload_dir / "photo.png")
    assert take({"path": inside}, None, None) == (inside, inside)
    assert take({"path": inside}, None, inside) == gr.skip()  # taken already: a photo picked since stays
    assert take({"path": str(tmp_path / "elsewhere.png")}, None, None) == gr.skip()
    assert take(None, None, None) == gr.skip()


class _AsksNothingWhileBuilding:
    """A store whose answers about the replicas fail, as a blocking Serve call does inside the
    ingress's event loop, where Ray Serve builds the page."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        if name in {"settled", "is_ready", "statuses", "available", "default_key", "get"}:
            raise RuntimeError(f"store.{name} asked while the page was built")
        return getattr(self._store, name)


def test_building_the_page_asks_the_store_nothing(store):
    build_demo(_AsksNothingWhileBuilding(store))
