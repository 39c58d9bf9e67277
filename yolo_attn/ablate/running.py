"""Running an ablation: every (config, seed) not yet finished, as local processes or Ray tasks.

Each run is a fresh Python process running ``worker.py`` by path (it imports only Ultralytics; the installed
start-up hook brings the blocks), so what it trains is what ``yolo train`` trains. The local backend runs those
processes here; the Ray backend runs each as a Ray task on a cluster, in a temporary folder of its node.

    DIR/logs/<stem>-seed<k>.log    the run's Ultralytics output
    DIR/work/                      configs, weights and validation output of local runs
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import names
from ..files import write_atomic
from .planning import Entry, Options, Recipe, resolve_data, sha256_file
from .records import check_manifest, load_record, manifest_conflict, save_record
from .report import summarize

WORKER = Path(__file__).with_name("worker.py")
VAL_KEYS = ("workers", "half", "rect", "single_cls", "classes", "max_det", "conf", "iou")  # train args val also takes

_CHILDREN: set[subprocess.Popen] = set()
_STOP = threading.Event()


def devices(device: str) -> list[str]:
    d = str(device).strip()
    return [x.strip() for x in d.split(",") if x.strip()] if d not in ("", "cpu", "mps") else [d or "cpu"]


def train_args(job: dict, workdir: Path, device: str) -> list[str]:
    """The ``yolo train`` arguments of a run working in ``workdir``."""
    model = str(workdir / job["yaml_name"]) if job["yaml_text"] is not None else job["config"]
    train = [f"model={model}", f"data={workdir / 'data.yaml'}", f"epochs={job['epochs']}", f"imgsz={job['imgsz']}",
             f"batch={job['batch']}", f"seed={job['seed']}", "deterministic=True", f"device={device}",
             f"project={workdir}", "name=train", "exist_ok=True", "plots=False"]  # fmt: skip
    if job["fraction"] != 1.0:
        train.append(f"fraction={job['fraction']}")
    if job["pretrained"]:
        train.append(f"pretrained={workdir / Path(job['pretrained']).name if job['ship_pretrained'] else job['pretrained']}")
    return train + job["extra"]


def command(job: dict, workdir: Path, device: str) -> str:
    return "yolo train " + " ".join(shlex.quote(a) for a in train_args(job, workdir, device))


def resume_point(workdir: Path) -> tuple[str | None, int, list[str], bool]:
    """Where an interrupted run continues: (checkpoint, epochs it holds, notes on checkpoints that do not load, whether
    training had finished). last.pt first, then best.pt (a kill while last.pt was written leaves it truncated)."""
    from ..checkpoints import load_checkpoint

    notes = []
    for name in ("last.pt", "best.pt"):
        path = Path(workdir) / "train" / "weights" / name
        if not path.is_file():
            continue
        try:
            _, ckpt = load_checkpoint(str(path))
        except Exception as e:  # truncated or corrupt: the next one, or a fresh start
            notes.append(f"{name} does not load ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]})")
            continue
        epoch = ckpt.get("epoch", -1)
        if epoch is None or epoch < 0:  # Ultralytics strips the optimizer when training ends: nothing to resume
            return str(path), -1, notes, True
        return str(path), epoch + 1, notes, False
    return None, 0, notes, False


def _die_with_parent() -> None:
    """In the child before exec (Linux): the kernel sends SIGTERM when the process that started it dies, so a killed
    driver or Ray task leaves no training process behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def execute(job: dict, workdir: Path, log: Path, device: str, env_extra: dict | None = None,
            pretrained_bytes: bytes | None = None) -> dict | None:  # fmt: skip
    """Train and validate one run in its own process; the record (without the driver's fields), or None when it was
    stopped by a signal. A run interrupted before continues from its last epoch checkpoint in ``workdir`` with
    Ultralytics' own resume (``resumed_from_epoch`` in the record)."""
    import shutil

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    attempts = int((workdir / "attempts").read_text()) + 1 if (workdir / "attempts").is_file() else 1
    write_atomic(workdir / "attempts", str(attempts))
    resume, done, notes, finished = resume_point(workdir)
    if resume is None and (workdir / "train").exists():  # nothing usable: start over
        shutil.rmtree(workdir / "train")
    elif resume is not None and not finished:  # rows of epochs after the checkpoint are trained again: drop them
        csv_path = workdir / "train" / "results.csv"
        if csv_path.is_file():
            lines = csv_path.read_text().splitlines(keepends=True)
            write_atomic(csv_path, "".join(lines[: 1 + done]))
    if job["yaml_text"] is not None:  # the YAML travels in the job (a Ray node may not have the user's file)
        (workdir / job["yaml_name"]).write_text(job["yaml_text"], encoding="utf-8")  # its stem keeps the scale letter
    (workdir / "data.yaml").write_text(job["data_text"], encoding="utf-8")
    if pretrained_bytes is not None:
        (workdir / Path(job["pretrained"]).name).write_bytes(pretrained_bytes)
    train = train_args(job, workdir, device)
    if resume is not None and not finished:  # Ultralytics' resume: the checkpoint's recipe, this node's device
        train = [f"resume={resume}", f"model={resume}", f"device={device}",
                 *[kv for kv in job["extra"] if kv.split("=", 1)[0] in ("workers",)]]  # fmt: skip
    val = {"data": str(workdir / "data.yaml"), "imgsz": job["imgsz"], "batch": job["batch"], "device": device,
           "plots": False, "verbose": False, "project": str(workdir), "name": "val", "exist_ok": True, "split": "val"}  # fmt: skip
    for kv in job["extra"]:  # dataloader workers and the like apply to the validation as well
        k, v = kv.split("=", 1)
        if k in VAL_KEYS:
            val[k] = yaml.safe_load(v)
    spec = {"train": train, "val": val, "best": str(workdir / "train" / "weights" / "best.pt"),
            "result": str(workdir / "result.json"), "rtdetr": names.is_rtdetr(job["yaml_name"]),
            "skip_train": finished}  # fmt: skip
    (workdir / "result.json").unlink(missing_ok=True)
    (workdir / "job.json").write_text(json.dumps(spec))
    env = dict(os.environ)
    env.pop("YOLO_ATTN_DISABLE", None)  # the run must see the blocks through the start-up hook
    env["PYTHONSAFEPATH"] = "1"  # the worker's folder is not put on sys.path
    env.update(env_extra or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cmd = "yolo train " + " ".join(shlex.quote(a) for a in train)
    with open(log, "a" if resume else "w") as fh:  # a resumed run keeps the log of its first part
        fh.write(("\n" if resume else "") + cmd + "\n" + "".join(f"  ({n})\n" for n in notes) + "\n")
        fh.flush()
        p = subprocess.Popen([sys.executable, str(WORKER), str(workdir / "job.json")], stdout=fh,
                             stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True,
                             preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)  # fmt: skip
        _CHILDREN.add(p)
        try:
            rc = p.wait()
        finally:
            _CHILDREN.discard(p)
    if _STOP.is_set():  # stopped by a signal to the driver: no record, the rerun continues it
        return None
    try:
        rec = json.loads((workdir / "result.json").read_text())
    except (OSError, ValueError):
        rec = {"status": "failed", "error": f"the run's process exited with status {rc} without a result; see {log}"}
    rec.update(command=cmd, device=device, host=socket.gethostname(), attempts=attempts,
               started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)), wall_seconds=round(time.time() - t0, 2),
               resumed_from_epoch=max(done, 0) if resume and not finished else 0)  # fmt: skip
    if notes:
        rec["resume_notes"] = notes
    return rec


def progress(workdir: Path, epochs: int) -> str | None:
    """'epoch k/N mAP50-95 x' of a run in progress, from the results.csv Ultralytics writes after every epoch."""
    import csv

    path = Path(workdir) / "train" / "results.csv"
    try:
        rows = list(csv.DictReader(path.open()))
    except OSError:
        return None
    if not rows:
        return None
    last = {k.strip(): v for k, v in rows[-1].items() if k}
    metric = next((k for k in ("metrics/mAP50-95(M)", "metrics/mAP50-95(P)", "metrics/mAP50-95(B)",
                               "metrics/accuracy_top1") if k in last), None)  # fmt: skip
    value = f" {metric.removeprefix('metrics/')} {float(last[metric]):.4f}" if metric else ""
    return f"epoch {len(rows)}/{epochs}{value}"


def _ray_execute(job: dict, device: str, pretrained_bytes: bytes | None, storage: str | None) -> tuple[dict | None, str]:
    """A Ray task: one run, in ``storage`` (a folder every node sees: a retried task on another node continues from
    the run's last checkpoint there) or else in a temporary folder of its node; returns (record, log text when the log
    is not on the storage)."""
    import shutil

    import ray

    node = ray.get_runtime_context().get_node_id()
    if storage:
        run = Path(storage) / "work" / job["yaml_name"].removesuffix(".yaml") / f"seed{job['seed']}"
        log = Path(storage) / "logs" / f"{job['yaml_name'].removesuffix('.yaml')}-seed{job['seed']}.log"
        write_atomic(run / "ray_node", node)  # which node trains it now (a lost node's run shows up here)
        rec = execute(job, run, log, device, pretrained_bytes=pretrained_bytes)
        return (rec if rec is None else {**rec, "ray_node": node}), ""
    tmp = Path(tempfile.mkdtemp(prefix="yolo-attn-ablate-"))
    try:
        log = tmp / "run.log"
        rec = execute(job, tmp / "run", log, device, pretrained_bytes=pretrained_bytes)
        rec = rec if rec is None else {**rec, "ray_node": node}
        return rec, log.read_text(errors="replace") if log.is_file() else ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """An ablation ready to run: its folder, recipe and the runs still to do."""

    entries: list[Entry]
    opt: Options
    out: Path
    data: Path
    data_text: str
    recipe: Recipe
    conflict: str | None  # why --out cannot take this recipe, or None
    todo: list[tuple[Entry, int]]
    jobs: dict

    @property
    def fingerprint(self) -> str:
        return self.recipe.fingerprint()


def prepare(entries: list[Entry], opt: Options) -> Prepared:
    """The runs of an ablation and what a rerun skips, without writing anything."""
    opt.check()
    out = Path(opt.out).resolve()
    data, data_text = resolve_data(opt.data, out)
    recipe = Recipe(str(data), opt.epochs, opt.imgsz, opt.batch, opt.fraction, opt.identity_start,
                    sha256_file(opt.pretrained), sha256_file(opt.control_pretrained), list(opt.extra))  # fmt: skip
    fp = recipe.fingerprint()
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
            "ship_pretrained": opt.backend == "ray",  # Ray nodes get the weights' bytes with the task
        }
        for e in entries for seed in range(opt.seeds)
    }  # fmt: skip
    return Prepared(entries, opt, out, data, data_text, recipe, manifest_conflict(out, recipe), todo, jobs)


def dry_run(p: Prepared) -> list[str]:
    """The plan as lines: base, control, configs, seeds, each run's exact train command, what a rerun skips."""
    opt = p.opt
    by_role = {r: [e.config for e in p.entries if e.role == r] for r in ("base", "control", "block")}
    devs = devices(opt.device)
    lines = [f"base: {by_role['base'][0]}", f"control: {by_role['control'][0] if by_role['control'] else 'none'}",
             f"configs: {', '.join(by_role['block'])}", f"seeds: {', '.join(map(str, range(opt.seeds)))}",
             f"runs: {len(p.entries)} configs x {opt.seeds} seeds = {len(p.entries) * opt.seeds}, {len(p.todo)} to run, "
             f"{len(p.entries) * opt.seeds - len(p.todo)} finished (a rerun skips them); records in {p.out / 'runs'}"]  # fmt: skip
    if p.conflict:
        lines.append(f"refused: {p.conflict}")
    if opt.backend == "ray":
        lines.append("device: Ray gives each run one GPU where the cluster has GPUs (device=0 in the task), else cpu; "
                     "commands below say cpu")  # fmt: skip
    todo = set((e.stem, s) for e, s in p.todo)
    storage = storage_of(opt, p.out)
    k = 0
    for seed in range(opt.seeds):
        for e in p.entries:
            if (e.stem, seed) not in todo:
                lines.append(f"skip {e.stem} seed {seed}: finished")
                continue
            work = storage / "work" / e.stem / f"seed{seed}" if storage else Path("<node tmp>/run")
            dev = "cpu" if opt.backend == "ray" else devs[k % len(devs)]
            k += 1
            why = f"  # {e.error}" if e.error else ""
            lines.append(f"run {e.stem} seed {seed} ({e.role}): {command(p.jobs[(e.stem, seed)], work, dev)}{why}")
    return lines


class Monitor:
    """The runs in progress and their epochs, shown beside the bar over runs (polled from their results.csv every
    ``every`` seconds in a thread)."""

    def __init__(self, bar, epochs: int, every: float = 1.0):
        self.bar, self.epochs, self.every = bar, epochs, every
        self.running: dict[str, tuple[Path, bool]] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, label: str, workdir: Path, waiting: bool = False) -> None:
        """A run that started (``waiting``: queued, shown once it has a first epoch)."""
        with self.lock:
            self.running[label] = (Path(workdir), waiting)
        self.show()

    def stop(self, label: str) -> None:
        with self.lock:
            self.running.pop(label, None)

    def show(self) -> None:
        with self.lock:
            items = list(self.running.items())
        shown = [(label, progress(w, self.epochs), waiting) for label, (w, waiting) in items]
        parts = [f"{label} {p or 'starting'}" for label, p, waiting in shown if p or not waiting]
        self.bar.set_postfix_str("; ".join(parts), refresh=True)

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            self.show()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def storage_of(opt: Options, out: Path) -> Path | None:
    """Where runs keep their checkpoints and logs: ``--storage``, or ``--out`` for local runs and a local Ray; None
    for a remote Ray cluster without ``--storage`` (each run then works in a temporary folder of its node)."""
    if opt.storage:
        if "://" in opt.storage:
            from .planning import AblateError

            raise AblateError(f"--storage {opt.storage}: give a folder every node mounts (a shared filesystem path); "
                              "URIs such as s3:// are not supported")  # fmt: skip
        return Path(opt.storage).resolve()
    return out if opt.backend == "local" or not opt.ray_address else None


def ablate(entries: list[Entry], opt: Options, console=None) -> dict:
    """Run every (entry, seed) not yet finished, write the records and the summary; returns the summary."""
    p = prepare(entries, opt)
    out, fp, todo = p.out, p.fingerprint, p.todo
    out.mkdir(parents=True, exist_ok=True)
    if p.data_text != (p.data.read_text() if p.data.is_file() else None):
        write_atomic(p.data, p.data_text)
    check_manifest(out, p.recipe)
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
            save_record(out, e.stem, seed, rec)
            summarize(entries, opt.seeds, out, fp, p.recipe)

    from tqdm import tqdm

    storage = storage_of(opt, out)
    if opt.backend == "ray" and storage is None:
        say("ablate: no --storage: runs work in temporary folders of their nodes, so a run on a lost node starts over "
            "and its progress shows only at its end; give --storage DIR (a folder every node mounts) to resume it")  # fmt: skip
    bar = tqdm(total=len(todo), desc="ablate", unit="run", dynamic_ncols=True, file=sys.stderr)
    stopped = _STOP  # set by a signal: children are stopped, their runs left without a record
    stopped.clear()
    previous = {}

    def on_signal(signum, frame):
        stopped.set()
        for child in list(_CHILDREN):
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, on_signal)
    try:
        with Monitor(bar, opt.epochs) as monitor:
            if opt.backend == "local":
                _run_local(todo, p.jobs, opt, out, finish, bar, stopped, monitor)
            else:
                _run_ray(todo, p.jobs, opt, out, finish, bar, stopped, monitor, storage, on_signal if previous else None)
    finally:
        bar.close()
        for s, h in previous.items():
            signal.signal(s, h)
    summary = summarize(entries, opt.seeds, out, fp, p.recipe)
    if stopped.is_set():
        summary["interrupted"] = True
    return summary


def _run_local(todo, jobs, opt: Options, out: Path, finish, bar, stopped, monitor: Monitor) -> None:
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
        label, workdir = f"{e.stem} s{seed}", out / "work" / e.stem / f"seed{seed}"
        monitor.start(label, workdir)
        try:
            rec = execute(jobs[(e.stem, seed)], workdir, out / "logs" / f"{e.stem}-seed{seed}.log", dev, env_extra=env)
        finally:
            monitor.stop(label)
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


def _run_ray(todo, jobs, opt: Options, out: Path, finish, bar, stopped, monitor: Monitor, storage: Path | None,
             on_signal=None) -> None:  # fmt: skip
    from .planning import AblateError

    try:
        import ray
    except ImportError:
        raise AblateError("--backend ray needs Ray: pip install 'yolo-attn[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kw = {"address": opt.ray_address} if opt.ray_address else {"num_cpus": opt.workers if opt.workers > 1 else None}
        ray.init(**kw, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if on_signal is not None:  # ray.init installs its own SIGTERM handler (exit 1): a stop must cancel the runs
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        # a lost node or killed worker (a system failure) reruns the task, which continues from the run's last checkpoint
        # on the storage; an exception inside the task (none expected: failures are records) is not retried
        task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=opt.retries,
                          retry_exceptions=False)(_ray_execute)  # fmt: skip
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
            pending[task.remote(job, "0" if gpus else "cpu", ref, str(storage) if storage else None)] = (e, seed)
            if storage:
                monitor.start(f"{e.stem} s{seed}", storage / "work" / e.stem / f"seed{seed}", waiting=True)
        while pending and not stopped.is_set():
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for r in ready:
                e, seed = pending.pop(r)
                monitor.stop(f"{e.stem} s{seed}")
                try:
                    rec, log = ray.get(r)
                except Exception as exc:  # the task died more often than --retries allows
                    rec, log = {"status": "failed", "error": f"Ray task failed: {str(exc).splitlines()[0]}"}, ""
                name = f"{e.stem}-seed{seed}.log"
                if storage is None or not (storage / "logs" / name).is_file():
                    write_atomic(out / "logs" / name, log)
                elif storage != out:  # the log streamed to the storage: a copy lands on the driver
                    write_atomic(out / "logs" / name, (storage / "logs" / name).read_bytes())
                if rec is not None:
                    finish(e, seed, rec)
                    bar.update(1)
        for r in pending:
            ray.cancel(r, force=True)
    finally:
        if started:
            ray.shutdown()
