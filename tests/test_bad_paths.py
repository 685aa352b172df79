"""Paths a user gets wrong: every CLI answers in one line with a non-zero exit, before a long run
where it can, and never writes over its own input."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from vidseg.engine.errors import run_for_cli, unwritable


def one_line_error(err: str, prog: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_run_for_cli_turns_os_errors_into_one_line(tmp_path: Path, capsys) -> None:
    code, result = run_for_cli(
        "prog", lambda: (tmp_path / "missing" / "x").write_text("x"), debug=False
    )
    assert (code, result) == (1, None)
    one_line_error(capsys.readouterr().err, "prog", "No such file or directory", "missing")
    with pytest.raises(FileNotFoundError):  # --debug shows the traceback
        run_for_cli("prog", lambda: (tmp_path / "missing" / "x").write_text("x"), debug=True)


def test_unwritable(tmp_path: Path) -> None:
    assert unwritable(tmp_path / "report.json") is None
    assert unwritable(tmp_path) == f"{tmp_path} is a directory"
    assert "does not exist" in unwritable(tmp_path / "no" / "report.json")


def test_vidseg_run_never_overwrites_its_input(sample_clip: Path, tmp_path: Path, capsys) -> None:
    from vidseg.engine import cli

    clip = tmp_path / "in.mp4"
    shutil.copy(sample_clip, clip)
    size = clip.stat().st_size
    for args in (["--out", str(clip)], ["--mask-out", str(tmp_path)], ["--jsonl", str(clip)]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([str(clip), *args, "--overwrite", "-q"])
        assert exit_.value.code == 2
        one_line_error(capsys.readouterr().err, "vidseg-run", "would overwrite the input")
    assert clip.stat().st_size == size and sorted(tmp_path.iterdir()) == [clip]


def test_vidseg_eval_json_checked_before_the_run(
    tiny_bundle: Path, camvid: Path, tmp_path: Path, capsys
) -> None:
    from vidseg.benchmarks import evaluate

    code = evaluate.main(
        [
            "--model",
            str(tiny_bundle),
            "--frames",
            str(camvid / "val"),
            "--labels",
            str(camvid / "valannot"),
            "--json",
            str(tmp_path),
        ]
    )
    assert code != 0
    one_line_error(capsys.readouterr().err, "vidseg-eval", "is a directory")


def test_vidseg_bench_json_checked_before_the_run(tmp_path: Path, capsys) -> None:
    from vidseg.benchmarks import bench

    with pytest.raises(SystemExit) as exit_:
        bench.main(["--json", str(tmp_path / "no" / "b.json"), "--frames", "2"])
    assert exit_.value.code == 2
    one_line_error(capsys.readouterr().err, "vidseg-bench", "does not exist")


def test_vidseg_export_rejects_a_pickle(tmp_path: Path, capsys) -> None:
    from vidseg.export import cli

    for name, payload in (("pickled.pt", pickle.dumps(object)), ("text.pt", b"hello\n")):
        path = tmp_path / name
        path.write_bytes(payload)
        assert cli.main([str(path), "--out", str(tmp_path / "x.vidseg")]) == 3
        one_line_error(capsys.readouterr().err, "vidseg-export", "not a vidseg-train checkpoint")


def test_vidseg_train_out_is_a_file(camvid: Path, tmp_path: Path, capsys) -> None:
    from vidseg.models import train

    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    code = train.main(
        [
            "--model",
            "perframe-lite0",
            "--data",
            str(camvid),
            "--out",
            str(afile),
            "--max-steps",
            "1",
            "--limit",
            "2",
            "--scratch",
        ]
    )
    assert code == 1
    one_line_error(capsys.readouterr().err, "vidseg-train", "afile.txt")
    with pytest.raises(SystemExit):
        train.main(
            [
                "--model",
                "perframe-lite0",
                "--data",
                str(camvid),
                "--out",
                str(tmp_path / "r"),
                "--threads",
                "0",
            ]
        )
    one_line_error(capsys.readouterr().err, "vidseg-train", "--threads must be >= 1")


def test_vidseg_models_num_classes_bounded(capsys) -> None:
    from vidseg.models import cli

    with pytest.raises(SystemExit):
        cli.main(["--num-classes", "100000000"])
    one_line_error(capsys.readouterr().err, "vidseg-models", "1..255")


def test_vidseg_train_init_from_junk(camvid: Path, tmp_path: Path, capsys) -> None:
    from vidseg.models import train

    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps(object))
    for flag in ("--init-from", "--resume"):
        out = tmp_path / flag.strip("-")
        out.mkdir()
        if flag == "--resume":
            shutil.copy(junk, out / "last.pt")
        args = [flag, str(junk)] if flag == "--init-from" else [flag]
        code = train.main(
            [
                "--model",
                "perframe-lite0",
                "--data",
                str(camvid),
                "--out",
                str(out),
                "--max-steps",
                "1",
                "--limit",
                "2",
                "--scratch",
                *args,
            ]
        )
        assert code == 3
        one_line_error(
            capsys.readouterr().err, "vidseg-train", flag, "not a vidseg-train checkpoint"
        )


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--threads", "0", "--threads must be >= 1"), ("--timeout", "nan", "--timeout must be >= 0")],
)
def test_vidseg_run_numbers(
    sample_clip: Path, tmp_path: Path, capsys, flag: str, value: str, message: str
) -> None:
    from vidseg.engine import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main([str(sample_clip), "--jsonl", str(tmp_path / "f.jsonl"), flag, value, "-q"])
    assert exit_.value.code == 2
    one_line_error(capsys.readouterr().err, "vidseg-run", message)


@pytest.mark.parametrize(
    "prog, module",
    [
        ("vidseg-run", "vidseg.engine.cli"),
        ("vidseg-batch", "vidseg.engine.batchcli"),
        ("vidseg-eval", "vidseg.benchmarks.evaluate"),
        ("vidseg-bench", "vidseg.benchmarks.bench"),
        ("vidseg-export", "vidseg.export.cli"),
        ("vidseg-train", "vidseg.models.train"),
        ("vidseg-models", "vidseg.models.cli"),
    ],
)
def test_usage_errors_are_one_line(prog: str, module: str, capsys) -> None:
    """``PROG: error: ...`` alone, not after the usage block (``--help`` shows that)."""
    import importlib

    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main(["--no-such-flag"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err


def test_json_dash_is_stdout_alone(
    tiny_bundle: Path, camvid: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """``vidseg-eval --json -``: the report alone on standard output (the summary for people
    goes to standard error); no file named ``-``."""
    import json

    from vidseg.benchmarks import evaluate

    monkeypatch.chdir(tmp_path)
    code = evaluate.main(
        [
            "--model",
            str(tiny_bundle),
            "--frames",
            str(camvid / "val"),
            "--labels",
            str(camvid / "valannot"),
            "--max-frames",
            "2",
            "--json",
            "-",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["frames"] == 2 and "mIoU" in err
    assert list(tmp_path.iterdir()) == []
    assert unwritable("-") is None


def test_damaged_graph_is_a_bad_bundle(
    tiny_bundle: Path, sample_clip: Path, tmp_path: Path, capsys
) -> None:
    """A step.onnx cut short is the bundle's fault (exit 3), not the backend's (4)."""
    from vidseg.engine import cli

    bundle = tmp_path / "cut.vidseg"
    shutil.copytree(tiny_bundle, bundle)
    graph = bundle / "step.onnx"
    graph.write_bytes(graph.read_bytes()[:3000])
    code = cli.main(
        [
            str(sample_clip),
            "--model",
            str(bundle),
            "--jsonl",
            str(tmp_path / "f.jsonl"),
            "--max-frames",
            "1",
            "-q",
        ]
    )
    assert code == 3
    one_line_error(capsys.readouterr().err, "vidseg-run", "step.onnx is not a readable ONNX graph")
    assert not (tmp_path / "f.jsonl").exists()


def test_mp4_with_its_index_last_on_stdin_says_why(
    tiny_bundle: Path, sample_clip: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    import av

    slow = tmp_path / "slow.mp4"  # the sample's packets, remuxed: moov after mdat
    with av.open(str(sample_clip)) as source, av.open(str(slow), "w") as target:
        copy = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = copy
                target.mux(packet)
    data = slow.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")
    with slow.open("rb") as stdin:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vidseg.engine",
                "-",
                "--jsonl",
                str(tmp_path / "f.jsonl"),
                "--model",
                str(tiny_bundle),
                "-q",
            ],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 5
    one_line_error(
        proc.stderr, "vidseg-run", "index is at the end cannot be read from a pipe", "+faststart"
    )
    assert not (tmp_path / "f.jsonl").exists()
