"""One ablation run, in its own process: ``python worker.py JOB.json``.

It runs Ultralytics' CLI entrypoint with the exact ``yolo train`` arguments of the job (``resume=last.pt`` for a run
that continues), validates ``best.pt`` and writes the result JSON. Nothing of yolo_attn is imported before training: the installed start-up hook activates it
when Ultralytics builds the model, as in any ``yolo`` process, so what it trains is what ``yolo train`` trains.
"""

import importlib.metadata as md
import json
import os
import sys
import time
import traceback

# The task's headline metric and its second one, by Ultralytics' results_dict keys
METRICS = {
    "detect": ("metrics/mAP50-95(B)", "metrics/mAP50(B)"),
    "obb": ("metrics/mAP50-95(B)", "metrics/mAP50(B)"),
    "segment": ("metrics/mAP50-95(M)", "metrics/mAP50(M)"),
    "pose": ("metrics/mAP50-95(P)", "metrics/mAP50(P)"),
    "classify": ("metrics/accuracy_top1", "metrics/accuracy_top5"),
}


def main(job_file: str) -> int:
    with open(job_file) as fh:
        job = json.load(fh)
    res: dict = {}

    def done(**kw) -> None:
        res.update(kw)
        from yolo_attn.files import write_json_atomic  # after training: the hook has activated yolo_attn by now

        write_json_atomic(job["result"], res)

    try:
        res["versions"] = {p: md.version(p) for p in ("yolo-attn", "ultralytics", "torch", "torchvision")}
        res["versions"]["python"] = sys.version.split()[0]
        sys.argv = ["yolo", "train", *job["train"]]  # before the import: Ultralytics reads its ARGV at import time
        from ultralytics.cfg import entrypoint

        t = time.perf_counter()
        if not job.get("skip_train"):  # a run whose training ended before an interruption is only validated
            entrypoint()
        res["train_seconds"] = round(time.perf_counter() - t, 2)
        if not os.path.isfile(job["best"]):
            raise RuntimeError("training ended without " + job["best"])
        from ultralytics import RTDETR, YOLO
        from ultralytics.utils.torch_utils import get_flops

        model = (RTDETR if job["rtdetr"] else YOLO)(job["best"])  # as the `yolo` command picks it
        m = model.val(**job["val"])
        net = model.model
        results = {k: float(v) for k, v in m.results_dict.items()}
        first, second = METRICS.get(model.task, METRICS["detect"])
        res.update(
            task=model.task, metric=first.removeprefix("metrics/"), value=results[first],
            metric2=second.removeprefix("metrics/"), value2=results[second], metrics=results,
            inference_ms=round(float(m.speed["inference"]), 3), params=sum(p.numel() for p in net.parameters()),
            gflops=round(float(get_flops(net, job["val"]["imgsz"])), 4),
            blocks=sorted({type(x).__name__ for x in net.model if type(x).__module__.startswith("yolo_attn.")}),
        )  # fmt: skip
        if "metrics/mAP50-95(B)" in results:  # box mAP, for every task that has boxes
            res.update(map50_95=results["metrics/mAP50-95(B)"], map50=results["metrics/mAP50(B)"])
        done(status="ok")
    except KeyboardInterrupt:
        return 130
    except BaseException as e:
        traceback.print_exc()
        msg = (str(e).strip().splitlines() or [""])[0]
        done(status="failed", error=f"{type(e).__name__}: {msg}" if msg else type(e).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
