"""The page on Ray Serve: `build_page` → application `xception-page` (route prefix `/`), the same
FastAPI + Gradio app as `python app.py` (UI, Netron, exports, `/docs`, `/healthz`) in one
replica, built with a `RemoteModelStore` over a handle to the model deployment of the other
application (`xception`, built by `scale.deployment.build_models`).

Config files name the builder; its `args` are unused: every setting comes from the environment
(the config's `runtime_env.env_vars`), read once here and passed down.
"""

from __future__ import annotations

import fastapi
from ray import serve

from demo.server import create_app
from demo.store_remote import MODEL_DEPLOYMENT, RemoteModelStore
from xception_core.settings import Settings

INGRESS_DEPLOYMENT = "XceptionApp"
PAGE_APP = "xception-page"  # the page's application; Settings.serve_app names the models' one


@serve.deployment(name=INGRESS_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=256)
@serve.ingress()
class XceptionApp:
    """The web page in one replica. One, not more: Gradio keeps each visitor's queue and session
    state in the process that served the page, so a second page process needs sticky sessions in
    front of it, which Serve's proxy does not do (`scale/k8s/page.yaml` runs N page processes
    behind a cookie-affine Ingress instead). The plain API does not come here (`scale/api.py`).

    Args:
        settings: The app's settings; `settings.serve_app` names the model deployment's application.
    """

    def __init__(self, settings: Settings):
        # The models are another application, deployed beside this one: no check that they exist
        # yet. Until their replicas run, the page says the model is loading (`RemoteModelStore`).
        model = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=settings.serve_app, _check_exists=False)
        self.store = RemoteModelStore(model, settings)

    def __serve_build_asgi_app__(self) -> fastapi.FastAPI:
        return create_app(self.store.settings, store=self.store)


def build_page(args: dict) -> serve.Application:
    """`scale.ingress:build_page`: the page's ingress (`args` unused)."""
    return XceptionApp.bind(Settings.from_env())
