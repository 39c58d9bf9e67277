#!/usr/bin/env bash
# The compatibility run: the version-sensitive tests against older Ultralytics releases, each release in its own
# cached virtual environment (.venv-ul<version>, set up by setup_env.sh and reused while nothing it installs changed).
#
#   bash scripts/compat.sh                 # the oldest supported release and one mid-8.3 release
#   bash scripts/compat.sh 8.3.253         # any releases you name
#
# What runs: activation and the start-up hook, every ready config built at n (the representative ones at s too), the
# errors, structural transfer, ONNX export of four configs in onnxruntime, and one plain `yolo train` of one epoch
# followed by `yolo val` and a checkpoint reload in a fresh process with and without ULTRALYTICS_SAFE_LOAD=1, and SQR on
# RT-DETR (all but its ONNX export). YOLO26 configs are checked to refuse in one line before 8.4.0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(8.3.0 8.3.100)

tests=(  # with --full: their slow tests too
    tests/test_activation.py
    tests/test_errors.py
    tests/test_transfer.py
    "tests/test_export.py::test_onnx_export_runs_in_onnxruntime[yolov8-ca.yaml]"
    "tests/test_export.py::test_onnx_export_runs_in_onnxruntime[yolov8-dcn.yaml]"
    "tests/test_export.py::test_onnx_export_runs_in_onnxruntime[yolo11-cbam.yaml]"
    "tests/test_export.py::test_onnx_export_runs_in_onnxruntime[yolo11-asff.yaml]"
    "tests/test_cli.py::test_yolo_cli_train_val_and_reload[yolov8n-ca.yaml]"
    tests/test_sqr.py
)
# RT-DETR's ONNX export on these releases' torch is Ultralytics' own concern; SQR's eval path is Ultralytics' code
deselect=(--deselect tests/test_sqr.py::test_onnx_export_equals_plain_rtdetr)

DEFAULT_TORCH="torch==2.14.1 torchvision==0.29.1"
status=0
for v in "${versions[@]}"; do
    venv=".venv-ul$v"
    # Releases before 8.3.215 call torch.onnx.export without dynamo=False, which torch 2.9 and later take as the
    # dynamo exporter (it needs onnxscript and fails on these graphs): they get a torch of their own time.
    case $v in
        8.3.[0-9] | 8.3.[1-9][0-9]) torch_pins="torch==2.4.1 torchvision==0.19.1" ;;  # Sep 2024 - Mar 2025
        8.3.1[0-9][0-9] | 8.3.20[0-9] | 8.3.21[0-4]) torch_pins="torch==2.6.0 torchvision==0.21.0" ;;
        *) torch_pins="" ;;
    esac
    echo "[compat] Ultralytics $v in $venv${torch_pins:+ with $torch_pins}"
    YOLO_ATTN_VENV=$venv YOLO_ATTN_ULTRALYTICS=$v YOLO_ATTN_TORCH=${torch_pins:-$DEFAULT_TORCH} bash scripts/setup_env.sh
    # The onnxslim this release's ONNX exporter asks for: it would try to pip install it at export time, and the
    # tests never download. Read off the release's own exporter, so each release gets its own pin.
    slim=$("$venv/bin/python" -c 'import importlib.util as u, pathlib, re
src = (pathlib.Path(u.find_spec("ultralytics").origin).parent / "engine" / "exporter.py").read_text()
print(" ".join(sorted(set(re.findall(r"\"(onnxslim[=<>]*[0-9.]*)\"", src)))))')
    [ -z "$slim" ] || "$venv/bin/python" -m pip install -q --disable-pip-version-check $slim
    if ! YOLO_OFFLINE=1 "$venv/bin/pytest" -ra -q -p no:cacheprovider --full "${deselect[@]}" "${tests[@]}" ||
       ! YOLO_OFFLINE=1 "$venv/bin/pytest" -ra -q -p no:cacheprovider tests/test_configs.py::test_ready_config_builds_at_every_scale; then
        echo "[compat] Ultralytics $v: FAILED"
        status=1
    fi
done
exit $status
