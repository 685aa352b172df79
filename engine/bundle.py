"""Model bundles: a ``NAME.vidseg/`` directory with ``manifest.json`` and ONNX graphs.

The manifest is the contract between ``vidseg.export`` (which writes it) and the engine (which
reads it); this module owns its schema. Every field is validated on load and an error names the
bad field, so a wrong bundle fails at start-up with one clear line instead of deep in a run.
See docs/bundle.md for the format.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vidseg.engine.aux_inputs import KINDS, is_kind
from vidseg.engine.errors import BundleError
from vidseg.engine.fields import FieldReader
from vidseg.engine.roles import KEY, structure_problem
from vidseg.engine.schedule import Schedule

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "uint8", "int64")
DEFAULT_BUNDLE = "tiles-lite0-camvid.vidseg"


@dataclass(frozen=True)
class InputSpec:
    """The frame input: ``name`` is (N, height, width, 3) uint8 RGB, normalised in-graph."""

    name: str = "frame"
    height: int = 352
    width: int = 480
    pixel_order: str = "rgb"
    layout: str = "NHWC"
    dtype: str = "uint8"


@dataclass(frozen=True)
class StateSpec:
    """A tensor carried from frame to frame: output ``output`` feeds input ``input`` next frame.

    ``shape`` excludes the leading batch axis (the only dynamic one); ``init`` is "zeros".
    """

    input: str
    output: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    init: str = "zeros"


@dataclass(frozen=True)
class AuxSpec:
    """An input the engine computes per frame, e.g. optical flow (see ``engine.aux_inputs``).

    ``provider`` names its kind ("dis_flow", a registered kind of ``engine.aux_inputs``); ``shape``
    excludes the batch axis; ``args``: keyword arguments of the provider beyond the shape (JSON
    values, e.g. the tile offsets of ``tile_view``).
    """

    name: str
    provider: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureSpec:
    """A tensor the optional ``encode`` graph computes from the frame alone and ``step`` reads
    in place of the frame. Splitting a model this way lets the engine run its stateless part
    (the encoder, most of the cost) ahead, in another thread, while ``step`` carries the state.
    ``shape`` excludes the batch axis."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


LABEL_STRIDES = (1, 2, 4, 8)


@dataclass(frozen=True)
class OutputSpec:
    """A graph output the engine hands to the user: role "labels" ((N, H/s, W/s) uint8 class
    ids), "scores" ((N, H/s, W/s) confidence) or "logits" ((N, K, H/s, W/s) float32, at the
    labels' stride: with them the engine upsamples the labels crisply, see
    ``engine.upsample``); ``stride`` s is the output's downsampling against the input (1: full
    input size). The engine resizes to the frame."""

    name: str
    role: str
    dtype: str
    stride: int = 1


@dataclass(frozen=True)
class Manifest:
    """Parsed, validated ``manifest.json``; see docs/bundle.md for each field.

    The graphs' roles, state, cache, schedule and aux inputs say how the engine runs the bundle
    (``engine.roles``); ``family`` is a descriptive label, never read by the engine."""

    name: str
    family: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int | None
    input: InputSpec
    graphs: dict[str, str]
    outputs: tuple[OutputSpec, ...]
    state: tuple[StateSpec, ...] = ()
    cache: tuple[StateSpec, ...] = ()
    aux_inputs: tuple[AuxSpec, ...] = ()
    features: tuple[FeatureSpec, ...] = ()  # encode -> step, when graphs has "encode"
    schedule: Schedule | None = None  # with key frames: the key-frame policy's defaults
    train: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def has_key_frames(self) -> bool:
        """Whether the bundle runs ``key`` and ``current`` graphs by a key-frame schedule (else
        one ``step`` graph on every frame)."""
        return KEY in self.graphs

    @property
    def labels_output(self) -> str:
        return next(o.name for o in self.outputs if o.role == "labels")

    def output_name(self, role: str) -> str | None:
        """The name of the output with ``role`` ("labels", "scores", "logits"), None if absent."""
        return next((o.name for o in self.outputs if o.role == role), None)

    @property
    def labels_size(self) -> tuple[int, int]:
        """(h, w) of the labels output: the input size over the labels' stride."""
        stride = next(o.stride for o in self.outputs if o.role == "labels")
        return self.input.height // stride, self.input.width // stride

    def to_json(self) -> str:
        raw = asdict(self)
        for aux in raw["aux_inputs"]:  # args only where a provider takes any
            if not aux["args"]:
                del aux["args"]
        raw["schedule"] = self.schedule.to_manifest() if self.schedule is not None else {}
        return json.dumps(raw, indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: Any, source: str = MANIFEST) -> "Manifest":
        """Validate ``raw`` (parsed JSON) field by field.

        Raises:
            BundleError: naming ``source`` and the first bad field.
        """
        v = _Validator(source)
        obj = v.mapping(raw, "")
        version = v.get(obj, "schema_version", int)
        if version != SCHEMA_VERSION:
            v.fail("schema_version", f"is {version}, this vidseg reads version {SCHEMA_VERSION}")
        family = v.get(obj, "family", str)
        if not family:
            v.fail("family", "must be a non-empty label")
        classes = tuple(v.get(obj, "classes", list))
        if not classes or not all(isinstance(c, str) for c in classes):
            v.fail("classes", "must be a non-empty list of names")
        palette = tuple(v.get(obj, "palette", list))
        if len(palette) != len(classes) or not all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(x, int) and 0 <= x <= 255 for x in c)
            for c in palette
        ):
            v.fail("palette", f"must hold one [r, g, b] (0-255) per class ({len(classes)})")
        ignore = obj.get("ignore_index")
        if ignore is not None and not isinstance(ignore, int):
            v.fail("ignore_index", "must be an integer or null")
        inp = v.mapping(v.get(obj, "input", dict), "input")
        input_spec = InputSpec(
            name=v.get(inp, "name", str, "input."),
            height=v.positive(inp, "height", "input."),
            width=v.positive(inp, "width", "input."),
            pixel_order=v.choice(inp, "pixel_order", ("rgb",), "input."),
            layout=v.choice(inp, "layout", ("NHWC",), "input."),
            dtype=v.choice(inp, "dtype", ("uint8",), "input."),
        )
        graphs = v.mapping(v.get(obj, "graphs", dict), "graphs")
        outputs = tuple(
            OutputSpec(
                name=v.get(o, "name", str, f"outputs[{i}]."),
                role=v.choice(o, "role", ("labels", "scores", "logits"), f"outputs[{i}]."),
                dtype=v.choice(o, "dtype", DTYPES, f"outputs[{i}]."),
                stride=v.stride(o, f"outputs[{i}]."),
            )
            for i, o in enumerate(
                v.mapping(x, f"outputs[{i}]") for i, x in enumerate(v.get(obj, "outputs", list))
            )
        )
        roles = [o.role for o in outputs]
        if roles.count("labels") != 1:
            v.fail("outputs", "must contain exactly one output with role 'labels'")
        if roles.count("scores") > 1 or roles.count("logits") > 1:
            v.fail("outputs", "may contain at most one 'scores' and one 'logits' output")
        labels_stride = outputs[roles.index("labels")].stride
        for i, o in enumerate(outputs):
            if o.role == "logits" and (o.stride != labels_stride or o.dtype != "float32"):
                v.fail(
                    f"outputs[{i}]",
                    f"logits must be float32 at the labels' stride "
                    f"({labels_stride}), got {o.dtype} at stride {o.stride}",
                )
        for i, o in enumerate(outputs):
            if input_spec.height % o.stride or input_spec.width % o.stride:
                v.fail(
                    f"outputs[{i}].stride",
                    f"{o.stride} does not divide the input size "
                    f"{input_spec.height}x{input_spec.width}",
                )
        state = v.tensors(obj, "state")
        cache = v.tensors(obj, "cache")
        names = [s.input for s in state + cache] + [s.output for s in state + cache]
        if len(set(names)) != len(names):
            v.fail("state", "tensor names must be unique")
        aux = v.aux(obj)
        features = v.features(obj)
        schedule = v.schedule(obj)
        problem = structure_problem(
            graphs, cache=bool(cache), features=bool(features), schedule=schedule is not None
        )
        if problem is not None:
            v.fail(*problem)
        return cls(
            name=v.get(obj, "name", str),
            family=family,
            classes=classes,
            palette=tuple(tuple(c) for c in palette),  # type: ignore[misc]
            ignore_index=ignore,
            input=input_spec,
            graphs=dict(graphs),
            outputs=outputs,
            state=state,
            cache=cache,
            aux_inputs=aux,
            features=features,
            schedule=schedule,
            train=dict(v.get(obj, "train", dict, default={})),
            schema_version=version,
        )


class _Validator(FieldReader):
    """``FieldReader`` plus the manifest's own compound fields."""

    def schedule(self, obj: dict) -> Schedule | None:
        """The key-frame schedule, validated field by field; None when absent or empty."""
        raw = self.get(obj, "schedule", dict, default={})
        return Schedule.from_manifest(raw, self.source) if raw else None

    def stride(self, obj: dict, prefix: str) -> int:
        value = self.get(obj, "stride", int, prefix, default=1)
        if value not in LABEL_STRIDES:
            self.fail(prefix + "stride", f"is {value}, expected one of {LABEL_STRIDES}")
        return value

    def aux(self, obj: dict) -> tuple[AuxSpec, ...]:
        specs = []
        for i, raw in enumerate(self.get(obj, "aux_inputs", list, default=[])):
            where = f"aux_inputs[{i}]."
            t = self.mapping(raw, where[:-1])
            shape = self.shape(t, where)
            kind = self.get(t, "provider", str, where)
            if not is_kind(kind):  # no provider code is imported here (LoadedModel makes one)
                self.fail(where + "provider", f"is {kind!r}, expected one of {', '.join(KINDS)}")
            specs.append(
                AuxSpec(
                    name=self.get(t, "name", str, where),
                    provider=kind,
                    shape=shape,
                    dtype=self.choice(t, "dtype", DTYPES, where),
                    args=self.get(t, "args", dict, where, default={}),
                )
            )
        return tuple(specs)

    def features(self, obj: dict) -> tuple[FeatureSpec, ...]:
        specs = []
        for i, raw in enumerate(self.get(obj, "features", list, default=[])):
            where = f"features[{i}]."
            t = self.mapping(raw, where[:-1])
            specs.append(
                FeatureSpec(
                    name=self.get(t, "name", str, where),
                    shape=self.shape(t, where),
                    dtype=self.choice(t, "dtype", DTYPES, where),
                )
            )
        if len({f.name for f in specs}) != len(specs):
            self.fail("features", "names must be unique")
        return tuple(specs)

    def tensors(self, obj: dict, key: str) -> tuple[StateSpec, ...]:
        specs = []
        for i, raw in enumerate(self.get(obj, key, list, default=[])):
            where = f"{key}[{i}]."
            t = self.mapping(raw, where[:-1])
            shape = self.shape(t, where)
            if t.get("init", "zeros") != "zeros":
                self.fail(where + "init", "must be 'zeros'")
            specs.append(
                StateSpec(
                    input=self.get(t, "input", str, where),
                    output=self.get(t, "output", str, where),
                    shape=shape,
                    dtype=self.choice(t, "dtype", DTYPES, where),
                )
            )
        return tuple(specs)


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its directory and validated manifest."""

    root: Path
    manifest: Manifest

    def graph_path(self, role: str) -> Path:
        return self.root / self.manifest.graphs[role]


def load_bundle(path: str | Path) -> Bundle:
    """Open and validate the bundle directory ``path``.

    Raises:
        BundleError: missing directory or manifest, invalid JSON, a schema violation, or a graph
            file the manifest names but the directory lacks.
    """
    root = Path(path)
    if not root.exists():
        raise BundleError(f"model bundle not found: {root}")
    if not root.is_dir():
        raise BundleError(f"model bundle must be a directory with {MANIFEST}: {root}")
    manifest_path = root / MANIFEST
    try:
        raw = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"not a vidseg bundle (no {MANIFEST}): {root}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"unreadable manifest {manifest_path}: {exc}") from exc
    manifest = Manifest.from_dict(raw, source=str(manifest_path))
    for role, name in manifest.graphs.items():
        if not (root / name).is_file():
            raise BundleError(f"{manifest_path}: graph '{role}' file {name!r} is missing")
    return Bundle(root, manifest)


def default_bundle_path() -> Path:
    """The bundle shipped in the package (``vidseg.samples``), used when no model is given."""
    return Path(str(resources.files("vidseg.samples") / DEFAULT_BUNDLE))
