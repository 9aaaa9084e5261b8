"""Settings for where the models run (XCEPTION_MODEL_STORE, XCEPTION_SERVE_APP)."""

from __future__ import annotations

import pytest

from xception.settings import Settings


def test_models_run_in_process_unless_told_otherwise():
    assert Settings.from_env({}).model_store == "local"
    assert Settings.from_env({}).serve_app == "xception"


def test_the_ray_store_and_its_application_are_read_from_the_environment():
    s = Settings.from_env({"XCEPTION_MODEL_STORE": " Ray ", "XCEPTION_SERVE_APP": "class-42"})
    assert (s.model_store, s.serve_app) == ("ray", "class-42")


def test_an_unknown_store_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"XCEPTION_MODEL_STORE must be one of \['local', 'ray'\]"):
        Settings.from_env({"XCEPTION_MODEL_STORE": "k8s"})
