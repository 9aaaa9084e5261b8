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


def deployments_by_app() -> dict[str, dict]:
    """{application name: {deployment name: its schema}} of the shipped config."""
    apps = ServeDeploySchema.model_validate(serve_config()).applications
    return {app.name: {d.name: d for d in app.deployments} for app in apps}


def test_the_config_names_what_the_code_has():
    import importlib

    from scale.api import API_DEPLOYMENT, API_PREFIX
    from scale.ingress import INGRESS_DEPLOYMENT, PAGE_APP
    from demo.store_remote import MODEL_DEPLOYMENT
    from xception_core.settings import Settings

    apps = {app.name: app for app in ServeDeploySchema.model_validate(serve_config()).applications}
    for app in apps.values():
        module, attr = app.import_path.split(":")
        assert callable(getattr(importlib.import_module(module), attr))
    models, page = apps[Settings().serve_app], apps[PAGE_APP]  # the models' application is the store's
    assert (models.route_prefix, page.route_prefix) == (API_PREFIX, "/")
    assert models.runtime_env == page.runtime_env  # one set of settings for both
    assert {d.name for d in models.deployments} == {MODEL_DEPLOYMENT, API_DEPLOYMENT}
    assert {d.name for d in page.deployments} == {INGRESS_DEPLOYMENT}
    model = next(d for d in models.deployments if d.name == MODEL_DEPLOYMENT)
    scaling = model.autoscaling_config
    assert 1 <= scaling["min_replicas"] <= scaling["initial_replicas"] <= scaling["max_replicas"]
    settings = Settings.from_env(models.runtime_env["env_vars"])
    assert model.max_ongoing_requests >= settings.max_batch  # a full batch can be in one replica
    assert page.deployments[0].num_replicas == 1  # Gradio sessions live in one process


def test_the_shipped_config_fits_two_cpus():
    """`serve run` on 2 CPUs: the page and the API's front book no CPU (so neither is left behind
    the model replicas), and the initial model replicas fit in what is left."""
    from scale.api import API_DEPLOYMENT
    from scale.ingress import INGRESS_DEPLOYMENT, PAGE_APP
    from demo.store_remote import MODEL_DEPLOYMENT
    from xception_core.settings import Settings

    apps = deployments_by_app()
    assert apps[PAGE_APP][INGRESS_DEPLOYMENT].ray_actor_options.num_cpus == 0
    assert apps[Settings().serve_app][API_DEPLOYMENT].ray_actor_options.num_cpus == 0
    model = apps[Settings().serve_app][MODEL_DEPLOYMENT]
    assert model.autoscaling_config["initial_replicas"] * model.ray_actor_options.num_cpus <= 2


def test_the_page_manifest_runs_page_processes_on_the_rayservice_models():
    """scale/k8s/page.yaml: `python app.py` pods on the RayService's model application, one
    Ingress with cookie affinity for the page and Ray Serve for the API, an autoscaler on the pods."""
    from demo.server import Budgets
    from scale.api import API_PREFIX
    from xception_core.settings import Settings

    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "scale" / "k8s" / "page.yaml").read_text())}
    assert set(docs) == {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    deployment, service, ingress, hpa = (docs[k] for k in ("Deployment", "Service", "Ingress",
                                                           "HorizontalPodAutoscaler"))
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.model_store == "ray" and settings.port == 7860 and "app.py" in container["args"][0]
    models_app = next(a for a in serve_config()["applications"] if a["route_prefix"] == API_PREFIX)
    assert settings.serve_app == models_app["name"]
    assert settings.weights == models_app["runtime_env"]["env_vars"]["XCEPTION_WEIGHTS"]
    name = rayservice()["metadata"]["name"]
    assert env["RAY_HEAD"] == f"{name}-head-svc:6379"
    assert container["image"] == rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]["image"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m")) * 2**20 >= Budgets().body_bytes
    paths = {p["path"]: p["backend"]["service"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths[API_PREFIX] == {"name": f"{name}-serve-svc", "port": {"number": 8000}}
    assert paths["/"]["name"] == service["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
