"""Imports point one way: the engine core loads without PyAV or OpenCV, a manifest is checked
without its aux-input providers, and no module borrows another's private name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "export", "models", "benchmarks", "samples")


def loaded_after(code: str) -> list[str]:
    """The modules of interest (PyAV, OpenCV, aux-input providers) a fresh interpreter has
    loaded after running ``code``."""
    code += (
        "\nimport sys\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('av', 'cv2')"
        " or m.startswith('vidseg.engine.aux_inputs.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_the_engine_core_imports_neither_pyav_nor_opencv() -> None:
    assert loaded_after("from vidseg.engine import Segmenter, Result, PreparedFrame") == []
    assert loaded_after("from vidseg.engine.frame import Frame") == []


def test_the_live_sources_import_without_pyav() -> None:
    """``LatestFrameSource``, ``paced`` and the rest wrap any iterable of frames (a camera read
    by the caller's own code): importing them loads no reader."""
    assert loaded_after("import vidseg.engine.sources") == []


def test_checking_a_manifest_loads_no_provider_and_no_opencv() -> None:
    code = (
        "from vidseg.engine.bundle import default_bundle_path, load_bundle\n"
        "load_bundle(default_bundle_path())\n"
    )
    assert loaded_after(code) == []


def test_a_provider_is_loaded_only_when_one_of_its_kind_is_made() -> None:
    code = (
        "import json\n"
        "from vidseg.engine.aux_inputs import make_provider\n"
        "from vidseg.engine.bundle import MANIFEST, Manifest, default_bundle_path\n"
        "raw = json.loads((default_bundle_path() / MANIFEST).read_text())\n"
        "raw['aux_inputs'] = [{'name': 'flow', 'provider': 'dis_flow', 'shape': [2, 4, 4],"
        " 'dtype': 'float32'},"
        " {'name': 'tile', 'provider': 'tile_cycle', 'shape': [5], 'dtype': 'float32'}]\n"
        "manifest = Manifest.from_dict(raw)\n"
    )
    # checking a manifest that names kinds imports none of their providers (nor OpenCV)
    assert loaded_after(code) == []
    assert loaded_after(code + "make_provider(manifest.aux_inputs[1])\n") == [
        "vidseg.engine.aux_inputs.tile_cycle"
    ]


def test_a_provider_says_whether_it_replaces_the_frame_input() -> None:
    from vidseg.engine.aux_inputs import KINDS, provider_class, replaces_frame

    built_in = ("dis_flow", "tile_cycle", "tile_view")  # other tests may register more
    assert {kind: replaces_frame(kind) for kind in built_in} == {
        "dis_flow": False,
        "tile_cycle": False,
        "tile_view": True,
    }
    for kind in KINDS:  # each kind's class is where the registry says, and has the contract
        cls = provider_class(kind)
        assert callable(cls) and callable(cls.reset) and callable(cls.__call__), kind
    with pytest.raises(KeyError):
        provider_class("optical")


def private_imports(path: Path) -> list[str]:
    """``from vidseg.x import _name`` and ``module._name`` of an imported vidseg module."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidseg"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path}:{node.lineno}: from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {
                a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("vidseg")
            }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    paths = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    assert len(paths) > 50
    assert [hit for path in paths for hit in private_imports(path)] == []
