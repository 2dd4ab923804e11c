"""Installed, not only editable: a plain `pip install .` finds every gin file, the demo corpus, the vocabulary
(its own gin files, even with a project's own gin_configs/ beside it: `pip install --target` into a project)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from helpers import ROOT

CHECK = """
import json, pathlib, textchem_jax, tasks
from textchem_jax import launch
from textchem_jax.data import vocabulary
from textchem_jax.data.demo import demo_data_dir
configs = pathlib.Path(launch.GIN_CONFIGS)
launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR = '/tmp/unused'"])
print(json.dumps({
    "package": textchem_jax.__file__, "tasks": tasks.__file__, "gin_configs": str(configs),
    "gin_files": sorted(p.relative_to(configs).as_posix() for p in configs.rglob("*.gin")),
    "vocabulary": vocabulary.default_vocabulary().vocab_size, "demo": sorted(p.name for p in demo_data_dir().iterdir()),
}))
"""


def test_a_non_editable_install_finds_its_gin_files_data_and_vocabulary(tmp_path):
    source, target, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("textchem_jax", "tasks", "gin_configs"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    elsewhere.mkdir()
    (target / "gin_configs" / "mine").mkdir(parents=True)  # the user's own, beside the package: it hid ours
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(target)) and found["tasks"].startswith(str(target))
    assert found["gin_configs"] == str(target / "textchem_jax" / "gin_configs")
    shipped = sorted(p.relative_to(ROOT / "gin_configs").as_posix() for p in (ROOT / "gin_configs").rglob("*.gin"))
    assert found["gin_files"] == shipped  # experiments/, models/, runs/ and t5x/, all of them
    assert found["vocabulary"] == 1100 and found["demo"]
    score = subprocess.run([sys.executable, "-m", "textchem_jax.score"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert score.returncode == 0 and "exact_match" in score.stdout, score.stderr[-2000:]
