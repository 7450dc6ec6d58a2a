"""Packaging: a light ``import flowkit``, ``flowkit --version``, the wheel and the sdist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest

import flowkit
from flowkit.presets.runs import RUN_PRESETS

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "flowkit-torch"
HEAVY = ("torch", "numpy", "scipy")


def _python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run this interpreter on the checkout's ``flowkit``, whatever else is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _checked(completed: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


# --- import cost --------------------------------------------------------------------------------
IMPORT_THEN_RESOLVE = """
import json, sys
import flowkit, flowkit.cli
flowkit.cli.build_parser()
before = sorted(name for name in {heavy!r} if name in sys.modules)
flow, glow = flowkit.Flow, flowkit.presets.glow
print(json.dumps({{
    "before": before,
    "torch_after": "torch" in sys.modules,
    "flow": flow.__module__ + "." + flow.__qualname__,
    "glow": glow.__module__,
}}))
"""


def test_import_and_parser_leave_torch_and_numpy_unloaded_until_a_name_is_used():
    completed = _checked(_python("-c", IMPORT_THEN_RESOLVE.format(heavy=HEAVY)))
    report = json.loads(completed.stdout)
    assert report["before"] == []
    assert report["torch_after"]
    assert report["flow"] == "flowkit.distributions.flow.Flow"
    assert report["glow"] == "flowkit.presets.glow"


def test_version_option_prints_the_version():
    completed = _checked(_python("-m", "flowkit", "--version"))
    assert completed.stdout == f"flowkit {flowkit.__version__}\n"


def _imported_modules(importtime_log: str) -> set[str]:
    """Module names from ``python -X importtime``'s lines ``import time: self | total | name``."""
    return {
        line.rpartition("|")[2].strip()
        for line in importtime_log.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize("option", ["--version", "--help", "presets"])
def test_version_help_and_presets_do_not_import_torch(option):
    completed = _checked(_python("-X", "importtime", "-m", "flowkit", option))
    # The preset listing is sorted by name.
    first_preset = min(RUN_PRESETS)
    assert completed.stdout.startswith(("flowkit ", "usage: flowkit", first_preset))
    heavy = {name.partition(".")[0] for name in _imported_modules(completed.stderr)} & set(HEAVY)
    assert not heavy, f"flowkit {option} imported {sorted(heavy)}"


def test_importtime_log_parsing_finds_imported_modules():
    completed = _checked(_python("-X", "importtime", "-c", "import json.decoder"))
    modules = _imported_modules(completed.stderr)
    assert {"json", "json.decoder"} <= modules
    assert "torch" not in modules


# --- lazy names ---------------------------------------------------------------------------------
DEFINED_IN = {
    "Bijector": "flowkit.bijectors",
    "Compose": "flowkit.bijectors",
    "Inverse": "flowkit.bijectors",
    "InverseNotAvailable": "flowkit.bijectors",
    "from_transform": "flowkit.bijectors",
    "ConditionalDiagonalNormal": "flowkit.distributions",
    "Dequantized": "flowkit.distributions",
    "DiagonalNormal": "flowkit.distributions",
    "Flow": "flowkit.distributions",
    "FlowDistribution": "flowkit.distributions",
    "StandardNormal": "flowkit.distributions",
    "VariationalDequantizer": "flowkit.distributions",
    "initialize": "flowkit.initialization",
    "set_validation": "flowkit._tensors",
    "FlowkitError": "flowkit.errors",
    "fit": "flowkit.train",
    "load": "flowkit.loading",
    "load_flow": "flowkit.loading",
}


@pytest.mark.parametrize("name", flowkit.__all__)
def test_lazy_names_are_the_real_objects(name):
    value = getattr(flowkit, name)
    if isinstance(value, types.ModuleType):
        assert value is sys.modules[f"flowkit.{name}"]
    else:
        assert value is getattr(sys.modules[DEFINED_IN[name]], name)


def test_every_exported_object_has_a_known_home():
    objects = {
        name for name in flowkit.__all__ if not isinstance(getattr(flowkit, name), types.ModuleType)
    }
    assert objects == set(DEFINED_IN)


def test_subpackages_resolve_after_a_plain_import():
    for name in ("bijectors", "data", "distributions", "nn", "presets", "testing", "train"):
        assert getattr(flowkit, name) is sys.modules[f"flowkit.{name}"]


def test_dir_lists_the_public_names_and_star_import_gives_them():
    listed = dir(flowkit)
    assert set(flowkit.__all__) <= set(listed)
    assert {"presets", "train", "__version__"} <= set(listed)
    namespace: dict = {}
    exec("from flowkit import *", namespace)
    assert set(flowkit.__all__) <= set(namespace)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Flw'"):
        flowkit.Flw  # noqa: B018


# --- wheel and sdist ----------------------------------------------------------------------------
# Everything a test reads outside tests/ (docs, examples, benchmarks, the CI script the README
# quotes) travels in the sdist with the suite, so that the suite runs from an unpacked sdist.
SDIST_TREES = ("flowkit", "tests", "docs", "examples", "benchmarks", "scripts")
SDIST_FILES = (
    "pyproject.toml",
    "MANIFEST.in",
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "BENCHMARKS.md",
    "mkdocs.yml",
    ".ci/run",
)
NOT_SOURCE = (".git", "build", "dist", "*.egg-info", "__pycache__", "*.py[cod]", ".pytest_cache")
NOT_SOURCE += (".hypothesis", "runs", "site", ".venv", "*.whl")


def _is_source(path: Path) -> bool:
    return not any(part.match(pattern) for part in map(Path, path.parts) for pattern in NOT_SOURCE)


def _source_files() -> set[str]:
    found = {name for name in SDIST_FILES if (ROOT / name).is_file()}
    for tree in SDIST_TREES:
        found |= {
            path.relative_to(ROOT).as_posix()
            for path in (ROOT / tree).rglob("*")
            if path.is_file() and _is_source(path.relative_to(ROOT))
        }
    return found


def _build(hook: str, source: Path, output: Path) -> Path:
    """Run one PEP 517 hook of setuptools in ``source``; no network, no build isolation."""
    output.mkdir(exist_ok=True)
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(output)!r}))"
    completed = _checked(_python("-c", code, cwd=source))
    return output / completed.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sdist built from a copy of the checkout, and the wheel built from that sdist."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    sdist = _build("build_sdist", source, tmp / "dist")
    with tarfile.open(sdist) as archive:
        # Extraction filters exist from Python 3.12 (and late patch releases before it).
        if hasattr(tarfile, "data_filter"):
            archive.extractall(tmp / "unpacked", filter="data")
        else:
            archive.extractall(tmp / "unpacked")
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = _build("build_wheel", unpacked, tmp / "dist")
    return sdist, wheel


def test_sdist_holds_the_test_suite_and_what_it_reads(built):
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        top = f"flowkit_torch-{flowkit.__version__}/"
        names = {name.removeprefix(top) for name in archive.getnames()}
    expected = _source_files()
    assert {"tests/conftest.py", "tests/test_packaging.py", "LICENSE", "pyproject.toml"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"the sdist lacks {missing}"


def test_wheel_holds_only_the_package_its_data_and_licenses(built):
    _, wheel = built
    dist_info = f"flowkit_torch-{flowkit.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert {name.partition("/")[0] for name in names} == {"flowkit", dist_info}
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "flowkit").rglob("*.py")
        if _is_source(path.relative_to(ROOT))
    }
    assert modules <= names
    assert {
        "flowkit/py.typed",
        "flowkit/data/bundled/fashion-mnist-small.npz",
        "flowkit/data/bundled/LICENSE-fashion-mnist.txt",
        f"{dist_info}/licenses/LICENSE",
    } <= names
    headers = metadata.partition("\n\n")[0].splitlines()
    assert f"Name: {DISTRIBUTION}" in headers
    assert f"Version: {flowkit.__version__}" in headers
    assert "License-Expression: MIT" in headers
    assert "flowkit = flowkit.cli:main" in entry_points
