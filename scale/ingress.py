"""The ingress: the same FastAPI + Gradio app as `python app.py` (UI, API, Netron and exports on
one port), built inside a Serve replica with a `RemoteModelStore` over the model deployment's
handle, and `build_app`, the application `serve run` / `serve deploy` start from the config.

Serve config files name `scale.ingress:build_app`; its `args` are unused: every setting comes
from the environment (the config's `runtime_env.env_vars`), read once here and passed down.
"""

from __future__ import annotations

import fastapi
from ray import serve
from ray.serve.handle import DeploymentHandle

from scale.deployment import XceptionModel
from demo.server import create_app
from demo.store_remote import RemoteModelStore
from xception_core.settings import Settings

INGRESS_DEPLOYMENT = "XceptionApp"


@serve.deployment(name=INGRESS_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0.5},
                  max_ongoing_requests=256)
@serve.ingress()
class XceptionApp:
    """The web app in one replica. One, not more: Gradio keeps each visitor's queue and session
    state in the process that served the page, so a second ingress replica would need sticky
    sessions; the work is in the model replicas anyway.

    Args:
        model: Handle of the `XceptionModel` deployment.
        settings: The app's settings.
    """

    def __init__(self, model: DeploymentHandle, settings: Settings):
        self.store = RemoteModelStore(model, settings)

    def __serve_build_asgi_app__(self) -> fastapi.FastAPI:
        return create_app(self.store.settings, store=self.store)


def application(settings: Settings) -> serve.Application:
    """The Serve application: the ingress bound to the model deployment, both given `settings`."""
    return XceptionApp.bind(XceptionModel.bind(settings), settings)


def build_app(args: dict) -> serve.Application:
    """`serve run`'s builder: `application(Settings.from_env())` (`args` unused)."""
    return application(Settings.from_env())
