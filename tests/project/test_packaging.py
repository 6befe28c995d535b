"""The built wheel carries every file the code loads at run time (Lua scripts, templates, static files)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Files read with importlib.resources or served by the API: each must be package data.
PACKAGES = ("config", "graphclient", "webhooks", "jobs", "worker", "api", "cli", "graphsim")
RUNTIME_FILES = ("*.lua", "api/templates/*.html", "api/static/*.js", "api/static/*.css", "graphsim/data/*.json",
                 "jobs/data/*.json")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_wheel_holds_every_data_file_of_the_tree(tmp_path: Path) -> None:
    # Built from a copy: a build/ folder left in the tree could hide a file the package data misses.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("bulk_license-*.whl"))
    packed = set(zipfile.ZipFile(wheel).namelist())
    in_tree = {str(p.relative_to(ROOT)) for pattern in RUNTIME_FILES for p in ROOT.glob(f"**/{pattern}")
               if not {".venv", "tests", "build"} & set(p.relative_to(ROOT).parts)}
    assert in_tree, "no data file found: the patterns are wrong"
    assert in_tree <= packed, sorted(in_tree - packed)
    assert {f"{package}/__init__.py" for package in PACKAGES} <= packed  # every package of the product
    assert not any(name.startswith(("tests/", "bench/")) for name in packed)
