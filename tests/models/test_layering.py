"""Layering of vidseg.models: it never imports vidseg.export (export depends on models, never
the reverse; the engine's guard is tests/engine/test_segmenter.py), every family implements the
one TemporalModel protocol, and the definitions it shares with the engine have one home."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidseg.engine import bundle, roles
from vidseg.models import registry
from vidseg.models.protocol import TemporalModel

MODELS = Path(__file__).resolve().parents[2] / "models"
SIZE = (64, 96)
ONE_PER_FAMILY = [
    "perframe-lite0",
    "recurrent-lite0-gru",
    "keyframe-lite0-c2",
    "netwarp-lite0",
    "recurrent-unet-vanilla-shallow-cgru",
    "perframe-unet-vanilla-shallow",
]


def test_models_never_imports_export() -> None:
    """Import every module of vidseg.models and build every family: no vidseg.export module
    gets loaded; and no source line imports it (lazily inside a function included)."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import vidseg.models\n"
        "for m in pkgutil.iter_modules(vidseg.models.__path__):\n"
        "    importlib.import_module('vidseg.models.' + m.name)\n"
        "from vidseg.models.registry import list_models\n"
        "list_models()\n"
        "print(sorted(m for m in sys.modules if m.startswith('vidseg.export')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    forbidden = re.compile(r"^\s*(import|from)\s+vidseg\.export\b", re.M)
    for path in MODELS.glob("*.py"):
        assert not forbidden.search(path.read_text()), f"{path} imports vidseg.export"


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_every_family_implements_the_protocol(name: str) -> None:
    model = registry.create_model(name, pretrained=False, input_size=SIZE)
    assert isinstance(model, TemporalModel)
    family = model.cfg.family
    # the graphs a model exports are a role structure the bundle schema takes, in the order
    # the engine runs them (key before current)
    graphs = model.export_graphs()
    assert tuple(graphs) == roles.frame_roles(graphs)
    problem = roles.structure_problem(
        {role: f"{role}.onnx" for role in graphs},
        cache=bool(model.cfg.cache),
        features=False,
        schedule=model.schedule() is not None,
    )
    assert problem is None, problem
    height, width = SIZE
    state = model.initial_state(2, height, width)
    cache = model.initial_cache(2, height, width)
    assert [tuple(t.shape) for t in state] == [
        (2, s.channels, height // s.stride, width // s.stride) for s in model.cfg.state
    ]
    assert [tuple(t.shape) for t in cache] == [
        (2, c.channels, height // c.stride, width // c.stride) for c in model.cfg.cache
    ]
    assert all(not t.any() for t in state + cache)
    assert model.cfg.temporal == (family != "perframe")
    frame = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    with torch.no_grad():
        logits, memory = model.eval().stream_logits(frame, None)
        again, _ = model.stream_logits(frame, memory)
    assert logits.shape[:2] == again.shape[:2] == (1, model.cfg.num_classes)


def test_shared_definitions_have_one_home() -> None:
    from vidseg.engine import aux_inputs, folder
    from vidseg.models import data

    assert data.IMAGE_SUFFIXES is folder.IMAGE_SUFFIXES
    # no list of families anywhere: a family is its registered variants and its graphs' roles
    assert not hasattr(bundle, "FAMILIES") and not hasattr(registry, "FAMILIES")
    # manifests are checked against the one registry of aux-input kinds
    raw = json.loads((bundle.default_bundle_path() / bundle.MANIFEST).read_text())
    raw["aux_inputs"] = [{"name": "flow", "provider": "optical", "shape": [2, 4, 4]}]
    with pytest.raises(bundle.BundleError, match=f"expected one of {', '.join(aux_inputs.KINDS)}"):
        bundle.Manifest.from_dict(raw)
