"""`yolo-attn ablate`: the paired statistics against hand-computed values, the plan's one-line errors, and real
ablations through the CLI from another directory (resume after a signal, a failing config, the Ray backend)."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import time

import cv2
import pytest
import torch

from conftest import BIN, env, python, run, tensors_of, yolo_attn

# Student t quantiles t_{0.975, df} from a printed table (not from scipy, which the code under test uses)
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 16: 2.1199, 17: 2.1098}


def cli(*args, cwd, check=True, timeout=600):
    return run([BIN / "yolo-attn", *map(str, args)], cwd, check=check, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------
def test_paired_interval_that_excludes_zero():
    from yolo_attn.ablate import paired

    # d = 1, 1.5, 1.5: mean 4/3, sd sqrt(((1/3)^2 + 2 (1/6)^2) / 2) = 0.288675, half = 4.3027 * sd / sqrt(3)
    p = paired({0: 10.0, 1: 11.0, 2: 12.0}, {0: 11.0, 1: 12.5, 2: 13.5})
    half = T975[2] * 0.288675 / math.sqrt(3)
    assert p.n == 3 and p.mean == pytest.approx(4 / 3) and p.sd == pytest.approx(0.288675, abs=1e-6)
    assert p.low == pytest.approx(4 / 3 - half, abs=1e-3) and p.high == pytest.approx(4 / 3 + half, abs=1e-3)
    assert p.low > 0 and p.verdict == "better"
    # d = -1, -1.2, -0.8, -1: mean -1, sd 0.163299, half = 3.1824 * sd / 2 = 0.2598 -> [-1.26, -0.74]
    w = paired({k: 30.0 for k in range(4)}, {0: 29.0, 1: 28.8, 2: 29.2, 3: 29.0})
    assert w.mean == pytest.approx(-1) and w.sd == pytest.approx(0.163299, abs=1e-6)
    assert (w.low, w.high) == pytest.approx((-1 - T975[3] * 0.163299 / 2, -1 + T975[3] * 0.163299 / 2), abs=1e-3)
    assert w.verdict == "worse"


def test_paired_interval_that_includes_zero():
    from yolo_attn.ablate import paired

    # d = 1, -1, 0.5: mean 1/6, sd sqrt((0.8333^2 + 1.1667^2 + 0.3333^2) / 2) = 1.040833 -> [-2.419, 2.752]
    p = paired({0: 5.0, 1: 5.0, 2: 5.0}, {0: 6.0, 1: 4.0, 2: 5.5})
    half = T975[2] * 1.040833 / math.sqrt(3)
    assert p.mean == pytest.approx(1 / 6) and p.sd == pytest.approx(1.040833, abs=1e-6)
    assert (p.low, p.high) == pytest.approx((1 / 6 - half, 1 / 6 + half), abs=1e-3)
    assert p.low < 0 < p.high and p.verdict == "within noise"
    # a large mean difference over two seeds is still noise when the seeds disagree: t_{0.975,1} = 12.71
    two = paired({0: 0.0, 1: 0.0}, {0: 2.0, 1: 3.0})
    assert two.low == pytest.approx(2.5 - T975[1] * math.sqrt(0.5) / math.sqrt(2), abs=1e-3) and two.verdict == "within noise"


def test_paired_uses_only_the_seeds_both_have_and_says_when_one_seed_cannot_tell():
    from yolo_attn.ablate import paired

    p = paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 2: 4.5})  # seed 1 of the config failed: pairs 0 and 2
    assert p.n == 2 and p.mean == pytest.approx(1.25)
    one = paired({0: 1.0, 1: 2.0}, {1: 5.0})
    assert one.n == 1 and one.mean == 3.0 and math.isnan(one.low) and one.verdict == "n/a (one seed)"
    assert paired({0: 1.0}, {}).verdict == "n/a"


def test_seeds_to_resolve_half_a_point():
    from yolo_attn.ablate import seeds_to_resolve

    # sd 1: t_{16} / sqrt(17) = 0.514 > 0.5, t_{17} / sqrt(18) = 0.497 < 0.5 -> 18 seeds
    assert T975[16] / math.sqrt(17) > 0.5 > T975[17] / math.sqrt(18)
    assert seeds_to_resolve(1.0, 0.5) == 18
    # sd 0.1: two seeds give 12.71 * 0.1 / sqrt(2) = 0.90, three give 4.30 * 0.1 / sqrt(3) = 0.25
    assert seeds_to_resolve(0.1, 0.5) == 3
    assert seeds_to_resolve(0.0, 0.5) == 2 and seeds_to_resolve(math.nan, 0.5) is None
    assert seeds_to_resolve(100.0, 0.5, limit=50) is None  # not within any practical number of seeds


def test_capacity_control_and_default_base_names():
    from yolo_attn.ablate import AblateError, default_base, default_control

    assert default_base(["yolov8n-ca.yaml", "yolov8n-cbam.yaml"]) == "yolov8n.yaml"
    assert default_control("yolov8n.yaml") == ("yolov8s.yaml", "") and default_control("yolo11s.yaml")[0] == "yolo11m.yaml"
    assert default_control("yolo11n-seg.yaml")[0] == "yolo11s-seg.yaml"
    ctrl, note = default_control("yolov8x.yaml")
    assert ctrl is None and note == ("control: none (yolov8x.yaml is the largest size its family has; give --control "
                                     "CONFIG for one)")  # fmt: skip
    with pytest.raises(AblateError, match=r"build on different base models \(yolov8n-ca.yaml -> yolov8n.yaml, "
                       r"yolov8s-ca.yaml -> yolov8s.yaml\)"):  # fmt: skip
        default_base(["yolov8n-ca.yaml", "yolov8s-ca.yaml"])
    with pytest.raises(AblateError, match=r"build on different base models .*yolo11n-seg-ca.yaml -> yolo11n-seg.yaml"):
        default_base(["yolo11n-ca.yaml", "yolo11n-seg-ca.yaml"])  # a detector and a segmenter: never paired


# The base and control `ablate --dry-run` picks, per task and variant: the plain model of the same family, scale, task
# and variant, and its family's next size (none, with a note, at the largest)
DRY = [
    ("yolov8n-ca.yaml", "yolov8n.yaml", "yolov8s.yaml"),
    ("yolo11n-seg-cbam.yaml", "yolo11n-seg.yaml", "yolo11s-seg.yaml"),
    ("yolo11n-pose-se.yaml", "yolo11n-pose.yaml", "yolo11s-pose.yaml"),
    ("yolo11s-obb-eca.yaml", "yolo11s-obb.yaml", "yolo11m-obb.yaml"),
    ("yolo11n-cls-ca.yaml", "yolo11n-cls.yaml", "yolo11s-cls.yaml"),
    ("yolov8n-p2-eca.yaml", "yolov8n-p2.yaml", "yolov8s-p2.yaml"),
    ("yolov8m-p6-simam.yaml", "yolov8m-p6.yaml", "yolov8l-p6.yaml"),
    ("rtdetr-l-ca.yaml", "rtdetr-l.yaml", "rtdetr-x.yaml"),
    ("rtdetr-x-ca.yaml", "rtdetr-x.yaml", "none"),
    ("yolov8x-cbam.yaml", "yolov8x.yaml", "none"),
    ("yolo11n-cbam-aff.yaml", "yolo11n.yaml", "yolo11s.yaml"),
]


@pytest.mark.parametrize("config, base, control", DRY, ids=[d[0] for d in DRY])
def test_dry_run_names_the_base_and_control_of_the_task(config, base, control, sample_data, tmp_path, capsys):
    from yolo_attn import cli

    assert cli.main(["ablate", config, "--data", str(sample_data), "--seeds", "2", "--out", str(tmp_path / "abl"),
                     "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"base: {base}", f"control: {control}"], out[:3]
    if control == "none":
        assert out[2] == f"control: none ({base} is the largest size its family has; give --control CONFIG for one)"
    runs = [line for line in out if line.startswith("run ")]
    assert len(runs) == (3 if control != "none" else 2) * 2
    assert all("yolo train model=" in r and "deterministic=True" in r and f"data={tmp_path / 'abl'}" in r for r in runs)
    assert not (tmp_path / "abl").exists()  # nothing written, nothing trained


def test_dry_run_says_which_runs_a_rerun_skips(sample_data, tmp_path, capsys):
    from yolo_attn import ablate, cli
    from yolo_attn.ablate.records import save_record

    args = ["ablate", "yolov8n-ca.yaml", "--data", str(sample_data), "--seeds", "2", "--control", "none", "--out",
            str(tmp_path / "abl"), "--epochs", "3", "--dry-run", "workers=0"]  # fmt: skip
    entries = ablate.plan(["yolov8n-ca.yaml"], control="none")
    prepared = ablate.prepare(entries, ablate.Options(data=str(sample_data), seeds=2, epochs=3, out=str(tmp_path / "abl"),
                                                      extra=["workers=0"]))  # fmt: skip
    save_record(tmp_path / "abl", "yolov8n-ca", 1, {"status": "ok", "recipe": prepared.fingerprint, "value": 0.1,
                                                    "value2": 0.2, "seed": 1})  # fmt: skip
    save_record(tmp_path / "abl", "yolov8n", 0, {"status": "failed", "recipe": prepared.fingerprint, "seed": 0})
    assert cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert "skip yolov8n-ca seed 1: finished" in out and not any(line.startswith("skip yolov8n seed") for line in out)
    assert sum(line.startswith("run ") for line in out) == 3  # the failed run is run again
    assert any("3 to run, 1 finished" in line for line in out)
    assert any(line.startswith("run yolov8n-ca seed 0 (block): yolo train model=") and "epochs=3" in line and
               "workers=0" in line for line in out)  # fmt: skip


def test_identity_start_of_a_composed_config_zeroes_its_gates(tmp_path):
    """`--identity-start` on a composed seg config: the YAML a run trains sets the key, every inserted block's gate is
    0, and with the base's weights the model computes exactly the base."""
    from ultralytics.nn.tasks import SegmentationModel

    from yolo_attn import ablate

    base, _, cfg = ablate.plan(["yolo11n-seg-cbam.yaml"], identity_start=True)
    assert (base.config, cfg.config) == ("yolo11n-seg.yaml", "yolo11n-seg-cbam.yaml") and "identity_start: true" in cfg.yaml_text
    path = tmp_path / "yolo11n-seg-cbam.yaml"
    path.write_text(cfg.yaml_text)
    torch.manual_seed(0)
    plain = SegmentationModel("yolo11n-seg.yaml", verbose=False)
    model = SegmentationModel(str(path), verbose=False)
    gates = [m.gate for m in model.modules() if type(m).__name__ == "CBAM"]
    assert len(gates) == 3 and all(g is not None and float(g.detach()) == 0 for g in gates)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.load(plain)
    x = torch.rand(1, 3, 64, 64)
    plain.eval(), model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(tensors_of(plain(x)), tensors_of(model(x))))


# ----------------------------------------------------------------------------------------------------------------
# Bad requests: one line, exit 2, nothing trained
# ----------------------------------------------------------------------------------------------------------------
def test_bad_requests_are_one_line(sample_data, base_checkpoints, tmp_path):
    pt = base_checkpoints["yolov8n"]
    cases = [
        (["yolov8n-ca.yaml", "--data", sample_data, "--pretrained", pt],
         "the control yolov8s.yaml needs its own base weights trained with the same recipe"),
        (["my-model.yaml", "--data", sample_data], "cannot tell the base from the configs (my-model.yaml)"),
        (["yolo11n-ca.yaml", "yolo11n-seg-ca.yaml", "--data", sample_data], "the configs build on different base models"),
        (["yolov8n-ca.yaml", "--data", sample_data, "epochs=3"], "train argument 'epochs=3': ablate sets epochs itself; use --epochs"),
        (["yolov8n-ca.yaml", "--data", "nowhere.yaml"], "--data: no data YAML at nowhere.yaml"),
        (["yolov8n-ca.yaml", "--data", sample_data, "--pretrained", "missing.pt"], "--pretrained: no checkpoint at missing.pt"),
        (["yolov8n-ca.yaml", "--data", sample_data, "--seeds", "0"], "--seeds, --epochs and --workers must be at least 1"),
    ]  # fmt: skip
    for args, msg in cases:
        p = yolo_attn("ablate", *args, "--out", "abl", cwd=tmp_path, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("yolo-attn: error: ") and msg in p.stderr, p.stderr
    assert not (tmp_path / "abl" / "runs").exists()
    p = yolo_attn("bench-map", "--configs", "yolov8n.yaml", cwd=tmp_path, check=False)  # the retired command
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "bench-map was retired: `yolo-attn ablate" in p.stderr


# ----------------------------------------------------------------------------------------------------------------
# Real ablations on the repository's COCO sample, through the CLI from another directory
# ----------------------------------------------------------------------------------------------------------------
TINY = ["--seeds", 2, "--epochs", 1, "--imgsz", 64, "--batch", 8, "--control", "none", "workers=0"]
BAD = "nc: 80\nscales:\n  n: [0.33, 0.25, 1024]\nbackbone:\n  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, NoSuchBlock, []]\nhead:\n  - [-1, 1, Detect, [nc]]\n"  # fmt: skip


def records(out):
    return {p.relative_to(out / "runs").as_posix(): json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/*.json"))}


@pytest.mark.slow
def test_cli_end_to_end_records_summary_failure_and_resume(sample_data, tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD)
    p = cli("ablate", "yolov8n-simam.yaml", "bad.yaml", "--base", "yolov8n.yaml", "--data", sample_data, *TINY,
            "--out", "abl", cwd=tmp_path, check=False)  # fmt: skip
    out = tmp_path / "abl"
    # the failing config is recorded, the others complete, and the exit status says something failed
    assert p.returncode == 1, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("yolo-attn: error: 2 run(s) of 1 config(s) failed") and "bad.yaml:" in last and "NoSuchBlock" in last
    assert "ablate: 3 configs x 2 seeds = 6 runs, 0 already finished, 6 to run (local)" in p.stderr
    assert "6/6" in p.stderr  # the tqdm bar over runs
    recs = records(out)
    assert sorted(recs) == sorted(f"{s}/seed{k}.json" for s in ("bad", "yolov8n", "yolov8n-simam") for k in (0, 1))
    for k in (0, 1):
        b, s, f = recs[f"yolov8n/seed{k}.json"], recs[f"yolov8n-simam/seed{k}.json"], recs[f"bad/seed{k}.json"]
        assert b["status"] == s["status"] == "ok" and f["status"] == "failed" and "NoSuchBlock" in f["error"]
        assert b["role"] == "base" and s["role"] == "block" and b["seed"] == s["seed"] == k
        assert f"seed={k}" in s["command"] and "deterministic=True" in s["command"] and "imgsz=64" in s["command"]
        assert 0 <= s["map50_95"] <= s["map50"] <= 1 and s["train_seconds"] > 0 and s["inference_ms"] > 0
        assert s["params"] == b["params"] == 3157200 and s["gflops"] > 0  # SimAM adds no parameters
        assert s["blocks"] == ["SimAM"] and b["blocks"] == [] and s["versions"]["ultralytics"]
        assert s["task"] == "detect" and s["metric"] == "mAP50-95(B)" and s["value"] == s["map50_95"]
        assert (out / "logs" / f"yolov8n-simam-seed{k}.log").read_text().startswith("yolo train model=")
    rows = {r["config"]: r for r in csv.DictReader(open(out / "ablation.csv"))}
    assert list(rows) == ["yolov8n.yaml", "yolov8n-simam.yaml", "bad.yaml"]
    for col in ("config", "role", "runs", "metric", "mean", "std", "mean2", "std2", "delta", "ci_low", "ci_high",
                "verdict", "params", "gflops"):  # fmt: skip
        assert col in rows["yolov8n.yaml"]
    sim = rows["yolov8n-simam.yaml"]
    assert sim["metric"] == "mAP50-95(B)"
    d = [100 * (recs[f"yolov8n-simam/seed{k}.json"]["map50_95"] - recs[f"yolov8n/seed{k}.json"]["map50_95"]) for k in (0, 1)]
    assert float(sim["delta"]) == pytest.approx(sum(d) / 2, abs=1e-3) and sim["runs"] == "2"
    assert sim["verdict"] in ("better", "worse", "within noise") and rows["bad.yaml"]["runs"] == "0"
    assert rows["bad.yaml"]["failed"] == "2" and rows["yolov8n.yaml"]["role"] == "base"
    md = (out / "ablation.md").read_text()
    assert "| yolov8n-simam.yaml | block | 2 |" in md and "| bad.yaml | block | 0 (2 failed) |" in md and "NoSuchBlock" in md
    assert cv2.imread(str(out / "ablation.png")) is not None

    # a rerun skips what finished and reruns what failed; another recipe in the same folder is refused
    started = {k: r["started"] for k, r in recs.items() if r["status"] == "ok"}
    p = cli("ablate", "yolov8n-simam.yaml", "bad.yaml", "--base", "yolov8n.yaml", "--data", sample_data, *TINY,
            "--out", "abl", cwd=tmp_path, check=False)  # fmt: skip
    assert p.returncode == 1 and "6 runs, 4 already finished, 2 to run" in p.stderr
    assert {k: r["started"] for k, r in records(out).items() if r["status"] == "ok"} == started
    p = cli("ablate", "yolov8n-simam.yaml", "--data", sample_data, *TINY[:2], "--epochs", 2, *TINY[4:], "--out", "abl",
            cwd=tmp_path, check=False)  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "holds an ablation with another recipe (epochs 1 -> 2)" in p.stderr


def _wait(cond, proc, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"the driver ended before {what}: {proc.returncode}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_resume_inside_a_run_after_a_signal(sample_data, tmp_path):
    """SIGTERM to the driver while a run trains, after its first epoch checkpoint: no process outlives the driver,
    the run's epoch count was on the console while it trained, and the rerun continues the run from its checkpoint
    (Ultralytics' resume) to the end."""
    # 8 short epochs: the signal must land while the run trains on a slow or a fast machine (3 raced on CI)
    three = ["--seeds", 1, "--epochs", 8, "--imgsz", 64, "--batch", 8, "--control", "none", "workers=0"]
    cmd = [BIN / "yolo-attn", "ablate", "yolov8n-simam.yaml", "--data", sample_data, *three, "--out", "abl"]
    out, err_file = tmp_path / "abl", tmp_path / "driver.err"
    with open(err_file, "w") as err:
        drv = subprocess.Popen([str(c) for c in cmd], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=err)
        last = out / "work" / "yolov8n-simam" / "seed0" / "train" / "weights" / "last.pt"
        _wait(lambda: last.is_file(), drv, "the second run's first epoch checkpoint")
        _wait(lambda: "yolov8n-simam s0 epoch 1/8" in err_file.read_text() or "yolov8n-simam s0 epoch 2/8" in
              err_file.read_text(), drv, "the run's progress on the console")  # fmt: skip
        assert not (out / "runs" / "yolov8n-simam").exists()  # shown while the run trains, before its record
        drv.send_signal(signal.SIGTERM)
        drv.wait(timeout=120)
    assert drv.returncode == 130 and "interrupted: rerun the same command" in err_file.read_text()
    left = subprocess.run(["pgrep", "-f", str(out / "work")], capture_output=True, text=True).stdout.split()
    assert left == [], "the interrupted run's process outlived the driver"
    first = records(out)
    assert list(first) == ["yolov8n/seed0.json"] and first["yolov8n/seed0.json"]["resumed_from_epoch"] == 0
    p = cli("ablate", "yolov8n-simam.yaml", "--data", sample_data, *three, "--out", "abl", cwd=tmp_path)
    assert "2 runs, 1 already finished, 1 to run" in p.stderr
    rec = records(out)["yolov8n-simam/seed0.json"]
    assert rec["status"] == "ok" and rec["resumed_from_epoch"] >= 1 and rec["command"].startswith("yolo train resume=")
    log = (out / "logs" / "yolov8n-simam-seed0.log").read_text()
    assert log.count("yolo train") >= 2  # the log keeps the first part of the run
    rows = list(csv.DictReader(open(out / "work" / "yolov8n-simam" / "seed0" / "train" / "results.csv")))
    assert [int(float(r["epoch"])) for r in rows] == list(range(1, 9))  # every epoch once: continued, not restarted


def _checkpoint(path, epoch: int):
    """An Ultralytics epoch checkpoint as the trainer writes it (model, epoch, optimizer state)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "ema": model.half(), "model": None, "optimizer": {"state": {}},
                "train_args": {"epochs": 3}}, path)  # fmt: skip
    return path


def test_a_truncated_checkpoint_falls_back_to_the_previous_one_or_a_fresh_start(tmp_path):
    from yolo_attn.ablate.running import resume_point

    weights = tmp_path / "train" / "weights"
    last = _checkpoint(weights / "last.pt", 1)
    assert resume_point(tmp_path) == (str(last), 2, [], False)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # killed while writing it
    best = _checkpoint(weights / "best.pt", 0)
    where, epoch, notes, finished = resume_point(tmp_path)
    assert (where, epoch, finished) == (str(best), 1, False) and len(notes) == 1 and notes[0].startswith("last.pt does not load")
    best.write_bytes(b"")
    assert resume_point(tmp_path)[:2] == (None, 0)  # nothing usable: a fresh start
    _checkpoint(weights / "last.pt", -1)  # stripped at the end of training: validate only
    assert resume_point(tmp_path)[2:] == ([], True)


def test_progress_reads_the_epochs_of_a_run_in_progress(tmp_path):
    from yolo_attn.ablate.running import progress

    assert progress(tmp_path, 10) is None
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "results.csv").write_text("epoch, metrics/mAP50-95(B)\n1, 0.01\n2, 0.0234\n")
    assert progress(tmp_path, 10) == "epoch 2/10 mAP50-95(B) 0.0234"


@pytest.mark.slow
def test_pretrained_identity_start_and_capacity_control(sample_data, base_checkpoints, tmp_path):
    pt = base_checkpoints["yolov8n"]
    cli("ablate", "yolov8n-cbam.yaml", "--data", sample_data, "--seeds", 1, "--epochs", 1, "--imgsz", 64, "--batch", 8,
        "--pretrained", pt, "--identity-start", "--control", "yolov8n-simam.yaml", "--control-pretrained", pt, "--out", "abl",
        "workers=0", cwd=tmp_path)  # fmt: skip
    out = tmp_path / "abl"
    log = (out / "logs" / "yolov8n-cbam-seed0.log").read_text()
    assert "structural transfer placed 355/355 source tensors" in log and f"pretrained={pt}" in log
    rec = json.loads((out / "runs" / "yolov8n-cbam" / "seed0.json").read_text())
    assert "identity_start: true" in rec["model_yaml"] and rec["blocks"] == ["CBAM"]
    rows = {r["config"]: r for r in csv.DictReader(open(out / "ablation.csv"))}
    assert [(c, r["role"]) for c, r in rows.items()] == [("yolov8n.yaml", "base"), ("yolov8n-simam.yaml", "control"),
                                                         ("yolov8n-cbam.yaml", "block")]  # fmt: skip
    assert rows["yolov8n-cbam.yaml"]["verdict"] == "n/a (one seed)"
    assert "fine-tuned from the base's weights with the inserted blocks starting as the identity" in (out / "ablation.md").read_text()


# ----------------------------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_backend_on_a_local_ray(sample_data, tmp_path):
    pytest.importorskip("ray")
    p = cli("ablate", "yolov8n-cbam.yaml", "--data", sample_data, *TINY, "--backend", "ray", "--workers", 2,
            "--out", "abl", cwd=tmp_path, timeout=900)  # fmt: skip
    out = tmp_path / "abl"
    assert "4 runs, 0 already finished, 4 to run (ray)" in p.stderr
    recs = records(out)
    assert sorted(recs) == sorted(f"{s}/seed{k}.json" for s in ("yolov8n", "yolov8n-cbam") for k in (0, 1))
    assert all(r["status"] == "ok" and r["device"] == "cpu" and r["attempts"] == 1 for r in recs.values())
    assert recs["yolov8n-cbam/seed1.json"]["blocks"] == ["CBAM"]  # the Ray worker built our block from the name
    for k in (0, 1):  # the logs land on the driver
        assert "seed=" in (out / "logs" / f"yolov8n-cbam-seed{k}.log").read_text()
    assert (out / "work" / "yolov8n-cbam" / "seed0" / "train" / "weights" / "last.pt").is_file()  # on the storage
    assert len(list(csv.DictReader(open(out / "ablation.csv")))) == 2


RAY_DRIVER = """
import sys, time
from ray.cluster_utils import Cluster
from pathlib import Path

out, storage, data = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
print("ADDRESS", cluster.address, flush=True)
# wait until a run has an epoch checkpoint on the storage, then remove the node that trains it
deadline = time.time() + 600
victim = None
while victim is None and time.time() < deadline:
    for run in storage.glob("work/*/seed0"):
        if (run / "train" / "weights" / "last.pt").is_file() and not (run / "result.json").is_file():
            node = (run / "ray_node").read_text()
            victim = next((n for n in nodes if n.node_id == node), None)
            if victim is not None:
                break
    time.sleep(0.2)
cluster.remove_node(victim)
print("REMOVED", run.parent.name, flush=True)
while not (Path(sys.argv[4]).is_file()):
    time.sleep(0.5)
cluster.shutdown()
"""


@pytest.mark.slow
def test_ray_survives_a_lost_node_and_resumes_the_run_from_shared_storage(sample_data, tmp_path):
    """A Ray cluster on this machine (a head without CPUs, two one-CPU worker nodes): a worker node is removed while
    a run trains on it; Ray reruns the task on the other node, which continues the run from its checkpoint on the
    shared storage, and the ablation ends with every run ok. A config that fails to build fails once."""
    pytest.importorskip("ray")
    out, storage, stop = tmp_path / "abl", tmp_path / "shared", tmp_path / "stop"
    cluster = subprocess.Popen([str(BIN / "python"), "-c", RAY_DRIVER, str(out), str(storage), str(sample_data), str(stop)],
                               cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        address = next(line.split()[1] for line in cluster.stdout if line.startswith("ADDRESS"))
        three = ["--seeds", 1, "--epochs", 5, "--imgsz", 64, "--batch", 8, "--control", "none", "workers=0"]
        p = cli("ablate", "yolov8n-simam.yaml", "--data", sample_data, *three, "--backend", "ray", "--ray-address",
                address, "--storage", storage, "--out", "abl", cwd=tmp_path, timeout=1200)  # fmt: skip
        removed = next(line for line in cluster.stdout if line.startswith("REMOVED"))
        recs = records(out)
        assert sorted(recs) == ["yolov8n-simam/seed0.json", "yolov8n/seed0.json"], p.stderr[-2000:]
        assert all(r["status"] == "ok" for r in recs.values()), recs
        lost = [r for r in recs.values() if r["attempts"] > 1]
        assert [r["stem"] for r in lost] == [removed.split()[1]], (removed, recs)
        assert lost[0]["resumed_from_epoch"] >= 1  # continued from its checkpoint on the storage, not restarted
        assert (out / "logs" / f"{lost[0]['stem']}-seed0.log").read_text().count("yolo train") >= 2
        (tmp_path / "bad.yaml").write_text(BAD)
        q = cli("ablate", "bad.yaml", "--base", "yolov8n.yaml", "--data", sample_data, *three, "--backend", "ray",
                "--ray-address", address, "--storage", storage, "--out", "bad", cwd=tmp_path, check=False, timeout=1200)  # fmt: skip
        assert q.returncode == 1
        bad = records(tmp_path / "bad")["bad/seed0.json"]
        assert bad["status"] == "failed" and bad["attempts"] == 1 and "NoSuchBlock" in bad["error"]
    finally:
        stop.write_text("")
        cluster.wait(timeout=120)


@pytest.mark.slow
def test_a_stopped_ray_driver_leaves_no_training_process(sample_data, tmp_path):
    """SIGTERM to the driver while Ray tasks train: the tasks are cancelled, no training process is left on the
    node, and the rerun continues both runs from their checkpoints."""
    pytest.importorskip("ray")
    five = ["--seeds", 1, "--epochs", 5, "--imgsz", 64, "--batch", 8, "--control", "none", "workers=0"]
    cmd = [BIN / "yolo-attn", "ablate", "yolov8n-se.yaml", "--data", sample_data, *five, "--backend", "ray",
           "--workers", 2, "--out", "abl"]  # fmt: skip
    out = tmp_path / "abl"
    drv = subprocess.Popen([str(c) for c in cmd], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    _wait(lambda: len(list(out.glob("work/*/seed0/train/weights/last.pt"))) == 2, drv, "both runs' first epochs")
    drv.send_signal(signal.SIGTERM)
    assert drv.wait(timeout=120) == 130
    deadline = time.time() + 30
    while (left := subprocess.run(["pgrep", "-f", str(out / "work")], capture_output=True, text=True).stdout.split()):
        assert time.time() < deadline, f"training processes outlived the driver: {left}"
        time.sleep(0.5)
    assert not (out / "runs").exists() or not list((out / "runs").glob("*/*.json"))
    p = cli("ablate", "yolov8n-se.yaml", "--data", sample_data, *five, "--backend", "ray", "--workers", 2, "--out", "abl",
            cwd=tmp_path, timeout=900)  # fmt: skip
    recs = records(out)
    assert len(recs) == 2 and all(r["status"] == "ok" and r["resumed_from_epoch"] >= 1 for r in recs.values()), p.stderr


def test_ray_workers_see_the_blocks_without_an_import(tmp_path):
    pytest.importorskip("ray")
    code = """
import sys, ray

def build():
    before = "yolo_attn" in sys.modules
    from ultralytics.nn.tasks import DetectionModel
    m = DetectionModel("yolov8n-cbam.yaml", verbose=False)
    return before, sorted({type(x).__name__ for x in m.model if type(x).__module__.startswith("yolo_attn.")})

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
assert "yolo_attn" not in sys.modules and "ultralytics" not in sys.modules
print(ray.get(ray.remote(build).remote()))
ray.shutdown()
"""
    p = python(code, tmp_path, timeout=300)
    assert p.stdout.strip().splitlines()[-1] == "(False, ['CBAM'])"
