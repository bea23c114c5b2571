import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own base-model cache, so no test reuses another's training."""
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
