"""The Serve config and the KubeRay manifest: valid for Ray's own schema, the same application
in both, naming deployments and a builder that exist, with batching that fits the replicas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray", reason="needs requirements-scale.txt")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

pytestmark = pytest.mark.scale
ROOT = Path(__file__).resolve().parents[2]


def serve_config() -> dict:
    return yaml.safe_load((ROOT / "scale" / "serve_config.yaml").read_text())


def rayservice() -> dict:
    return yaml.safe_load((ROOT / "scale" / "k8s" / "rayservice.yaml").read_text())


def test_both_files_hold_one_valid_application():
    local = ServeDeploySchema.model_validate(serve_config())
    cluster = ServeDeploySchema.model_validate(yaml.safe_load(rayservice()["spec"]["serveConfigV2"]))
    assert local.applications == cluster.applications
    assert rayservice()["spec"]["rayClusterConfig"]["rayVersion"] in (ROOT / "requirements-scale.txt").read_text()


def test_the_config_names_what_the_code_has():
    import importlib

    from scale.ingress import INGRESS_DEPLOYMENT
    from demo.store_remote import MODEL_DEPLOYMENT
    from xception_core.settings import Settings

    app = ServeDeploySchema.model_validate(serve_config()).applications[0]
    module, attr = app.import_path.split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert app.name == Settings().serve_app
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {MODEL_DEPLOYMENT, INGRESS_DEPLOYMENT}
    model = deployments[MODEL_DEPLOYMENT]
    scaling = model.autoscaling_config
    assert 1 <= scaling["min_replicas"] <= scaling["initial_replicas"] <= scaling["max_replicas"]
    settings = Settings.from_env(app.runtime_env["env_vars"])
    assert model.max_ongoing_requests >= settings.max_batch  # a full batch can be in one replica
    assert deployments[INGRESS_DEPLOYMENT].num_replicas == 1  # Gradio sessions live in one process


def test_the_shipped_config_fits_two_cpus():
    """`serve run` on 2 CPUs: the ingress books no CPU (so it is never left behind the model
    replicas), and the initial model replicas fit in what is left."""
    from scale.ingress import INGRESS_DEPLOYMENT
    from demo.store_remote import MODEL_DEPLOYMENT

    app = ServeDeploySchema.model_validate(serve_config()).applications[0]
    deployments = {d.name: d for d in app.deployments}
    assert deployments[INGRESS_DEPLOYMENT].ray_actor_options.num_cpus == 0
    model = deployments[MODEL_DEPLOYMENT]
    assert model.autoscaling_config["initial_replicas"] * model.ray_actor_options.num_cpus <= 2
