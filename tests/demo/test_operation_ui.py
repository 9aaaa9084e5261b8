"""Explore › Inside one operation without a browser, on the real Blocks and a tiny random model: the
sub-tab sits after Separable convolutions (whose Next leads into it), every number it shows is the
service's, clicks on the photo and the map land where the service says, a new photo is never answered
from the last one's tensors, absurd arguments are answered with messages, the channel search shows
the service's patches, and the `/operation` handler answers the service's numbers as JSON."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demo.services.operation import MAX_TOP, OperationService, ServerPhoto
from demo.ui import operation_text
from demo.ui.explore import operation as op
from demo.ui.explore.api import operation_handler
from demo.ui.layout import build_demo
from tests.demo.test_explore_ui import explore_sub_tabs, handler
from xception_core.io.assets import example_images

SIZE = 96
ARGS = ("block5", "block5_sepconv3", "paper")  # the sub-tab's defaults


@pytest.fixture(scope="module")
def blocks(store):
    return build_demo(store)


@pytest.fixture(scope="module")
def service(store):
    """An independent service: the page's numbers are compared with its answers."""
    return OperationService(store)


def upload(upload_dir: Path, name: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    path = upload_dir / name
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def photo(upload_dir):
    return upload(upload_dir, "op.png", 0)


def fn(blocks, name):
    return handler(blocks, name).fn


def by_id(out: dict) -> dict:
    return {c.elem_id: v for c, v in out.items() if getattr(c, "elem_id", None)}


def value(update):
    return update["value"] if isinstance(update, dict) and "__type__" in update else update


def shown_sums(html: str) -> dict[int, float]:
    """{input channel: the depthwise sum as the page words it} from the depthwise HTML."""
    cards = re.findall(r'data-channel="(\d+)".*?class="op-value" data-value="([^"]+)">([^<]+)<', html, re.S)
    return {int(c): float(text.replace("−", "-")) for c, _, text in cards}


def click(x: float, y: float) -> gr.SelectData:
    return gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})


def test_the_sub_tab_follows_separable_convolutions_whose_next_leads_into_it(blocks):
    tabs = explore_sub_tabs(blocks)
    titles = [t for t, _ in tabs]
    at = titles.index("Inside one operation")
    assert titles[at - 1] == "Separable convolutions" and titles[at + 1] == "Activations"
    assert tabs[at - 1][1] == "Next: inside one operation, number by number →"
    assert tabs[at][1] == "Next: activations on your photo →"


def test_opening_shows_the_services_numbers(blocks, service, photo):
    out = fn(blocks, "op_show")(photo, None, *ARGS[:2], ARGS[2], 7, 3, {"dark": True, "width": 390})
    shown = by_id(out)
    row, col = shown["op-row"], shown["op-col"]
    # The photo's centre: the position whose field is centred nearest it.
    assert (row, col) == service.position_at(*ARGS[:2], (SIZE - 1) / 2, (SIZE - 1) / 2)
    ref = service.step(None, photo, *ARGS[:2], row, col, 7, "paper", MAX_TOP).step
    sums = shown_sums(shown["op-depthwise"])
    assert list(sums) == [d.channel for d in ref.depthwise[:3]]  # the three that matter most, in rank order
    for d in ref.depthwise[:3]:
        assert sums[d.channel] == pytest.approx(d.value, rel=1e-3, abs=1e-6)
    for d in ref.depthwise[:3]:  # and their kernels, cell by cell, as the page words them
        assert f'data-channel="{d.channel}"' in shown["op-depthwise"]
    bars = shown["op-pointwise"].data[0]
    assert list(bars.x[:MAX_TOP]) == pytest.approx([c.product for c in ref.pointwise.top])
    assert bars.x[MAX_TOP] == pytest.approx(ref.pointwise.rest)
    assert f"{ref.pointwise.in_channels - MAX_TOP} others" in bars.y
    assert sum(bars.x) == pytest.approx(ref.pointwise.value, rel=1e-4, abs=1e-5)
    stages = shown["op-stages"]
    bn = float(re.search(r'class="op-bn" data-value="([^"]+)"', stages).group(1))
    assert bn == pytest.approx(ref.batchnorm.value, rel=1e-6) == pytest.approx(ref.model[ref.plan.batchnorm], rel=1e-4)
    assert "block5_add" in stages  # the block's sum, its shortcut in words
    assert "the block's input <code>block4_add</code>" in stages
    assert shown["op-macs"].layout.font.color == "#E5E7EB"  # the dark page's ink
    assert f"{ref.cost.standard_macs:,}" in shown["op-cost"]
    assert f"{ref.receptive.height}×{ref.receptive.width} pixels" in shown["op-where"]
    table = shown["op-rf-table"]
    assert list(table["block"]) == [f"block{i}" for i in range(1, 15)]
    rows = service.receptive_table("paper")
    assert list(table["interior field (px)"]) == [f"{r.size}×{r.size}" for r in rows]
    photo_picture, map_picture = shown["op-photo"], value(shown["op-map"])
    assert photo_picture.size == (SIZE * op.photo_scale(SIZE),) * 2
    assert map_picture.size == (op.map_side(ref.grid[0]),) * 2
    state = next(v for v in out.values() if isinstance(v, dict) and "key" in v)
    assert state["key"] and state["path"] == photo["path"]


def test_clicks_land_where_the_service_says(blocks, service, photo):
    state = by_id_state(blocks, photo)
    h, w = service.grid(*ARGS[:2])
    side = op.map_side(h)
    cell = side // h
    out = by_id(fn(blocks, "op_map_click")(photo, state, *ARGS[:2], "paper", 2, 4, None,
                                           click(cell * (w - 1) + 1, cell * 2 + cell / 2)))
    assert (out["op-row"], out["op-col"]) == (2, w - 1)
    ref = service.step(None, photo, *ARGS[:2], 2, w - 1, 2, "paper", MAX_TOP).step
    assert shown_sums(out["op-depthwise"]) == pytest.approx({d.channel: d.value for d in ref.depthwise[:4]}, rel=1e-3)
    assert "Cache hit" in out["op-where"]  # the second answer of one photo runs no pass
    assert "op-macs" not in out and "op-rf-table" not in out  # a click in the same conv redraws no cost chart

    scale = op.photo_scale(SIZE)
    out = by_id(fn(blocks, "op_photo_click")(photo, state, *ARGS[:2], "paper", 2, 1, None,
                                             click(10 * scale, 70 * scale)))
    assert (out["op-row"], out["op-col"]) == service.position_at(*ARGS[:2], 70, 10)


def by_id_state(blocks, photo) -> dict:
    out = fn(blocks, "op_show")(photo, None, *ARGS, 0, 3, None)
    return next(v for v in out.values() if isinstance(v, dict) and "key" in v)


def test_a_new_photo_is_never_answered_from_the_last_ones_tensors(blocks, service, photo, upload_dir):
    state = by_id_state(blocks, photo)
    other = upload(upload_dir, "other.png", 1)
    out = by_id(fn(blocks, "op_position")(other, state, *ARGS, 1, 1, 0, 2, None))
    ref = service.step(None, other, *ARGS[:2], 1, 1, 0, "paper", MAX_TOP).step
    assert shown_sums(out["op-depthwise"]) == pytest.approx({d.channel: d.value for d in ref.depthwise[:2]}, rel=1e-3)
    assert op.known_key(state, other) is None and op.known_key(state, photo) == state["key"]
    # A photo arriving while the sub-tab was never opened costs nothing here.
    assert fn(blocks, "op_photo")(False, other, *ARGS, 0, 3, None) == gr.skip()
    # Another block: its convs to choose from, the last one chosen, the position carried over.
    out = fn(blocks, "op_block")(photo, state, "block13", "paper", 5, 3, None)
    layer = next(v for c, v in out.items() if getattr(c, "elem_id", None) == "op-layer")
    assert layer["value"] == "block13_sepconv2" and [v for _, v in layer["choices"]] == ["block13_sepconv1",
                                                                                         "block13_sepconv2"]


def test_the_strongest_channel_here_and_an_upload_here(blocks, service, photo, upload_dir):
    state = by_id_state(blocks, photo)
    out = by_id(fn(blocks, "op_strongest")(photo, state, *ARGS, 3, 2, 2, None))
    best = service.strongest_channel(None, photo, *ARGS[:2], 3, 2, "paper")
    assert value(out["op-channel"]) == best and "Cache hit" in out["op-where"]
    ref = service.step(None, photo, *ARGS[:2], 3, 2, best, "paper", MAX_TOP).step
    assert shown_sums(out["op-depthwise"]) == pytest.approx({d.channel: d.value for d in ref.depthwise[:2]}, rel=1e-3)
    mine = upload(upload_dir, "here.png", 9)
    path, uploads = fn(blocks, "op_upload_button")(mine, [])
    assert path == mine["path"] and [u["path"] for u in uploads] == [mine["path"]]
    assert fn(blocks, "op_upload_button")(None, []) == gr.skip()


@pytest.mark.parametrize("name, args, message", [
    ("op_position", dict(block="x" * 5000), "Unknown block"),
    ("op_position", dict(block="block1"), "the stem"),
    ("op_position", dict(layer="block6_sepconv1"), "has the separable convs"),
    ("op_position", dict(variant="resnet"), "Wiring must be one of"),
    ("op_position", dict(row=-1), "Row must be"),
    ("op_position", dict(col=10**9), "Column must be"),
    ("op_position", dict(channel="nan"), "Channel must be"),
    ("op_position", dict(channel=[3]), "Channel must be"),
    ("op_position", dict(payload={"path": "/etc/passwd"}), "not an upload"),
    ("op_map_click", dict(evt=click("abc", 3)), "x must be a number"),
    ("op_map_click", dict(evt=click(5, 10**6)), "y must be a number"),
    ("op_map_click", dict(evt=gr.SelectData(None, {"index": "0,0", "value": None})), "A click must be"),
    ("op_photo_click", dict(evt=click(-1, 0)), "x must be a number"),
    ("op_search", dict(channel=10**6), "Channel must be"),
    ("op_search", dict(block=None), "Unknown block"),
])
def test_absurd_arguments_are_answered_with_messages(blocks, photo, name, args, message):
    """Called outside a page event, the handlers' messages are raised (on the page they are toasts)."""
    a = dict(payload=photo, state=None, block="block5", layer="block5_sepconv3", variant="paper", row=0, col=0,
             channel=0, shown=3, client=None, evt=click(1, 1), uploads=[])
    a.update(args)
    call = {
        "op_position": lambda: (a["payload"], a["state"], a["block"], a["layer"], a["variant"], a["row"], a["col"],
                                a["channel"], a["shown"], a["client"]),
        "op_map_click": lambda: (a["payload"], a["state"], a["block"], a["layer"], a["variant"], a["channel"],
                                 a["shown"], a["client"], a["evt"]),
        "op_photo_click": lambda: (a["payload"], a["state"], a["block"], a["layer"], a["variant"], a["channel"],
                                   a["shown"], a["client"], a["evt"]),
        "op_search": lambda: (a["block"], a["channel"], a["variant"], a["uploads"]),
    }[name]
    with pytest.raises(gr.Error, match=message) as caught:
        fn(blocks, name)(*call())
    assert len(caught.value.message) < 300 and "x" * 50 not in caught.value.message


def test_the_number_of_channels_shown_is_brought_into_range(blocks, photo):
    for asked, expected in ((0, 1), (99, op.SHOWN_MAX), ("lots", op.SHOWN_DEFAULT), (float("nan"), op.SHOWN_DEFAULT)):
        out = by_id(fn(blocks, "op_position")(photo, None, *ARGS, 0, 0, 0, asked, None))
        assert len(shown_sums(out["op-depthwise"])) == expected


def test_the_channel_search_shows_the_services_patches(blocks, service, photo, upload_dir, monkeypatch):
    two = [ServerPhoto(e.path, e.title) for e in example_images()[:2]]
    monkeypatch.setattr(OperationService, "default_photos", lambda self: two)
    mine = [upload(upload_dir, "mine.png", 7)]
    uploads = fn(blocks, "op_upload")(mine[0], [])
    assert uploads == [{"path": mine[0]["path"], "meta": {"_type": "gradio.FileData"}}]
    assert fn(blocks, "op_upload")(mine[0], uploads) == uploads  # the same photo counts once
    out = by_id(fn(blocks, "op_search")("block3", 11, "paper", uploads))
    ref = service.channel_patches([("your photo 1", mine[0]), *two], "block3", 11, "paper", k=8)
    captions = [caption for _, caption in out["op-patches"]]
    assert [c.split(" · ")[0] for c in captions] == [p.label for p in ref.patches]
    for caption, p in zip(captions, ref.patches):
        assert float(caption.split(" · ")[1].replace("−", "-")) == pytest.approx(p.value, rel=1e-2)
    assert "over 3 photos, 1 of them yours" in out["op-patches-note"]


def test_the_operation_endpoint_answers_the_services_numbers(service, photo):
    answer = operation_handler(service)(photo, " block4 ", "block4_sepconv2", 1, 2, 5, "article", 2)
    ref = service.step(None, photo, "block4", "block4_sepconv2", 1, 2, 5, "article", 2).step
    assert (answer["layer"], answer["row"], answer["col"], answer["channel"]) == ("block4_sepconv2", 1, 2, 5)
    assert [d["value"] for d in answer["depthwise"]] == pytest.approx([d.value for d in ref.depthwise], rel=1e-6)
    np.testing.assert_allclose(answer["depthwise"][0]["kernel"], ref.depthwise[0].kernel, rtol=1e-6)
    np.testing.assert_allclose(answer["depthwise"][0]["products"], ref.depthwise[0].products, rtol=1e-6, atol=1e-12)
    assert answer["pool"]["value"] == pytest.approx(ref.pool.value, rel=1e-6)
    for stage in answer["stages"]:  # each stage beside the model's own value, where the pass kept it
        if stage["model"] is not None:
            assert stage["value"] == pytest.approx(stage["model"], rel=1e-4, abs=1e-5)
    assert answer["add"]["shortcut_kind"] == "conv" and answer["value"] == pytest.approx(ref.value, rel=1e-6)
    assert answer["cost"]["standard_macs"] == ref.cost.standard_macs
    with pytest.raises(gr.Error, match="Channels shown must be"):
        operation_handler(service)(photo, "block4", "block4_sepconv2", 1, 2, 5, "paper", 17)
    with pytest.raises(gr.Error, match="has the separable convs"):
        operation_handler(service)(photo, "block4", "2", 1, 2, 5, "paper", 2)


def test_numbers_are_written_as_a_person_reads_them():
    assert operation_text.num(-0.0) == "0" and operation_text.num(-1.23456) == "−1.235"
    assert operation_text.term(-0.5) == "(−0.5)" and operation_text.term(0.5) == "0.5"
    grid = operation_text.number_grid(np.array([[1.0, -2.0], [np.nan, 0.0]]), np.array([[False, True], [False, False]]))
    assert grid.count("<td") == 4 and 'class="pad"' in grid and "−2" in grid and "<td></td>" in grid  # NaN: empty


def test_without_a_photo_the_sub_tab_says_how_to_get_one_and_keeps_nothing(blocks):
    out = by_id(fn(blocks, "op_show")(None, None, *ARGS, 0, 3, None))
    assert out["op-where"] == operation_text.NO_PHOTO and out["op-photo"] is None and out["op-depthwise"] == ""
    cleared = by_id(fn(blocks, "op_photo")(True, None, *ARGS, 0, 3, None))  # the photo removed: no stale step
    assert cleared["op-map"] is None and cleared["op-pointwise"] is None and cleared["op-stages"] == ""
    assert fn(blocks, "op_position")(None, None, *ARGS, 0, 0, 0, 3, None) == gr.skip()
