from __future__ import annotations

import os

import pytest

os.environ.setdefault("INSTRUCTRL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random causal LM directory (2 layers, width 32), shared by the session's tests."""
    from instructrl.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
