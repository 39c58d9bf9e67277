"""Export support: ONNX ``DeformConv`` for DCN, and clear errors for formats a block cannot be carried into.

``torchvision::deform_conv2d`` has no ONNX symbolic. ``register_deform_conv_symbolic()`` maps it to the standard
ONNX ``DeformConv`` operator (opset 19), which onnxruntime runs; the offset layout (pairs of y, x per kernel tap,
taps in row-major order, per offset group) and the modulation mask are the same in both.

``on_export_start(exporter)`` is added to Ultralytics' default callbacks by ``yolo_attn.patch``: when the model being
exported holds a DCN it registers the symbolic, raises the ONNX opset to 19 if none was asked for, and stops with a
clear message for an explicit lower opset or a format not verified to carry deformable convolution.
"""

from __future__ import annotations

from .modules import DCN
from .modules._common import layer_name

ONNX_DEFORM_OPSET = 19
DCN_FORMATS = {"onnx", "torchscript"}  # formats verified to carry DCN (ONNX runs in onnxruntime)


class ExportFormatError(RuntimeError):
    """A block of the model cannot be exported to the requested format."""


_registered = False


def register_deform_conv_symbolic() -> None:
    """Teach the TorchScript-based ONNX exporter ``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (idempotent)."""
    global _registered
    if _registered:
        return
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx.symbolic_helper import parse_args

    @parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
    def deform_conv2d(g, x, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask):
        kh, kw = weight.type().sizes()[2:]
        inputs = [x, weight, offset, bias] + ([mask] if use_mask else [])
        return g.op(
            "DeformConv",
            *inputs,
            dilations_i=[dh, dw],
            group_i=groups,
            kernel_shape_i=[kh, kw],
            offset_group_i=offset_groups,
            pads_i=[ph, pw, ph, pw],
            strides_i=[sh, sw],
        )

    register_custom_op_symbolic("torchvision::deform_conv2d", deform_conv2d, ONNX_DEFORM_OPSET)
    _registered = True


def dcn_layers(model) -> list[str]:
    """'layer 4 (C2f_DCN)'-style names of the model's layers that hold a DCN."""
    layers = getattr(model, "model", None)
    if layers is None:
        return [type(m).__name__ for m in model.modules() if isinstance(m, DCN)][:1]
    return [layer_name(m) for m in layers if any(isinstance(x, DCN) for x in m.modules())]


def on_export_start(exporter) -> None:
    """Ultralytics callback: prepare (or refuse) the export of a model that holds DCN layers."""
    model = getattr(exporter, "model", None)
    fmt = str(getattr(exporter.args, "format", "")).lower()
    if model is None:  # Ultralytics 8.3.x runs this callback before the exporter holds the model: nothing to check,
        if fmt == "onnx":  # but DCN layers must still map to ONNX DeformConv (harmless for models without them)
            register_deform_conv_symbolic()
        return
    found = dcn_layers(model)
    if not found:
        return
    where = ", ".join(found)
    if fmt not in DCN_FORMATS:
        raise ExportFormatError(
            f"yolo_attn: DCN ({where}) cannot be exported to format={fmt}: deformable sampling has no operator "
            f"yolo_attn can map there. Export to onnx (opset >= {ONNX_DEFORM_OPSET}, runs in onnxruntime) or "
            "torchscript."
        )
    if fmt == "onnx":
        opset = exporter.args.opset
        if opset and opset < ONNX_DEFORM_OPSET:
            raise ExportFormatError(
                f"yolo_attn: DCN ({where}) exports as ONNX DeformConv, which needs opset >= {ONNX_DEFORM_OPSET}; "
                f"got opset={opset}"
            )
        exporter.args.opset = opset or ONNX_DEFORM_OPSET
        register_deform_conv_symbolic()
