"""A local Ray instance on this machine's 2 CPUs, with the applications of the shipped
`scale/serve_config.yaml` deployed as `serve run` deploys them (the file itself, validated by
Serve's own schema; only the proxy's host and port differ, so that tests never take port 8000).
Module scope: Ray and its replicas stop when the module's tests are done, not at the end of the run.

Ray is capped so that the tests pass beside other processes holding most of the machine's memory
(a laptop with a browser and an IDE open, or `python -m bench.hog 10 -- pytest tests/scale`): its
object store is `OBJECT_STORE_BYTES` (what passes through it here are photos and one photo's
activations; the default would reserve 30% of free memory), and its memory monitor, which kills
a worker when the whole node's used memory (everyone's, not only Ray's) passes a threshold
(0.95 by default), only acts at `MEMORY_USAGE_THRESHOLD`: below that, a replica killed for other
processes' memory fails a test for nothing the app did."""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.request
from pathlib import Path

import pytest
import yaml

from bench.appserver import free_port, wait_for, wait_ready

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = ROOT / "scale" / "serve_config.yaml"
CPUS = 2  # the README's one-machine case: the config must answer on this many
OBJECT_STORE_BYTES = 256 * 2**20
MEMORY_USAGE_THRESHOLD = 0.99  # of the node's memory (Ray's `memory_usage_threshold`)


def serve_config() -> dict:
    """The shipped Serve config, as a dict."""
    return yaml.safe_load(SERVE_CONFIG.read_text())


def model_deployment_config() -> dict:
    """The model deployment's entry in the shipped config."""
    from demo.store_remote import MODEL_DEPLOYMENT

    deployments = [d for app in serve_config()["applications"] for d in app["deployments"]]
    return next(d for d in deployments if d["name"] == MODEL_DEPLOYMENT)


REPLICAS = model_deployment_config()["autoscaling_config"]["initial_replicas"]


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


@pytest.fixture(scope="session")
def serve_settings(settings, tmp_path_factory):
    return dataclasses.replace(settings, weights="kitchenware", model_store="ray",
                               export_dir=tmp_path_factory.mktemp("exports"))


def running_replicas(replicas: dict[str, int]) -> int:
    """RUNNING replicas in a `/healthz` "replicas" count (on 2 CPUs the autoscaler may also ask for
    more under load, which wait as PENDING_ALLOCATION: the shipped config does that here too)."""
    return replicas.get("RUNNING", 0)


@pytest.fixture(scope="module")
def serve_app(serve_settings):
    """Base URL (no trailing slash) of the shipped config's Serve app on a Ray of 2 CPUs, once the
    app answers and its initial model replicas run."""
    import ray
    from ray import serve

    from bench.scale import deploy_config
    from demo.store_remote import RemoteModelStore

    ray.init(address="local", num_cpus=CPUS, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, namespace="serve", object_store_memory=OBJECT_STORE_BYTES,
             _system_config={"memory_usage_threshold": MEMORY_USAGE_THRESHOLD},
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    port = free_port()
    try:
        deploy_config(port)  # what `serve run scale/serve_config.yaml` deploys
        url = f"http://127.0.0.1:{port}"
        store = RemoteModelStore(None, serve_settings)  # only for its count of replicas by state
        wait_ready(url, timeout=300)
        wait_for(lambda: running_replicas(store.replicas()) >= REPLICAS, 240, "the initial replicas running")
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
