"""Page text from the loaded model: the weights panel, the calculator's messages, the article's
citation and the stem sizes; no server path ever reaches a visitor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from demo import errors
from demo.errors import LoadFailure
from demo.store import SlotStatus
from demo.ui import text
from demo.ui.explore.separable import calculator_markdown
from xception_core.runtime.introspection import describe
from xception_core.weights.fetch import WeightsFailure


def served(preset: str, labels: tuple[str, ...], size: int):
    info = SimpleNamespace(preset=preset, variant="paper")
    return SimpleNamespace(info=info, title=f"{preset} weights", labels=labels, input_size=size)


KITCHEN = ("cup", "fork", "glass", "knife", "plate", "spoon")
FETCH_ERROR = ("could not fetch xception_weights_tf_dim_ordering_tf_kernels.h5 from https://storage.googleapis.com/x "
               "and it is not in the Keras cache (/root/.keras/models): <urlopen error [Errno -3] resolution>")


def test_the_panel_says_which_weights_are_live_what_they_know_and_why_not_imagenet():
    statuses = [SlotStatus("imagenet", "ImageNet-1k, Keras official weights", "failed", 1.0, FETCH_ERROR,
                           LoadFailure(WeightsFailure.OFFLINE)),
                SlotStatus("kitchenware", "Kitchenware-6, offline weights", "ready", 3.0)]
    panel = text.weights_panel(statuses, served("kitchenware", KITCHEN, 150))
    assert "Live weights: kitchenware weights" in panel and "150×150" in panel
    assert "cup, fork, glass, knife, plate, spoon" in panel and "even a cat" in panel
    assert "not available**: could not be downloaded here (no network access)" in panel
    assert "python -m xception_core fetch imagenet" in panel
    line = text.status_line(statuses, True)
    assert "unavailable: could not be downloaded" in line
    for shown in (panel, line):
        assert "/root" not in shown and "urlopen" not in shown and "Errno" not in shown


def test_the_panel_for_imagenet_has_no_advice_and_a_file_model_lists_its_classes():
    panel = text.weights_panel([], served("imagenet", tuple(f"c{i}" for i in range(1000)), 299))
    assert "1,000 everyday object classes" in panel and "fetch" not in panel
    assert "knows 3 classes: a, b, c" in text.weights_panel([], served("file", ("a", "b", "c"), 224)).replace(
        "They know", "knows")
    assert "Loading" in text.weights_panel([], None)


@pytest.mark.parametrize("failure, reason", [
    (LoadFailure(WeightsFailure.DAMAGED), "failed its checksum"),
    (LoadFailure(WeightsFailure.OFFLINE), "no network access"),
    (LoadFailure(WeightsFailure.NOT_FOUND), "no longer has the file"),
    (LoadFailure(WeightsFailure.UNEXPECTED), "not the file"),
    (LoadFailure(WeightsFailure.CACHE_UNWRITABLE), "cannot write its weights cache"),
    (LoadFailure(WeightsFailure.UNKNOWN, "BadZipFile"), "failed to load (BadZipFile; the server log says why)"),
    (LoadFailure(WeightsFailure.UNKNOWN), "failed to load (the server log says why)"),
    (None, "failed to load (the server log says why)"),
])
def test_failure_reasons_come_from_the_recorded_cause(failure, reason):
    assert reason in errors.unavailable_reason(failure)


def test_the_words_follow_the_cause_never_the_message():
    """An error text full of words the old guess searched for ('url', 'resolve', 'sha256') says
    nothing: only the recorded cause picks the reason, and the text never reaches the page."""
    misleading = "could not fetch from url: resolve failed, sha256 mismatch in /srv/x.h5 (pip download)"
    damaged = SlotStatus("imagenet", "ImageNet", "failed", 1.0, misleading, LoadFailure(WeightsFailure.DAMAGED))
    unknown = SlotStatus("kitchenware", "Kitchenware", "failed", 1.0, misleading, LoadFailure(WeightsFailure.UNKNOWN))
    line = text.status_line([damaged, unknown], False)
    assert "ImageNet: unavailable: the downloaded file failed its checksum" in line
    assert "Kitchenware: unavailable: failed to load (the server log says why)" in line
    assert "/srv" not in line and "pip download" not in line and "url" not in line


def test_calculator_gives_one_message_per_bad_value_and_never_rounds():
    assert "**219**" in calculator_markdown(3, 3, 64, 1) and "1,728" in calculator_markdown(3, 3, 64, 1)
    said = calculator_markdown(3.5, 0, "lots", None)
    assert "Nothing computed" in said
    assert "kernel size k must be a whole number" in said and "3.5" in said
    assert "input channels must be a whole number from 1" in said and "'0'" in said
    assert "output channels" in said and "output side" in said
    assert "4×4" not in said  # 3.5 is refused, not computed as 4×4


def test_the_article_is_named_and_numbers_are_the_loaded_models(paper_model):
    loaded = describe(paper_model)  # 299 px here; the page says which numbers are the reference's
    intro = text.article_intro(loaded)
    assert "“Xception: Implementing from scratch using Tensorflow”" in intro and "Towards Data Science" in intro
    assert "Chinese" in intro and "299 px reference" in intro
    assert "takes 299 px: its paper stem goes 299→149→147." in intro
    assert "Nothing" not in intro


def test_gradcam_note_uses_the_loaded_grid():
    assert "5×5 for this model's 150×150 input" in text.gradcam_note(5, 150)
    assert "299 px reference" in text.gradcam_note()


def test_upload_note_states_the_limit_and_the_squash():
    note = text.upload_note("10mb", 150)
    assert "up to 10 MB" in note and "squashed to its 150×150 input (not cropped)" in note


def test_download_link_points_at_the_models_route():
    link = text.download_link("xception-kitchenware-paper.keras-bcb2-9c5a.keras", 84_775_541)
    assert 'href="models/xception-kitchenware-paper.keras-bcb2-9c5a.keras"' in link
    assert "paper wiring (81 MB)" in link
