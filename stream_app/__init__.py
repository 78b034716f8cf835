"""The stream worker: model, state, micro-batch engine, Faust app, bootstrap and retrain.

Import submodules directly (``stream_app.model``); this package root stays light so the CLI
starts fast and the lookup consumer never pulls in the model by accident.
"""
