"""vidseg-export's train.provenance: the checkpoint's training runs and the export's own command
and commit in the manifest; --train-command/--train-commit for checkpoints without them."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from vidseg.engine.bundle import MANIFEST, load_bundle
from vidseg.export import cli
from vidseg.models.provenance import UNKNOWN, source_commit

SPEC = ["--parity-frames", "2"]


def export(checkpoint: Path, out: Path, *extra: str) -> int:
    return cli.main([str(checkpoint), "--out", str(out), *SPEC, *extra])


def with_chain(checkpoint: Path, chain: list[dict] | None, out: Path) -> Path:
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["provenance"] = chain
    torch.save(ckpt, out)
    return out


def test_manifest_records_the_training_runs_and_the_export(tiny_checkpoint, tmp_path) -> None:
    """A checkpoint from before the record: --train-command (once per run, earliest first) and
    --train-commit fill it in; the export records its own command line and commit."""
    out = tmp_path / "a.vidseg"
    runs = ["vidseg-train --model m --out runs/one", "vidseg-train --out runs/two --init-from x"]
    flags = ["--train-command", runs[0], "--train-command", runs[1], "--train-commit", "abc123"]
    assert export(tiny_checkpoint, out, *flags) == 0
    record = load_bundle(out).manifest.train["provenance"]
    assert record["train"] == [{"command": c, "commit": "abc123"} for c in runs]
    command = shlex.join(["vidseg-export", str(tiny_checkpoint), "--out", str(out), *SPEC, *flags])
    assert record["export"] == {"command": command, "commit": source_commit(cli.__file__)}
    assert record["export"]["commit"] != UNKNOWN  # the tests run from the repository
    assert json.loads((out / MANIFEST).read_text())["train"]["provenance"] == record


def test_checkpoint_chain_is_copied_and_gaps_filled(tiny_checkpoint, tmp_path) -> None:
    """A checkpoint's own chain goes into the manifest; --train-command fills only the runs it
    records as unknown (a run --init-from started from an older checkpoint), once each."""
    known = {"command": "vidseg-train --out runs/two", "commit": "def456"}
    gap = with_chain(
        tiny_checkpoint, [{"command": UNKNOWN, "commit": UNKNOWN}, known], tmp_path / "g.pt"
    )
    out = tmp_path / "b.vidseg"
    assert export(gap, out, "--train-command", "vidseg-train --out runs/one") == 0
    assert load_bundle(out).manifest.train["provenance"]["train"] == [
        {"command": "vidseg-train --out runs/one", "commit": UNKNOWN},
        known,
    ]
    full = with_chain(tiny_checkpoint, [known], tmp_path / "f.pt")
    assert export(full, tmp_path / "c.vidseg", "--train-command", "x") == 1
    assert export(gap, tmp_path / "c.vidseg", "--train-command", "x", "--train-command", "y") == 1
    assert not (tmp_path / "c.vidseg").exists()
    bad = with_chain(tiny_checkpoint, "not a list", tmp_path / "bad.pt")  # type: ignore[arg-type]
    assert export(bad, tmp_path / "c.vidseg") == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train-commit", "abc"], "--train-commit goes with --train-command"),
        (["--train-command", " "], "got an empty one"),
        (["--add-logits", "--train-command", "x"], "describes a CHECKPOINT being exported"),
    ],
)
def test_provenance_flag_misuse_is_a_usage_error(tiny_bundle, tmp_path, capsys, argv, message):
    out = ["--out", str(tmp_path / "o.vidseg")] if "--add-logits" not in argv else []
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tiny_bundle), *out, *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
