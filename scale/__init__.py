"""Serving the app on Ray Serve: model replicas that batch, scale and are replaced when they die
(`scale.deployment`), behind the same FastAPI + Gradio app (`scale.ingress`). Needs
`requirements-scale.txt`; the app itself never imports this package."""
