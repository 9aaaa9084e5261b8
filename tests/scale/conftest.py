"""A local Ray instance on this machine's 2 CPUs, with the Serve app of `scale/` in it: 2 model
replicas (half a CPU each, so both fit beside the ingress) and the ingress on a free port. Module
scope: Ray and its replicas stop when the module's tests are done, not at the end of the run."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.request
from pathlib import Path

import pytest

from bench.appserver import free_port

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 2


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def wait_for(predicate, timeout: float, what: str, pause: float = 0.5):
    """Polls `predicate()` until it returns something truthy; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(pause)
    raise TimeoutError(f"{what} not after {timeout:.0f} s")


@pytest.fixture(scope="session")
def serve_settings(settings, tmp_path_factory):
    return dataclasses.replace(settings, weights="kitchenware", model_store="ray",
                               export_dir=tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def serve_app(serve_settings):
    """Base URL (no trailing slash) of the Serve app, once both model replicas run."""
    import ray
    from ray import serve

    from scale.deployment import XceptionModel
    from scale.ingress import XceptionApp

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                                       "GRADIO_ANALYTICS_ENABLED": "False"}})
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        s = serve_settings
        model = XceptionModel.options(num_replicas=REPLICAS, ray_actor_options={"num_cpus": 0.5})
        app = XceptionApp.options(ray_actor_options={"num_cpus": 0.25}).bind(model.bind(s), s)
        serve.run(app, name=s.serve_app, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: get_json(url + "/healthz")["ready"], 120, "the app ready")
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def model_handle(serve_app, serve_settings):
    from ray import serve

    from demo.store_remote import MODEL_DEPLOYMENT

    return serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=serve_settings.serve_app)


@pytest.fixture(scope="module")
def local_store(serve_settings):
    """The single-process app's store, on the same settings."""
    from demo.store import ModelStore

    return ModelStore(dataclasses.replace(serve_settings, model_store="local")).start()
