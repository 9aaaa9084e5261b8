"""Every event argument is checked on the server (issue 9, item 4): tile counts, channel indices,
block names, choices and string lengths from a client are refused with a short message before
any work is done. A tiny random-weights model; no Gradio server."""

from __future__ import annotations

import pytest
from PIL import Image

from demo.services import UserError
from demo.services.explore import N_MAX, ExploreService
from demo.ui.explore.separable import calculator_markdown


@pytest.fixture(scope="module")
def explore(store):
    service = ExploreService(store)
    record, _ = service.activations(Image.new("RGB", (64, 48), (120, 60, 30)))
    return service, record


@pytest.mark.parametrize("n", [10**9, 0, -3, 1.5, True, "lots", None, [16]])
def test_tile_counts_outside_the_slider_are_refused_before_any_tile_is_drawn(explore, n, monkeypatch):
    service, record = explore

    def drawn(*args, **kwargs):
        raise AssertionError(f"a tile was drawn for n={n!r} before the count was checked")

    for name in ("map_tile", "map_tiles"):  # refused before any drawing: a draw fails the test
        monkeypatch.setattr(f"demo.services.explore.{name}", drawn)
    with pytest.raises(UserError, match="whole number from 1 to 64"):
        service.tiles(record, "block14", n, True)


def test_the_largest_allowed_view_is_bounded(explore):
    service, record = explore
    tiles = service.tiles(record, "block14", N_MAX, True)
    assert len(tiles) == N_MAX and all(max(tile.size) <= 256 for tile, _, _ in tiles)
    assert len(service.tiles(record, "block14", "3", False)) == 3  # a number sent as text is fine


@pytest.mark.parametrize("channel", [-1, 2048, 10**12, "7; drop", 3.5])
def test_channel_indices_outside_the_block_are_refused(explore, channel):
    service, record = explore
    with pytest.raises(UserError, match="Channel must be a whole number from 0 to 2,047"):
        service.full(record, "block14", channel, True)


@pytest.mark.parametrize("block", [5, None, "block15", "x" * 1_000_000, ["block1"]])
def test_block_names_are_checked_and_echoed_short(explore, block):
    service, record = explore
    for call in (lambda: service.tiles(record, block, 4, True), lambda: service.full(record, block, 0, True),
                 lambda: service.activations_json(None, block)):
        with pytest.raises(UserError, match="Unknown block") as excinfo:
            call()
        message = str(excinfo.value)
        assert len(message) < 400 and "object has no attribute" not in message


def test_choices_are_checked(explore):
    service, _ = explore
    with pytest.raises(UserError, match="which must be one of"):
        service.description("everything")
    with pytest.raises(UserError, match="variant must be one of"):
        service.activations(Image.new("RGB", (8, 8)), "resnet")


@pytest.mark.parametrize("args", [(10**9, 3, 64, 1), (3, -1, 64, 1), (3, 3, "x" * 10_000, 1), (3, 3, 64, None)])
def test_the_calculator_refuses_numbers_it_should_not_compute(args):
    said = calculator_markdown(*args)
    assert "Nothing computed" in said and len(said) < 400 and "x" * 100 not in said
