"""``yolo-attn ablate``: does a block really help? Paired, seeded training runs against the base and a capacity control.

Every config (the base, the capacity control, each block config) trains with one recipe and the same seeds
(Ultralytics' ``seed=k deterministic=True``). The difference of a config to the base is taken per seed, and the mean
of those paired differences gets a Student t interval:

    d_k = mAP(config, seed k) - mAP(base, seed k),   k = 1..n
    mean d +- t_{0.975, n-1} * sd(d) / sqrt(n)

A block is ``better`` (``worse``) when the whole interval lies above (below) zero, else ``within noise``.

Layout of ``--out DIR``::

    DIR/ablation.json              the recipe (a rerun with another recipe is refused)
    DIR/runs/<stem>/seed<k>.json   one record per run, written atomically when the run ends
    DIR/logs/<stem>-seed<k>.log    the run's Ultralytics output
    DIR/work/                      configs, weights and validation output of local runs
    DIR/ablation.csv|md|png        the summary, rewritten after every run

A rerun with the same DIR skips finished runs and reruns failed or interrupted ones. Each run is a fresh Python process
that imports only Ultralytics (the installed start-up hook brings the blocks), so what it trains is what ``yolo train``
trains; the local backend runs those processes here, the Ray backend runs each as a Ray task on a cluster.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import json
import math
import os
import queue
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from . import yamledit

SCALES = "nsmlx"
# Train arguments ablate sets itself (and the option that sets them, where there is one).
OWN_KEYS = {"model": "CONFIG", "data": "--data", "epochs": "--epochs", "imgsz": "--imgsz", "batch": "--batch",
            "fraction": "--fraction", "pretrained": "--pretrained", "device": "--device", "seed": "--seeds",
            "deterministic": None, "project": "--out", "name": None, "exist_ok": None, "resume": None}  # fmt: skip


class AblateError(ValueError):
    """A bad ablation request, reported as one line."""


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------
def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


@dataclass
class Paired:
    """Mean paired difference and its Student t interval."""

    n: int
    mean: float
    sd: float  # standard deviation of the differences (nan for n < 2)
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "n/a (one seed)" if self.n == 1 else "n/a"
        return "better" if self.low > 0 else "worse" if self.high < 0 else "within noise"


def paired(base: dict[int, float], other: dict[int, float], conf: float = 0.95) -> Paired:
    """Paired differences ``other[k] - base[k]`` over the seeds both have, with a ``conf`` Student t interval."""
    d = [other[k] - base[k] for k in sorted(set(base) & set(other))]
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(d)
    if n == 1:
        return Paired(1, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(d)
    half = t_quantile(n - 1, 0.5 + conf / 2) * sd / math.sqrt(n)
    return Paired(n, mean, sd, mean - half, mean + half)


def seeds_to_resolve(sd: float, delta: float, conf: float = 0.95, limit: int = 10_000) -> int | None:
    """The fewest paired seeds n whose interval half-width t_{n-1} * sd / sqrt(n) is below ``delta``."""
    if not sd > 0:
        return None if math.isnan(sd) else 2
    for n in range(2, limit):
        if t_quantile(n - 1, 0.5 + conf / 2) * sd / math.sqrt(n) < delta:
            return n
    return None


def std(values: list[float]) -> float:
    """Sample standard deviation; nan below two values."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


# ----------------------------------------------------------------------------------------------------------------
# The plan: configs, roles, recipe
# ----------------------------------------------------------------------------------------------------------------
def next_scale(name: str) -> str:
    """yolov8n.yaml -> yolov8s.yaml: the same family one scale letter up (the capacity control)."""
    m = re.match(rf"^(.*?\d+)([{SCALES}])((?:-[\w-]+)?\.ya?ml)$", Path(name).name)
    if not m:
        raise AblateError(f"--control auto: {name!r} has no scale letter ({', '.join(SCALES)}) after its family "
                          "number; give the control config with --control CONFIG, or --control none")  # fmt: skip
    i = SCALES.index(m.group(2))
    if i + 1 == len(SCALES):
        raise AblateError(f"--control auto: {name!r} is the largest scale; give --control CONFIG or --control none")
    return f"{m.group(1)}{SCALES[i + 1]}{m.group(3)}"


def default_base(configs: list[str]) -> str:
    bases = {yamledit.base_name_of(c) or "?" for c in configs}
    if len(bases) != 1 or "?" in bases:
        raise AblateError("cannot tell the base from the configs (" + ", ".join(configs) + "): they "
                          + ("have different families or scales" if len(bases) > 1 else "do not follow the "
                             "<family><scale>-<block>.yaml naming") + "; give it with --base, e.g. --base yolov8n.yaml")  # fmt: skip
    return bases.pop()


@dataclass
class Entry:
    config: str  # as the user named it
    role: str  # base, control or block
    stem: str  # folder and file name of its runs
    pretrained: str | None = None
    yaml_text: str | None = None  # the YAML a run trains (identity start added); None when it does not resolve
    error: str | None = None  # why it does not resolve


@dataclass
class Recipe:
    data: str
    epochs: int
    imgsz: int
    batch: int
    fraction: float
    identity_start: bool
    pretrained_sha256: str | None
    control_pretrained_sha256: str | None
    extra: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: str | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_data(data: str, out: Path) -> Path:
    """A data YAML Ultralytics reads the same from any directory: a relative ``path:`` is made absolute against the
    YAML's own folder, in a copy written to ``out``."""
    src = Path(data)
    if not src.is_file():
        raise AblateError(f"--data: no data YAML at {data}")
    try:
        d = yaml.safe_load(src.read_text())
    except yaml.YAMLError as e:
        raise AblateError(f"--data {data}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict) or "val" not in d or "train" not in d:
        raise AblateError(f"--data {data}: expected a dataset YAML with 'train' and 'val' keys")
    root = Path(d.get("path") or ".")
    if not root.is_absolute():
        d["path"] = str((src.parent / root).resolve())
        dst = out / "work" / f"{src.stem}.resolved.yaml"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(yaml.safe_dump(d, sort_keys=False))
        return dst
    return src.resolve()


def split_args(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional words -> (configs, Ultralytics key=value train arguments)."""
    configs, extra = [], []
    for it in items:
        if "=" in it and not it.endswith((".yaml", ".yml")):
            key = it.split("=", 1)[0].strip()
            if key in OWN_KEYS:
                opt = OWN_KEYS[key]
                raise AblateError(f"train argument {it!r}: ablate sets {key} itself" + (f"; use {opt}" if opt else ""))
            extra.append(it)
        else:
            configs.append(it)
    return configs, extra


def entry_yaml(config: str, identity_start: bool) -> tuple[str | None, str | None]:
    """(YAML text a run trains, None) or (None, why the config does not resolve)."""
    try:
        text = yamledit.resolve_base(config).read_text(encoding="utf-8")
    except (yamledit.YamlEditError, OSError) as e:
        return None, str(e)
    return (yamledit.add_identity_start(text) if identity_start else text), None


def plan(configs, base=None, control="auto", pretrained=None, control_pretrained=None, identity_start=False):
    """The entries of an ablation: base first, then the control, then the configs in the order given."""
    if not configs:
        raise AblateError("give at least one CONFIG to compare with the base")
    for opt, path in (("--pretrained", pretrained), ("--control-pretrained", control_pretrained)):
        if path and not Path(path).is_file():
            raise AblateError(f"{opt}: no checkpoint at {path}")
    base = base or default_base(configs)
    entries = [Entry(base, "base", Path(base).stem, pretrained)]
    if control and control != "none":
        ctrl = next_scale(base) if control == "auto" else control
        if pretrained and not control_pretrained:
            raise AblateError(f"--pretrained starts every run from {Path(pretrained).name}, which is {base}'s; the "
                              f"control {ctrl} needs its own base weights trained with the same recipe: give "
                              "--control-pretrained CONTROL.pt, or --control none")  # fmt: skip
        entries.append(Entry(ctrl, "control", Path(ctrl).stem, control_pretrained or None))
    elif control_pretrained:
        raise AblateError("--control-pretrained is given but --control is none")
    entries += [Entry(c, "block", Path(c).stem, pretrained) for c in configs]
    seen: dict[str, str] = {}
    for e in entries:
        if e.stem in seen:
            raise AblateError(f"{e.config} and {seen[e.stem]} would share the run folder runs/{e.stem}; each config "
                              "needs its own file name")  # fmt: skip
        seen[e.stem] = e.config
        e.yaml_text, e.error = entry_yaml(e.config, identity_start)
    return entries


# ----------------------------------------------------------------------------------------------------------------
# One run: a fresh process that imports only Ultralytics
# ----------------------------------------------------------------------------------------------------------------
# The run's own process: Ultralytics' CLI entrypoint with the exact `yolo train` arguments, then a validation of
# best.pt. It imports nothing of yolo_attn: the installed start-up hook activates it, as in any `yolo` process.
WORKER = r"""
import importlib.metadata as md, json, os, sys, time, traceback

job = json.load(open(sys.argv[1]))
res = {}


def done(**kw):
    res.update(kw)
    with open(job["result"] + ".tmp", "w") as fh:
        json.dump(res, fh)
    os.replace(job["result"] + ".tmp", job["result"])


try:
    res["versions"] = {p: md.version(p) for p in ("yolo-attn", "ultralytics", "torch", "torchvision")}
    res["versions"]["python"] = sys.version.split()[0]
    sys.argv = ["yolo", "train", *job["train"]]  # before the import: Ultralytics reads its ARGV at import time
    from ultralytics.cfg import entrypoint

    t = time.perf_counter()
    entrypoint()
    res["train_seconds"] = round(time.perf_counter() - t, 2)
    if not os.path.isfile(job["best"]):
        raise RuntimeError("training ended without " + job["best"])
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops

    model = YOLO(job["best"])
    m = model.val(**job["val"])
    net = model.model
    res.update(
        map50_95=float(m.box.map), map50=float(m.box.map50), precision=float(m.box.mp), recall=float(m.box.mr),
        inference_ms=round(float(m.speed["inference"]), 3), params=sum(p.numel() for p in net.parameters()),
        gflops=round(float(get_flops(net, job["val"]["imgsz"])), 4),
        blocks=sorted({type(x).__name__ for x in net.model if type(x).__module__.startswith("yolo_attn.")}),
    )
    done(status="ok")
except KeyboardInterrupt:
    sys.exit(130)
except BaseException as e:
    traceback.print_exc()
    msg = (str(e).strip().splitlines() or [""])[0]
    done(status="failed", error=f"{type(e).__name__}: {msg}" if msg else type(e).__name__)
    sys.exit(1)
"""


_CHILDREN: set[subprocess.Popen] = set()
_STOP = threading.Event()


def execute(job: dict, workdir: Path, log: Path, device: str, env_extra: dict | None = None,
            pretrained_bytes: bytes | None = None) -> dict:  # fmt: skip
    """Train and validate one run in its own process; the record (without the driver's fields), or None when it was
    stopped by a signal."""
    workdir = Path(workdir)
    if workdir.exists():  # an interrupted run starts over
        import shutil

        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    model_arg = job["config"]  # a config that does not resolve: Ultralytics says why, and the run is recorded
    if job["yaml_text"] is not None:  # the YAML travels in the job (a Ray node may not have the user's file)
        model_arg = str(workdir / job["yaml_name"])  # the config's own stem: Ultralytics reads the scale from it
        Path(model_arg).write_text(job["yaml_text"], encoding="utf-8")
    data = workdir / "data.yaml"
    data.write_text(job["data_text"], encoding="utf-8")
    pretrained = job["pretrained"]
    if pretrained_bytes is not None:
        pretrained = str(workdir / Path(pretrained).name)
        Path(pretrained).write_bytes(pretrained_bytes)
    train = [f"model={model_arg}", f"data={data}", f"epochs={job['epochs']}", f"imgsz={job['imgsz']}",
             f"batch={job['batch']}", f"seed={job['seed']}", "deterministic=True", f"device={device}",
             f"project={workdir}", "name=train", "exist_ok=True", "plots=False"]  # fmt: skip
    if job["fraction"] != 1.0:
        train.append(f"fraction={job['fraction']}")
    if pretrained:
        train.append(f"pretrained={pretrained}")
    train += job["extra"]
    val = {"data": str(data), "imgsz": job["imgsz"], "batch": job["batch"], "device": device, "plots": False,
           "verbose": False, "project": str(workdir), "name": "val", "exist_ok": True, "split": "val"}  # fmt: skip
    for kv in job["extra"]:  # dataloader workers and the like apply to the validation as well
        k, v = kv.split("=", 1)
        if k in ("workers", "half", "rect", "single_cls", "classes", "max_det", "conf", "iou"):
            val[k] = yaml.safe_load(v)
    spec = {"train": train, "val": val, "best": str(workdir / "train" / "weights" / "best.pt"),
            "result": str(workdir / "result.json")}  # fmt: skip
    (workdir / "job.json").write_text(json.dumps(spec))
    env = dict(os.environ)
    env.pop("YOLO_ATTN_DISABLE", None)  # the run must see the blocks through the start-up hook
    env.update(env_extra or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as fh:
        fh.write("yolo train " + " ".join(shlex.quote(a) for a in train) + "\n\n")
        fh.flush()
        p = subprocess.Popen([sys.executable, "-c", WORKER, str(workdir / "job.json")], stdout=fh,
                             stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)  # fmt: skip
        _CHILDREN.add(p)
        try:
            rc = p.wait()
        finally:
            _CHILDREN.discard(p)
    if _STOP.is_set():  # stopped by a signal to the driver: no record, the rerun runs it again
        return None
    try:
        rec = json.loads((workdir / "result.json").read_text())
    except (OSError, ValueError):
        rec = {"status": "failed", "error": f"the run's process exited with status {rc} without a result; see {log}"}
    rec.update(command="yolo train " + " ".join(shlex.quote(a) for a in train), device=device,
               host=socket.gethostname(), started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
               wall_seconds=round(time.time() - t0, 2))  # fmt: skip
    return rec


def _ray_execute(job: dict, device: str, pretrained_bytes: bytes | None) -> tuple[dict | None, str]:
    """A Ray task: one run in a temporary folder of the node it lands on; returns (record, log text)."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="yolo-attn-ablate-"))
    try:
        log = tmp / "run.log"
        rec = execute(job, tmp / "run", log, device, pretrained_bytes=pretrained_bytes)
        return rec, log.read_text(errors="replace") if log.is_file() else ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------------------------
def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False))
    os.replace(tmp, path)


def record_path(out: Path, stem: str, seed: int) -> Path:
    return out / "runs" / stem / f"seed{seed}.json"


def load_record(out: Path, stem: str, seed: int, fingerprint: str) -> dict | None:
    p = record_path(out, stem, seed)
    try:
        r = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return r if r.get("recipe") == fingerprint else None


def check_manifest(out: Path, recipe: Recipe) -> None:
    """DIR keeps one recipe: a rerun with other training settings would pair runs that are not comparable."""
    path = out / "ablation.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())["recipe"]
        except (OSError, ValueError, KeyError):
            raise AblateError(f"{path} is not an ablation manifest; use another --out") from None
        new = asdict(recipe)
        diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
        if diff:
            raise AblateError(f"--out {out} holds an ablation with another recipe ({'; '.join(diff)}); rerun with "
                              "its settings to resume it, or use another --out")  # fmt: skip
    write_json_atomic(path, {"recipe": asdict(recipe), "fingerprint": recipe.fingerprint()})


@dataclass
class Options:
    data: str
    seeds: int = 3
    epochs: int = 10
    imgsz: int = 640
    batch: int = 16
    fraction: float = 1.0
    pretrained: str | None = None
    control_pretrained: str | None = None
    identity_start: bool = False
    out: str = "runs/ablate"
    backend: str = "local"
    workers: int = 1
    ray_address: str | None = None
    device: str = "cpu"
    extra: list[str] = field(default_factory=list)


def devices(device: str) -> list[str]:
    d = str(device).strip()
    return [x.strip() for x in d.split(",") if x.strip()] if d not in ("", "cpu", "mps") else [d or "cpu"]


def ablate(entries: list[Entry], opt: Options, console=None) -> dict:
    """Run every (entry, seed) not yet finished, write the records and the summary; returns the summary."""
    if opt.seeds < 1 or opt.epochs < 1 or opt.workers < 1:
        raise AblateError("--seeds, --epochs and --workers must be at least 1")
    if not 0 < opt.fraction <= 1:
        raise AblateError(f"--fraction must be in (0, 1], got {opt.fraction}")
    if opt.backend not in ("local", "ray"):
        raise AblateError(f"--backend must be local or ray, got {opt.backend!r}")
    out = Path(opt.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = resolve_data(opt.data, out)
    recipe = Recipe(str(data), opt.epochs, opt.imgsz, opt.batch, opt.fraction, opt.identity_start,
                    sha256_file(opt.pretrained), sha256_file(opt.control_pretrained), list(opt.extra))  # fmt: skip
    check_manifest(out, recipe)
    fp = recipe.fingerprint()
    data_text = data.read_text()
    todo = []
    for seed in range(opt.seeds):  # seed-major: every finished seed completes a set of pairs
        for e in entries:
            r = load_record(out, e.stem, seed, fp)
            if r is None or r.get("status") != "ok":
                todo.append((e, seed))
    jobs = {
        (e.stem, seed): {
            "config": e.config, "yaml_name": f"{e.stem}.yaml", "yaml_text": e.yaml_text, "data_text": data_text,
            "epochs": opt.epochs, "imgsz": opt.imgsz, "batch": opt.batch, "fraction": opt.fraction, "seed": seed,
            "pretrained": str(Path(e.pretrained).resolve()) if e.pretrained else None, "extra": list(opt.extra),
        }
        for e, seed in todo
    }  # fmt: skip
    say = console or (lambda s: print(s, file=sys.stderr))
    total = len(entries) * opt.seeds
    say(f"ablate: {len(entries)} configs x {opt.seeds} seeds = {total} runs, {total - len(todo)} already finished, "
        f"{len(todo)} to run ({opt.backend}); records in {out / 'runs'}")  # fmt: skip

    lock = threading.Lock()

    def finish(e: Entry, seed: int, rec: dict) -> None:
        rec.update(config=e.config, stem=e.stem, role=e.role, seed=seed, recipe=fp, epochs=opt.epochs,
                   imgsz=opt.imgsz, model_yaml=e.yaml_text)  # fmt: skip
        if e.error and rec.get("status") != "ok":
            rec["error"] = e.error
        with lock:
            write_json_atomic(record_path(out, e.stem, seed), rec)
            summarize(entries, opt.seeds, out, fp, recipe)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="ablate", unit="run", dynamic_ncols=True, file=sys.stderr)
    stopped = _STOP  # set by a signal: children are stopped, their runs left without a record
    stopped.clear()
    previous = {}

    def on_signal(signum, frame):
        stopped.set()
        for p in list(_CHILDREN):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, on_signal)
    try:
        if opt.backend == "local":
            _run_local(todo, jobs, opt, out, finish, bar, stopped)
        else:
            _run_ray(todo, jobs, opt, out, finish, bar, stopped)
    finally:
        bar.close()
        for s, h in previous.items():
            signal.signal(s, h)
    summary = summarize(entries, opt.seeds, out, fp, recipe)
    if stopped.is_set():
        summary["interrupted"] = True
    return summary


def _run_local(todo, jobs, opt: Options, out: Path, finish, bar, stopped) -> None:
    slots: queue.Queue = queue.Queue()
    devs = devices(opt.device)
    for i in range(opt.workers):  # one device per parallel slot, round-robin
        slots.put(devs[i % len(devs)])
    env = {}
    if opt.workers > 1 and devs == ["cpu"]:  # parallel CPU runs share the cores instead of oversubscribing them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // opt.workers))

    def one(e: Entry, seed: int):
        if stopped.is_set():
            return
        dev = slots.get()
        try:
            bar.set_postfix_str(f"{e.stem} seed {seed}", refresh=True)
            rec = execute(jobs[(e.stem, seed)], out / "work" / e.stem / f"seed{seed}", out / "logs" /
                          f"{e.stem}-seed{seed}.log", dev, env_extra=env)  # fmt: skip
        finally:
            slots.put(dev)
        if rec is not None and not stopped.is_set():
            finish(e, seed, rec)
            bar.update(1)

    if opt.workers == 1:
        for e, seed in todo:
            if stopped.is_set():
                break
            one(e, seed)
        return
    with cf.ThreadPoolExecutor(opt.workers) as pool:
        for f in cf.as_completed([pool.submit(one, e, s) for e, s in todo]):
            f.result()


def _run_ray(todo, jobs, opt: Options, out: Path, finish, bar, stopped) -> None:
    try:
        import ray
    except ImportError:
        raise AblateError("--backend ray needs Ray: pip install 'yolo-attn[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kw = {"address": opt.ray_address} if opt.ray_address else {"num_cpus": opt.workers if opt.workers > 1 else None}
        ray.init(**kw, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=0)(_ray_execute)
        blobs = {}
        pending = {}
        for e, seed in todo:
            job = jobs[(e.stem, seed)]
            ref = None
            if job["pretrained"]:
                if job["pretrained"] not in blobs:
                    blobs[job["pretrained"]] = ray.put(Path(job["pretrained"]).read_bytes())
                ref = blobs[job["pretrained"]]
            # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU: device 0 is that GPU
            pending[task.remote(job, "0" if gpus else "cpu", ref)] = (e, seed)
        while pending and not stopped.is_set():
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for r in ready:
                e, seed = pending.pop(r)
                try:
                    rec, log = ray.get(r)
                except Exception as exc:  # the task itself died (node lost, out of memory)
                    rec, log = {"status": "failed", "error": f"Ray task failed: {str(exc).splitlines()[0]}"}, ""
                (out / "logs").mkdir(parents=True, exist_ok=True)
                (out / "logs" / f"{e.stem}-seed{seed}.log").write_text(log)
                if rec is not None:
                    finish(e, seed, rec)
                    bar.update(1)
        for r in pending:
            ray.cancel(r, force=True)
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------------------------
# Summary: CSV, markdown, forest plot
# ----------------------------------------------------------------------------------------------------------------
COLUMNS = ["config", "role", "runs", "failed", "map50_95_mean", "map50_95_std", "map50_mean", "map50_std",
           "delta_map50_95", "ci_low", "ci_high", "verdict", "delta_map50", "params", "gflops", "inference_ms",
           "train_s"]  # fmt: skip
RESOLVE = 0.5  # mAP points a user wants to resolve


def _fmt(x, nd=2):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def summarize(entries: list[Entry], seeds: int, out: Path, fp: str, recipe: Recipe) -> dict:
    """Rows per config from the records in DIR (mAP in points, 0-100); writes ablation.csv, .md and .png."""
    recs = {e.stem: [r for k in range(seeds) if (r := load_record(out, e.stem, k, fp))] for e in entries}
    ok = {s: {r["seed"]: r for r in rs if r.get("status") == "ok"} for s, rs in recs.items()}
    base = next(e for e in entries if e.role == "base")
    b95 = {k: 100 * r["map50_95"] for k, r in ok[base.stem].items()}
    b50 = {k: 100 * r["map50"] for k, r in ok[base.stem].items()}
    rows = []
    for e in entries:
        rs = ok[e.stem]
        m95 = {k: 100 * r["map50_95"] for k, r in rs.items()}
        m50 = {k: 100 * r["map50"] for k, r in rs.items()}
        last = rs[max(rs)] if rs else {}
        d95, d50 = paired(b95, m95), paired(b50, m50)
        is_base = e.role == "base"
        rows.append({
            "config": e.config, "role": e.role, "runs": len(rs),
            "failed": sum(r.get("status") != "ok" for r in recs[e.stem]),
            "map50_95_mean": sum(m95.values()) / len(m95) if m95 else math.nan, "map50_95_std": std(list(m95.values())),
            "map50_mean": sum(m50.values()) / len(m50) if m50 else math.nan, "map50_std": std(list(m50.values())),
            "delta_map50_95": math.nan if is_base else d95.mean, "ci_low": math.nan if is_base else d95.low,
            "ci_high": math.nan if is_base else d95.high, "verdict": "" if is_base else d95.verdict,
            "delta_map50": math.nan if is_base else d50.mean, "sd_diff": d95.sd,
            "params": last.get("params"), "gflops": last.get("gflops"),
            "inference_ms": sum(r["inference_ms"] for r in rs.values()) / len(rs) if rs else math.nan,
            "train_s": sum(r["train_seconds"] for r in rs.values()) / len(rs) if rs else math.nan,
            "errors": sorted({r.get("error", "") for r in recs[e.stem] if r.get("status") != "ok"}),
        })  # fmt: skip
    sds = [r["sd_diff"] for r in rows if r["role"] != "base" and not math.isnan(r["sd_diff"])]
    pooled = math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else math.nan
    base_row = rows[0]
    summary = {"rows": rows, "pooled_sd_diff": pooled, "base_sd": base_row["map50_95_std"],
               "base_mean": base_row["map50_95_mean"], "seeds_for_half_point": seeds_to_resolve(pooled, RESOLVE),
               "recipe": asdict(recipe), "seeds": seeds}  # fmt: skip
    _write_csv(rows, out / "ablation.csv")
    _write_md(summary, out / "ablation.md")
    _plot(summary, out / "ablation.png")
    return summary


def _write_csv(rows, path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float)
                            else v) for k, v in r.items()})  # fmt: skip
    os.replace(tmp, path)


def _write_md(s: dict, path: Path) -> None:
    rc = s["recipe"]
    rows = s["rows"]
    start = "from scratch" if not rc["pretrained_sha256"] else (
        "fine-tuned from the base's weights" + (" with the inserted blocks starting as the identity"
                                                 if rc["identity_start"] else ""))  # fmt: skip
    lines = [
        "# Ablation",
        "",
        f"{time.strftime('%Y-%m-%d')}. Data {rc['data']}; {rc['epochs']} epochs at imgsz {rc['imgsz']}, batch "
        f"{rc['batch']}" + (f", fraction {rc['fraction']}" if rc["fraction"] != 1 else "") + f", {start}; seeds "
        f"0..{s['seeds'] - 1} with deterministic=True" + (f"; train arguments {' '.join(rc['extra'])}" if rc["extra"]
                                                          else "") + ".",
        "",
        "mAP in points (0-100). delta: mean over seeds of (config - base) on the same seed; 95% interval: Student t "
        "over those paired differences; verdict: better / worse when the interval excludes 0, else within noise.",
        "",
        "| config | role | runs | mAP50-95 | sd | mAP50 | sd | delta mAP50-95 | 95% interval | verdict | params | "
        "GFLOPs | inference ms | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ci = "" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        delta = "" if math.isnan(r["delta_map50_95"]) else f"{r['delta_map50_95']:+.2f}"
        runs = f"{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        params = f"{r['params']:,}" if r["params"] else ""
        lines.append(f"| {r['config']} | {r['role']} | {runs} | {_fmt(r['map50_95_mean'])} | {_fmt(r['map50_95_std'])}"
                     f" | {_fmt(r['map50_mean'])} | {_fmt(r['map50_std'])} | {delta} | {ci} | {r['verdict']} | "
                     f"{params} | {_fmt(r['gflops'])} | {_fmt(r['inference_ms'], 1)} | {_fmt(r['train_s'], 0)} |")  # fmt: skip
    lines.append("")
    if not math.isnan(s["pooled_sd_diff"]):
        n = s["seeds_for_half_point"]
        lines.append(f"Seed-to-seed spread of a paired difference (pooled over the configs): {s['pooled_sd_diff']:.2f} "
                     f"points. Resolving a {RESOLVE} point difference (95% interval half-width below {RESOLVE}) with "
                     f"this recipe takes " + (f"about {n} seeds per config." if n else "more seeds than is practical: "
                                              "use more data or longer training.") + "")  # fmt: skip
        if not math.isnan(s["base_sd"]):
            lines.append("")
            lines.append(f"The base alone varies by {s['base_sd']:.2f} points (sd over seeds) around "
                         f"{s['base_mean']:.2f}; pairing by seed takes that shared part out. Both spreads are "
                         "measured at this recipe's mAP level: on another dataset or schedule, measure them again.")  # fmt: skip
    errs = [(r["config"], e) for r in rows for e in r["errors"]]
    if errs:
        lines += ["", "Failed runs:", ""] + [f"- {c}: {e}" for c, e in errs]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in s["rows"] if r["role"] != "base" and not math.isnan(r["delta_map50_95"])]
    rows.sort(key=lambda r: r["delta_map50_95"])
    base = s["rows"][0]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 1.6 + 0.45 * max(len(rows), 1)), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1.3]})  # fmt: skip
    y = list(range(len(rows)))
    colors = {"better": "tab:green", "worse": "tab:red"}
    for i, r in enumerate(rows):
        c = "tab:purple" if r["role"] == "control" else colors.get(r["verdict"], "tab:gray")
        if not math.isnan(r["ci_low"]):
            ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=c, lw=2)
        ax.plot(r["delta_map50_95"], i, "o", color=c, ms=6)
    ax.axvline(0, color="black", lw=1)
    ctrl = next((r for r in rows if r["role"] == "control"), None)
    if ctrl:
        ax.axvline(ctrl["delta_map50_95"], color="tab:purple", ls="--", lw=1,
                   label=f"capacity control ({Path(ctrl['config']).stem})")  # fmt: skip
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [Path(r["config"]).stem for r in rows])
    ax.set_xlabel(f"mAP50-95 - base ({Path(base['config']).stem}, {_fmt(base['map50_95_mean'])}), points, 95% interval")
    ax.grid(axis="x", alpha=0.3)
    rc = s["recipe"]
    ax.set_title(f"{Path(rc['data']).stem}: {rc['epochs']} epochs at {rc['imgsz']}, {s['seeds']} seeds, paired")
    bp = base["params"] or 0
    bg = base["gflops"] or 0
    for i, r in enumerate(rows):
        for val, ref, dy, color in ((r["params"], bp, -0.18, "tab:blue"), (r["gflops"], bg, 0.18, "tab:orange")):
            if val and ref:
                pct = 100 * (val / ref - 1)
                ax2.barh(i + dy, pct, height=0.35, color=color)
                ax2.text(max(pct, 0), i + dy, f" {pct:+.1f}%", va="center", fontsize=7)
    ax2.axvline(0, color="black", lw=1)
    ax2.margins(x=0.35)
    ax2.set_xlabel("% over base:\nparams (blue), GFLOPs (orange)", fontsize=8)
    ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
