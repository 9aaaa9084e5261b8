"""What the page makes of a visitor's typing: class names matched as a person means them, and
number boxes brought back into range (so a box never shows a value the view did not use)."""

from __future__ import annotations

import pytest

from demo.services import UserError
from demo.ui.classify_tab import find_class
from demo.ui.explore.activations import clamped

KITCHEN = ("cup", "fork", "glass", "knife", "plate", "spoon")


@pytest.mark.parametrize("asked", ["fork", "Fork", " Fork ", "FORK\t", "fork\n"])
def test_class_names_ignore_case_and_extra_spaces(asked):
    assert find_class(KITCHEN, asked) == "fork"


def test_multi_word_classes_match_with_any_spacing():
    assert find_class(("tabby cat", "tiger cat"), "  Tiger   Cat ") == "tiger cat"


def test_an_unknown_class_lists_the_classes():
    with pytest.raises(UserError, match="'Frok' is not a class of these weights. Their classes: cup, fork"):
        find_class(KITCHEN, "Frok")


@pytest.mark.parametrize("value, expected", [(100, 64), ("100", 64), (0, 1), (-5, 1), (7.6, 8), ("12", 12),
                                             (None, 16), ("", 16), ("lots", 16), (float("nan"), 16), (True, 16)])
def test_number_boxes_are_brought_into_range(value, expected):
    assert clamped(value, 1, 64, 16) == expected
