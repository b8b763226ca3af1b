"""Packaging: ``pip install`` of a clone installs ``mova_core`` alone, and it works from outside the checkout.

The slow tests build a copy of the checkout (so no ``build/`` or ``*.egg-info`` lands in it) into a new
virtual environment under ``tmp_path``; nothing is installed into the environment running the tests.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = "comfyui-mova-av"
# setuptools that builds a wheel by itself (bdist_wheel without the `wheel` package); see [build-system]
MIN_SETUPTOOLS = (70, 1)
COPY_IGNORE = shutil.ignore_patterns(".git", "node_modules", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                     ".venv", ".pytest_cache", "out")


def _load_pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_txt_lists_the_pyproject_dependencies_but_torch():
    """requirements.txt (ComfyUI's route: ComfyUI brings its own torch) = pyproject dependencies minus torch."""
    declared = [" ".join(dep.split()) for dep in _load_pyproject()["project"]["dependencies"]]
    lines = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = [" ".join(line.split("#", 1)[0].split()) for line in lines]
    listed = [line for line in listed if line]
    assert [_requirement_name(dep) for dep in declared].count("torch") == 1
    assert sorted(dep for dep in declared if _requirement_name(dep) != "torch") == sorted(listed)


def test_import_is_cheap_and_exports_the_pipeline():
    code = ("import sys, mova_core; assert 'torch' not in sys.modules, 'import mova_core imported torch'; "
            "from mova_core import MovaPipeline; from mova_core.pipeline import MovaPipeline as direct; "
            "assert MovaPipeline is direct; assert 'MovaPipeline' in dir(mova_core)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, env=_clean_env())
    assert result.returncode == 0, result.stderr


def _clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _run(args: list, cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=_clean_env())
    assert result.returncode == 0, f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _setuptools_builds_offline() -> bool:
    """True when the running environment's setuptools can build this project without downloading anything."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    return numbers >= MIN_SETUPTOOLS or importlib.util.find_spec("wheel") is not None


def _install(tmp_path: Path, *, editable: bool) -> tuple[Path, Path]:
    """Copy the checkout, create a venv that sees this environment's packages (torch, pip, setuptools) and
    pip-install the copy into it. Returns (venv python, source copy)."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in the test environment")
    source = tmp_path / "clone"
    shutil.copytree(REPO_ROOT, source, ignore=COPY_IGNORE)
    venv = tmp_path / "venv"
    # without pip: the venv uses this environment's pip, and no bundled (older) setuptools shadows this one
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=tmp_path)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path).strip())
    # --system-site-packages shows the *base* interpreter's packages; when the tests run in a venv, torch and
    # friends are in that venv, so list its site directories too (after the new venv's own)
    import site
    outer = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (purelib / "_outer_environment.pth").write_text("\n".join(outer) + "\n", encoding="utf-8")

    command = [python, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--ignore-installed"]
    if _setuptools_builds_offline():
        command += ["--no-build-isolation", "--no-index"]
    command += ["-e", source] if editable else [source]
    _run(command, cwd=tmp_path)
    return python, source


@pytest.mark.slow
def test_pip_install_puts_mova_core_alone_into_the_venv(tmp_path):
    python, source = _install(tmp_path, editable=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    report = _run([python, "-c", f"""
import importlib.metadata, pathlib, sys
import mova_core
assert 'torch' not in sys.modules
from mova_core import MovaPipeline
package = pathlib.Path(mova_core.__file__).resolve().parent
print(package)
print(pathlib.Path(sys.prefix).resolve())
for file in importlib.metadata.files({DIST_NAME!r}):
    print('RECORD', file.as_posix())
"""], cwd=outside).splitlines()
    package, prefix = Path(report[0]), Path(report[1])
    assert prefix == (tmp_path / "venv").resolve()
    assert package.is_relative_to(prefix), f"mova_core imported from {package}, not from the venv"
    assert not package.is_relative_to(REPO_ROOT.resolve()) and not package.is_relative_to(source.resolve())

    recorded = [line.split(" ", 1)[1] for line in report[2:] if line.startswith("RECORD ")]
    top_level = {path.split("/", 1)[0] for path in recorded if not path.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"mova_core"}, f"the wheel installs more than mova_core: {sorted(top_level)}"

    def files(root: Path) -> set[str]:
        return {path.relative_to(root).as_posix() for path in root.rglob("*")
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}

    missing = files(source / "mova_core") - files(package)
    assert not missing, f"files of mova_core/ not installed (package data?): {sorted(missing)}"

    usage = _run([python, "-m", "mova_core", "--help"], cwd=outside)
    assert "demo" in usage and "generate" in usage
    clip = outside / "demo.mp4"
    _run([python, "-m", "mova_core", "demo", "--out", clip, "--cache", tmp_path / "cache", "--steps", "2",
          "--frames", "5"], cwd=outside)
    assert clip.stat().st_size > 0


@pytest.mark.slow
def test_pip_install_editable_points_at_the_source(tmp_path):
    python, source = _install(tmp_path, editable=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    report = _run([python, "-c", """
import importlib.util, pathlib
import mova_core.lora, mova_core.media
from mova_core import MovaPipeline
print(pathlib.Path(mova_core.__file__).resolve())
for name in ('nodes', 'tests', 'benchmarks', 'workflows'):
    spec = importlib.util.find_spec(name)
    for location in ([spec.origin] if spec and spec.origin else []) + list(spec and spec.submodule_search_locations or []):
        print(pathlib.Path(location).resolve())
"""], cwd=outside).splitlines()
    assert Path(report[0]) == (source / "mova_core" / "__init__.py").resolve()
    leaked = [location for location in report[1:] if Path(location).is_relative_to(source.resolve())]
    assert not leaked, f"the editable install exposes other folders of the clone: {leaked}"
