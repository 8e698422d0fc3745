"""The feedback web app: labelers write prompts and demonstrations, rate and rank model outputs.

`create_app(settings)` builds the FastAPI app; nothing connects to a database at import time and
nothing here imports torch (generation jobs run `instructrl generate` in a subprocess).
"""
