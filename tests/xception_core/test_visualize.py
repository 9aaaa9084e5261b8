"""Feature-map tiles: the true grid (flat cells), one colour scale shared by several tiles, cell lines."""

from __future__ import annotations

import numpy as np
import pytest

from xception_core.io.visualize import colorize, map_tile


def test_nearest_tiles_show_each_cell_as_a_flat_square():
    values = np.arange(25, dtype=np.float32).reshape(5, 5)
    tile = np.asarray(map_tile(values, 130, nearest=True))
    assert tile.shape == (130, 130, 3)
    for i in range(5):
        for j in range(5):
            cell = tile[i * 26:(i + 1) * 26, j * 26:(j + 1) * 26].reshape(-1, 3)
            assert (cell == cell[0]).all(), (i, j)  # one colour per cell: no interpolation
    # Bicubic (the old look) blends neighbours inside a cell.
    smooth = np.asarray(map_tile(values, 130)).reshape(130, 130, 3)[26:52, 26:52].reshape(-1, 3)
    assert not (smooth == smooth[0]).all()


def test_a_shared_range_keeps_a_weak_map_dim():
    strong = np.full((3, 3), 8.0, dtype=np.float32)
    strong[0, 0] = 0.0
    weak = strong / 4
    own_strong = np.asarray(map_tile(strong, 30, nearest=True))
    own_weak = np.asarray(map_tile(weak, 30, nearest=True))
    assert (own_strong == own_weak).all()  # each scaled by its own range: the difference is lost
    shared_weak = np.asarray(map_tile(weak, 30, nearest=True, value_range=(0.0, 8.0)))
    expected = colorize(np.array([[0.25]], dtype=np.float32))[0, 0]
    assert np.abs(shared_weak[15, 15].astype(int) - expected.astype(int)).max() <= 2
    top = colorize(np.array([[1.0]], dtype=np.float32))[0, 0]
    assert np.abs(own_strong[15, 15].astype(int) - top.astype(int)).max() <= 2


def test_grid_lines_are_drawn_between_cells_only_when_cells_are_wide():
    values = np.zeros((4, 4), dtype=np.float32)
    lined = np.asarray(map_tile(values, 40, nearest=True, value_range=(-1.0, 1.0), grid=True))
    plain = np.asarray(map_tile(values, 40, nearest=True, value_range=(-1.0, 1.0)))
    assert (lined[10] < plain[10]).all() and (lined[5, 5] == plain[5, 5]).all()
    tiny_cells = np.asarray(map_tile(np.zeros((20, 20), np.float32), 40, nearest=True, grid=True))
    assert (tiny_cells == tiny_cells[0, 0]).all()  # 2 px cells: lines would hide them


@pytest.mark.parametrize("value_range", [(1.0, 1.0), (2.0, 1.0)])
def test_an_empty_range_draws_the_low_end(value_range):
    tile = np.asarray(map_tile(np.ones((2, 2), np.float32), 8, nearest=True, value_range=value_range))
    assert (tile == colorize(np.zeros((1, 1), np.float32))[0, 0]).all()


@pytest.mark.parametrize(("h", "side", "grid", "value_range"), [(10, 130, True, (0.0, 3.0)), (7, 133, True, (-1.0, 2.0)),
                                                                 (19, 133, False, (0.5, 0.5)), (5, 128, True, (0.0, 1.0))])
def test_the_stack_of_tiles_is_the_tiles_one_by_one(h, side, grid, value_range):
    """`map_tiles` draws exactly what `map_tile` draws for each map (a side that is no whole number
    of cells, 128 for 5 cells, goes tile by tile)."""
    from xception_core.io.visualize import map_tiles

    maps = np.random.default_rng(h).normal(size=(8, h, h)).astype(np.float32)
    stack = map_tiles(maps, side, value_range, grid=grid)
    for tile, m in zip(stack, maps, strict=True):
        one = map_tile(m, side, nearest=True, value_range=value_range, grid=grid)
        assert tile.size == (side, side) and np.array_equal(np.asarray(tile), np.asarray(one))
