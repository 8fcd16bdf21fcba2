"""One exit-code convention for every command (README, "Exit codes"): a value wrong on its face, found before any
work, exits 2 with one line; a failure met while working (a checkpoint that exists but does not load) exits 1."""
import importlib

import pytest

PROGS = {"m2hmx-map": "app.map_cli", "m2hmx-viewer": "app.main", "m2hmx-eval": "m2hmx.cli.evaluate",
         "m2hmx-train": "m2hmx.cli.train", "m2hmx-adapt": "m2hmx.cli.adapt", "m2hmx-synth": "m2hmx.cli.synth",
         "m2hmx-profile": "m2hmx.cli.profile"}
MISSING = "no/such.safetensors"
CASES = [  # (command, argv with {tmp}, {file} = an existing plain file, {bad} = a file that is no checkpoint; code, words)
    ("m2hmx-map", "--dataset {tmp}/none --out {tmp}/m", 2, "--dataset"),
    ("m2hmx-map", f"--dataset synthetic:0 --depth pred --checkpoint {MISSING} --out {{tmp}}/m", 2, "no such file"),
    ("m2hmx-map", "--dataset synthetic:0 --out {file}/m", 2, "not writable"),
    ("m2hmx-map", "--dataset synthetic:0 --out {tmp}/m --intrinsics 500,500,320,240", 2, "generated room"),
    ("m2hmx-map", "--dataset synthetic:0 --out {tmp}/m --intrinsics 0,500,320,240", 2, "fx, fy > 0"),
    ("m2hmx-map", "--dataset synthetic:0 --depth pred --checkpoint {bad} --out {tmp}/m --no-progress", 1, "bad"),
    ("m2hmx-viewer", f"--checkpoint {MISSING}", 2, "no such file"),
    ("m2hmx-viewer", "--dataset {tmp}/none", 2, "--dataset"),
    ("m2hmx-viewer", "--dataset scannet/scene0011", 2, "needs a data root"),
    ("m2hmx-viewer", "--export {file}/map", 2, "not writable"),
    ("m2hmx-viewer", "--screenshot {tmp}/shot.png --intrinsics 500,500,320,240", 2, "--intrinsics goes with"),
    ("m2hmx-eval", f"--checkpoint {MISSING} --dataset synthetic:1", 2, "no such file"),
    ("m2hmx-eval", "--checkpoint {bad} --dataset {tmp}/none", 2, "--dataset"),
    ("m2hmx-eval", "--checkpoint {bad} --dataset synthetic:1 --json {file}/r.json", 2, "not writable"),
    ("m2hmx-eval", "--checkpoint {bad} --dataset synthetic:1 --no-progress", 1, "bad"),
    ("m2hmx-train", "--config {tmp}/none.yaml", 2, "neither a file"),
    ("m2hmx-train", f"--config demo --set train.init_from={MISSING}", 2, "no such file"),
    ("m2hmx-train", "--config demo --set train.out_dir={file}/run", 2, "not writable"),
    ("m2hmx-adapt", f"--recording synthetic:200001 --out {{tmp}}/m.safetensors --checkpoint {MISSING}", 2, "no such"),
    ("m2hmx-adapt", "--recording synthetic:200001 --out {file}/m.safetensors", 2, "not writable"),
    ("m2hmx-adapt", "--recording synthetic:200001 --frames 0:4 --out {tmp}/m.safetensors --checkpoint {bad} "
                    "--no-progress", 1, "bad"),
    ("m2hmx-synth", "--out {file}/room --frames 2", 2, "not writable"),
    ("m2hmx-profile", "--model nope --no-latency", 2, "neither a preset"),
    ("m2hmx-profile", "--model m2hmx-demo --runs 0", 2, "must be >= 1"),
    ("m2hmx-profile", "--model {bad} --no-latency", 1, "bad"),
]


@pytest.mark.parametrize("prog, argv, code, words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_usage_errors_exit_2_and_failures_exit_1(prog, argv, code, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")  # the viewer's checks come before its display check: no window opens
    monkeypatch.delenv("M2HMX_DATA_ROOT", raising=False)
    (tmp_path / "plain").write_text("a file, not a folder")
    (tmp_path / "bad.safetensors").write_bytes(b"not a model at all" * 10)
    args = argv.format(tmp=tmp_path, file=tmp_path / "plain", bad=tmp_path / "bad.safetensors").split()
    main = importlib.import_module(PROGS[prog]).main
    try:
        got = main(args)
    except SystemExit as exc:  # argparse's own checks (types, choices): usage line + error line, exit 2
        got = exc.code
    err = capsys.readouterr().err.strip()
    assert got == code, err
    assert "Traceback" not in err and err.splitlines()[-1].startswith(f"{prog}: error:"), err
    assert words in err.splitlines()[-1], err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.safetensors").exists()
