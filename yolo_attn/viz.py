"""``yolo-attn viz MODEL IMAGE``: every attention block's map, overlaid on the image, one PNG each plus a grid.

The map of each block, averaged over channels where it has them, at the block's own resolution:
CA: g^h * g^w; SimAM: sigmoid(1/e); CBAM: its spatial attention Ms; MS-CAM: M(x); AFF/iAFF: the mixing weight of the
first input; ASFF: the per-pixel weight of its own level. A block without a map of its own would get its
channel-weighted activation (mean over channels of its output).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .modules import AFF, ASFF, CA, CBAM, MSCAM, SimAM
from .registry import BLOCKS


def block_map(module, inputs, output) -> tuple[torch.Tensor, str]:
    """(map (H, W), what it shows) for the first image of the batch."""
    x = inputs[0]
    if isinstance(module, CA):
        gh, gw = module.weights(x)
        return (gh * gw).mean(1)[0], "g^h * g^w, mean over channels"
    if isinstance(module, SimAM):
        return module.weights(x).mean(1)[0], "sigmoid(1/e), mean over channels"
    if isinstance(module, CBAM):
        return module.spatial(x * module.channel(x))[0, 0], "spatial attention Ms"
    if isinstance(module, MSCAM):
        return module.weights(x).mean(1)[0], "M(x), mean over channels"
    if isinstance(module, AFF):  # also iAFF
        return module.weights(x).mean(1)[0], "weight of input 0, mean over channels"
    if isinstance(module, ASFF):
        return module.level_weights(x)[1][0, module.level], f"weight of its own level {module.level}"
    return output.float().mean(1)[0], "channel-weighted activation (mean over channels of the output)"




def letterbox(path: str | Path, imgsz: int) -> tuple[np.ndarray, torch.Tensor]:
    """(BGR uint8 image, 1x3xHxW float input) letterboxed to imgsz as Ultralytics predicts."""
    import cv2
    from ultralytics.data.augment import LetterBox

    img = cv2.imread(str(path))
    if img is None:
        raise FileNotFoundError(f"cannot read an image at {path}")
    boxed = LetterBox(new_shape=(imgsz, imgsz), auto=False)(image=img)
    x = torch.from_numpy(boxed[..., ::-1].copy()).permute(2, 0, 1).float().div(255)[None]
    return boxed, x


def overlay(image: np.ndarray, amap: torch.Tensor, alpha: float = 0.45) -> np.ndarray:
    import cv2

    a = amap.detach().float().cpu().numpy()
    a = (a - a.min()) / (a.max() - a.min() + 1e-12)
    a = cv2.resize(a, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    heat = cv2.applyColorMap((a * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def _label(img: np.ndarray, lines: list[str]) -> np.ndarray:
    import cv2

    out = img.copy()
    for k, text in enumerate(lines):
        y = 18 + 18 * k
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def visualize(model, image: str | Path, out: str | Path, imgsz: int = 640, tile: int = 320) -> list[Path]:
    """Write one overlay PNG per attention block and grid.png; returns the written paths (grid last)."""
    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    boxed, x = letterbox(image, imgsz)
    model = model.float().eval()
    layers = [m for m in getattr(model, "model", [])]
    kinds = tuple(spec.cls for spec in BLOCKS.values() if spec.kind in ("attention", "fusion"))
    targets = [(layer, m) for layer in layers for m in layer.modules() if isinstance(m, kinds)]
    if not targets:
        names = ", ".join(spec.name for spec in BLOCKS.values() if spec.cls in kinds)
        raise ValueError(f"the model has no attention block to visualise ({names})")
    captured = []
    hooks = [m.register_forward_hook(lambda mod, inp, o, layer=layer: captured.append((layer, mod, inp, o)))
             for layer, m in targets]  # fmt: skip
    try:
        with torch.no_grad():
            model(x)
            maps = [(layer, mod, *block_map(mod, inp, o)) for layer, mod, inp, o in captured]
    finally:
        for h in hooks:
            h.remove()
    written, tiles = [], []
    for layer, mod, amap, what in maps:
        h, w = amap.shape
        stride = imgsz // max(h, 1)
        picture = overlay(boxed, amap)
        name = f"layer{layer.i:02d}_{type(mod).__name__}.png"
        cv2.imwrite(str(out / name), picture)
        written.append(out / name)
        small = cv2.resize(picture, (tile, tile), interpolation=cv2.INTER_AREA)
        tiles.append(_label(small, [f"layer {layer.i} {type(mod).__name__} ({h}x{w}, stride {stride})", what]))
    cols = min(3, len(tiles))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)]
    cv2.imwrite(str(out / "grid.png"), np.vstack(rows))
    written.append(out / "grid.png")
    return written
