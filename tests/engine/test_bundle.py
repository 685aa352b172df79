"""Manifest schema validation: every bad field is named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidseg.engine.bundle import Manifest, load_bundle
from vidseg.engine.errors import BundleError


def _manifest(tiny_bundle: Path) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())


def test_loads_exported_bundle(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    m = bundle.manifest
    assert m.family == "recurrent"
    assert (m.input.height, m.input.width) == (64, 96)
    assert [s.input for s in m.state] == ["h8_in", "h16_in", "h32_in"]
    assert m.state[0].shape == (32, 8, 12)
    assert len(m.palette) == len(m.classes) == 11
    assert bundle.graph_path("step").is_file()
    # round trip: to_json -> from_dict gives the same manifest
    assert Manifest.from_dict(json.loads(m.to_json())) == m
    assert m.schedule is None  # no key frames: no schedule


def test_schedule_is_a_typed_field() -> None:
    """A manifest's schedule loads as a frozen Schedule (defaults filled) and writes back."""
    from vidseg.engine.schedule import Schedule

    raw = {"policy": "adaptive", "interval": 4, "threshold": 0.2, "budget_ms": None}
    schedule = Schedule.from_manifest(raw)
    assert schedule == Schedule("adaptive", 4, 0.2, None, 30)
    assert schedule.to_manifest() == {**raw, "max_interval": 30}
    assert Schedule.from_manifest(schedule) is schedule  # a loaded manifest's field
    assert Schedule.from_manifest(None) == Schedule.from_manifest({}) == Schedule()


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(family=""), "family"),  # any non-empty label; the engine reads none
        (lambda d: d["input"].pop("height"), "input.height"),
        (lambda d: d["input"].update(width=-5), "input.width"),
        (lambda d: d["input"].update(layout="NCHW"), "input.layout"),
        (lambda d: d.update(palette=d["palette"][:3]), "palette"),
        (lambda d: d.update(classes=[]), "classes"),
        (lambda d: d.update(graphs={}), "graphs.step"),
        (lambda d: d["state"][1].update(shape=[64, 0, 3]), "state[1].shape"),
        (lambda d: d["state"][0].update(dtype="float64"), "state[0].dtype"),
        (lambda d: d["state"].append(d["state"][0]), "state"),  # names must be unique
        # the graphs' roles: step, or key and current with a cache; encode with features
        (lambda d: d["graphs"].update(main="step.onnx"), "graphs.main"),
        (lambda d: d["graphs"].update(step=3), "graphs.step"),
        (lambda d: d["graphs"].update(key="key.onnx"), "graphs.current"),
        (lambda d: d.update(graphs={"key": "k.onnx", "current": "c.onnx"}), "cache"),
        (lambda d: d.update(cache=d.pop("state")), "cache"),  # a cache needs key frames
        (lambda d: d.update(schedule={"interval": 3}), "schedule"),  # so does a schedule
        (lambda d: d["graphs"].update(encode="encode.onnx"), "features"),
        (lambda d: d.update(outputs=[]), "outputs"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d["input"].update(height="64"), "input.height"),
        (lambda d: d["outputs"][0].update(stride=3), "outputs[0].stride"),
        (
            lambda d: (d["outputs"][0].update(stride=4), d["input"].update(height=66)),
            "outputs[0].stride",
        ),  # 4 does not divide 66
        # the key-frame schedule is validated into engine.schedule.Schedule at load
        (lambda d: d.update(schedule={"policy": "fixed", "interval": 0}), "schedule.interval"),
        (lambda d: d.update(schedule={"interval": "5"}), "schedule.interval"),
        (lambda d: d.update(schedule={"interval": 8, "max_interval": 4}), "schedule.max_interval"),
        (lambda d: d.update(schedule={"policy": "sometimes"}), "schedule.policy"),
        (lambda d: d.update(schedule={"policy": "deadline"}), "schedule.budget_ms"),
        (lambda d: d.update(schedule={"threshold": True}), "schedule.threshold"),
        (lambda d: d.update(schedule=[5]), "schedule"),
    ],
)
def test_bad_field_is_named(tiny_bundle: Path, edit, field: str) -> None:
    raw = _manifest(tiny_bundle)
    edit(raw)
    with pytest.raises(BundleError, match=f"field '{field.replace('[', '.').replace(']', '.')}"):
        Manifest.from_dict(raw)


def test_load_errors(tmp_path: Path, tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "missing.vidseg")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(tmp_path)
    raw = _manifest(tiny_bundle)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))  # graph file absent
    with pytest.raises(BundleError, match="graph 'step' file 'step.onnx' is missing"):
        load_bundle(tmp_path)


def test_aux_input_the_graph_lacks_is_a_state_spec_error(tiny_netwarp_bundle: Path, tmp_path: Path):
    """A manifest whose aux input disagrees with the graph is refused by name at load (this
    path once ended in a NameError: the error class was never imported)."""
    from vidseg.engine.errors import StateSpecError
    from vidseg.engine.segmenter import Segmenter

    bundle = tmp_path / "nw.vidseg"
    import shutil

    shutil.copytree(tiny_netwarp_bundle, bundle)
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["aux_inputs"][0]["shape"][1] += 1  # flow rows the graph does not have
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(StateSpecError, match="aux input 'flow'"):
        Segmenter(bundle)
