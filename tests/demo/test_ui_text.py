"""Page text from the loaded model: the model status, the calculator's messages, the article's
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
from xception_core.weights.presets import preprocessing_for


def served(preset: str, labels: tuple[str, ...], size: int, key: str | None = None):
    info = SimpleNamespace(preset=preset, variant="paper")
    return SimpleNamespace(key=key or preset, info=info, title=f"{preset} weights", labels=labels, input_size=size,
                           preprocessing=preprocessing_for(preset))


KITCHEN = ("cup", "fork", "glass", "knife", "plate", "spoon")
FETCH_ERROR = ("could not fetch xception_weights_tf_dim_ordering_tf_kernels.h5 from https://storage.googleapis.com/x "
               "and it is not in the Keras cache (/root/.keras/models): <urlopen error [Errno -3] resolution>")


def test_the_status_says_which_weights_are_live_what_they_know_and_why_not_imagenet():
    statuses = [SlotStatus("imagenet", "ImageNet-1k, Keras official weights", "failed", 1.0, FETCH_ERROR,
                           LoadFailure(WeightsFailure.OFFLINE)),
                SlotStatus("kitchenware", "Kitchenware-6, offline weights", "ready", 3.0)]
    status = text.model_status(statuses, served("kitchenware", KITCHEN, 150))
    assert status.startswith("**Model status: ready**") and "live weights **kitchenware weights**" in status
    assert "150×150" in status and "cup, fork, glass, knife, plate, spoon" in status and "even a cat" in status
    assert "nearest-neighbour resize, as Keras's `load_img` feeds these weights" in status  # the weights' own filter
    assert "ImageNet-1k, Keras official weights unavailable: could not be downloaded here (no network" in status
    assert status.count("cup, fork") == 1  # said once, not three times
    help_text = text.imagenet_help(statuses, served("kitchenware", KITCHEN, 150))
    assert "python -m xception_core fetch imagenet" in help_text
    line = text.status_line(statuses, True)
    assert "unavailable: could not be downloaded" in line
    for shown in (status, help_text, line):
        assert "/root" not in shown and "urlopen" not in shown and "Errno" not in shown


def test_imagenet_advice_only_where_imagenet_was_asked_for_and_failed():
    taught = served("file", ("mug", "plant"), 299, key="/x/taught.keras")
    ready = [SlotStatus("/x/taught.keras", "taught.keras", "ready", 2.0)]
    assert text.imagenet_help(ready, taught) is None  # the visitor's own weights: no ImageNet advice
    status = text.model_status(ready, taught)
    assert "they know 2 classes: mug, plant" in status and "ImageNet" not in status
    chosen = [SlotStatus("kitchenware", "Kitchenware-6, offline weights", "ready", 2.0)]
    assert text.imagenet_help(chosen, served("kitchenware", KITCHEN, 150)) is None  # not requested: no advice
    imagenet = served("imagenet", tuple(f"c{i}" for i in range(1000)), 299)
    assert "1,000 everyday object classes" in text.model_status([], imagenet)
    assert text.imagenet_help([], imagenet) is None


def test_a_failed_load_is_never_called_loading():
    failed = [SlotStatus("kitchenware", "Kitchenware-6, offline weights", "failed", 4.0, "BadZipFile: bad",
                         LoadFailure(WeightsFailure.UNKNOWN, "BadZipFile"))]
    status = text.model_status(failed, None)
    assert "loading" not in status and status.startswith("**Model status: unavailable**")
    assert "unavailable: failed to load (BadZipFile" in status
    loading = [SlotStatus("kitchenware", "Kitchenware-6, offline weights", "loading", 12.4)]
    said = text.model_status(loading, None)
    assert said.startswith("**Model status: loading**") and "loading (12 s)" in said
    assert "downloads" not in said  # cached weights load too: nothing is claimed about downloading


def test_an_unknown_class_is_answered_with_the_classes():
    said = text.unknown_class(" Frok ", KITCHEN)
    assert "' Frok '" in said and "cup, fork, glass, knife, plate, spoon" in said
    many = text.unknown_class("x" * 500, tuple(f"c{i}" for i in range(1000)))
    assert "c19, … (1,000 in all)" in many and "c20" not in many and len(many) < 400


def test_a_small_photo_is_said_to_be_enlarged():
    model = served("kitchenware", KITCHEN, 150)
    model.precision = "fp32"
    assert "enlarged 19× to 150×150" in text.classify_info(model, 0.01, (8, 8))
    assert "only 100×60 pixels" in text.classify_info(model, 0.01, (100, 60))  # 2.5×: said
    assert "enlarged" not in text.classify_info(model, 0.01, (120, 90))  # 1.7×: not worth a word
    assert "enlarged" not in text.classify_info(model, 0.01, (1024, 768))


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
    assert "output side is empty: type a whole number from 1 to 100,000" in said and "None" not in said


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
    assert "paper wiring (85 MB)" in link  # decimal MB, as a file manager shows 84,775,541 bytes


def test_file_sizes_are_said_one_way_and_no_text_guesses_them():
    from demo.ui import teach_text

    assert text.file_size(83_985_776) == "84 MB" and text.file_size(13_400) == "13 kB" and text.file_size(12) == "1 kB"
    assert "90 MB" not in teach_text.DOWNLOAD_NOTE  # the button says the measured size
