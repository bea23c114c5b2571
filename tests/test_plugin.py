"""A third-party method plugin, installed from its own distribution, is used like a built-in."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "uqbench-margin"


def _pip_install(source: Path, target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The README's example plugin plus a broken one, pip-installed into a private folder."""
    root = tmp_path_factory.mktemp("plugins")
    shutil.copytree(EXAMPLE, root / "margin")
    broken = root / "broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "uqbench-broken"\nversion = "0.0.1"\n'
        '[project.entry-points."uqbench.methods"]\nbroken = "uqbench_broken:Nothing"\n'
        '[tool.setuptools]\npy-modules = ["uqbench_broken"]\n'
    )
    (broken / "uqbench_broken.py").write_text("import a_module_that_is_not_installed\n")
    target = root / "site"
    _pip_install(root / "margin", target)
    _pip_install(broken, target)
    return target


def _uqbench(site, *args, cache):
    env = os.environ | {"PYTHONPATH": str(site), "UQBENCH_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "uqbench", *args], capture_output=True, text=True, env=env
    )


def test_list_shows_the_plugin_with_its_distribution_and_the_broken_one(site, tmp_path):
    done = _uqbench(site, "list", cache=tmp_path)
    lines = done.stdout.splitlines()
    margin = next(line for line in lines if line.strip().startswith("margin"))
    assert "uqbench-margin 0.1.0" in margin and "uqbench_margin:Margin" in margin
    broken = next(line for line in lines if line.strip().startswith("broken"))
    assert "BROKEN" in broken and "a_module_that_is_not_installed" in broken
    assert any(line.strip().startswith("msp") for line in lines)  # the others still show
    assert done.returncode == 1  # a broken plugin makes `list` fail, for scripts


def test_fit_runs_the_plugin_with_its_own_options(site, tmp_path):
    done = _uqbench(
        site,
        "fit",
        "method=margin",
        "method.temperature=2",
        "trainer.max_epochs=2",
        f"out={tmp_path}",
        "name=m",
        cache=tmp_path / "cache",
    )
    assert done.returncode == 0, done.stderr
    assert "method=margin" in done.stdout
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["method_args"]["temperature"] == 2.0
    bad = _uqbench(site, "fit", "method=margin", "method.temp=2", cache=tmp_path / "cache")
    assert bad.returncode == 2 and "method.temperature (float)" in bad.stderr
    broken = _uqbench(site, "fit", "method=broken", cache=tmp_path / "cache")
    assert broken.returncode == 2 and "failed to import" in broken.stderr


def _tiny_dist(root: Path, dist: str, module: str) -> Path:
    folder = root / dist
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "1.0"\n'
        f'[project.entry-points."uqbench.methods"]\ndup = "{module}:Dup"\n'
        f'[tool.setuptools]\npy-modules = ["{module}"]\n'
    )
    (folder / f"{module}.py").write_text(
        "from uqbench.methods.msp import MSP\n\n\nclass Dup(MSP):\n    pass\n"
    )
    return folder


def test_two_distributions_registering_one_name_are_shown_and_refused(tmp_path):
    target = tmp_path / "site"
    for dist, module in (("uqbench-dup-a", "dup_a"), ("uqbench-dup-b", "dup_b")):
        _pip_install(_tiny_dist(tmp_path, dist, module), target)
    done = _uqbench(target, "list", cache=tmp_path / "cache")
    rows = [line for line in done.stdout.splitlines() if line.strip().startswith("dup ")]
    assert len(rows) == 2 and all("CONFLICT" in row for row in rows)
    assert {"uqbench-dup-a 1.0", "uqbench-dup-b 1.0"} <= {
        " ".join(row.split()[1:3]) for row in rows
    }
    assert done.returncode == 1
    fit = _uqbench(target, "fit", "method=dup", cache=tmp_path / "cache")
    assert fit.returncode == 2
    assert "uqbench-dup-a 1.0" in fit.stderr and "uqbench-dup-b 1.0" in fit.stderr
