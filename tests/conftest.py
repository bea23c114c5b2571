import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own base-model cache, so no test reuses another's training."""
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def read_only():
    """``read_only(folder)`` makes an existing folder unwritable for this test's process:
    permissions 0555 for an ordinary user; for root (who ignores permissions) a read-only bind
    mount of the folder onto itself. Undone after the test."""
    import os
    import subprocess

    undo = []

    def make(folder):
        if os.geteuid() != 0:
            paths = [folder, *[p for p in folder.rglob("*") if p.is_dir()]]
            for path in paths:
                path.chmod(0o555)
            undo.append(lambda: [p.chmod(0o755) for p in paths])
            return folder
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        undo.append(lambda: subprocess.run(["umount", str(folder)], check=True))
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        return folder

    yield make
    for step in reversed(undo):
        step()
