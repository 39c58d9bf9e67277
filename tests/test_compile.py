"""torch.compile on whole models (issue 5, part 1): no graph break inside our blocks where Ultralytics' compile=True
puts them. Block-level checks (every case, train and eval, zero breaks, compiled = eager) are in test_blocks.py.

The training forward traces as one graph; in the fused inference model (what val and predict compile) each of our
layers, with the arguments and inputs it gets in that model, compiles as one graph (fullgraph) and matches eager.
Default: the training half on the model with every registered block (test_every_block.py's YAML), about 15 s.
--compile: both halves on that model and on every ready config (about 10 min in all). In eval the
layers are compiled one by one because Ultralytics' own inference head breaks the graph (a data-dependent anchor
computation in Detect), which is not ours to fix.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import perturb_constants, ready_config_names, trained_bn
from test_every_block import every_block_yaml


CONFIGS = [c.replace("-", "n-", 1) for c in ready_config_names()]


def _ours(model) -> list[tuple[int, torch.nn.Module]]:
    return [(i, m) for i, m in enumerate(model.model) if type(m).__module__.startswith("yolo_attn.modules")]


def _build(cfg):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(copy.deepcopy(cfg), nc=3 if isinstance(cfg, dict) else 80, verbose=False)
    perturb_constants(model, 0.05, torch.Generator().manual_seed(0))
    return trained_bn(model)


def _check(cfg, imgsz: int, layers: bool = True) -> None:
    import torch._dynamo

    model = _build(cfg)
    x = torch.rand(2, 3, imgsz, imgsz)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model.train())(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons  # the training forward is one graph
    if not layers:
        return

    fused = model.eval().fuse(verbose=False)
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])) for i, m in _ours(fused)]
    with torch.no_grad():
        fused(x[:1])
    for h in hooks:
        h.remove()
    assert inputs, "no yolo_attn layer in the model"
    for i, m in _ours(fused):
        torch._dynamo.reset()
        compiled = torch.compile(m, backend="aot_eager", fullgraph=True)  # fullgraph: any break is an error
        with torch.no_grad():
            ye, yc = m(inputs[i]), compiled(inputs[i])
        err = (yc - ye).abs().max().item()
        assert err <= 1e-5 * max(1.0, ye.abs().max().item()), f"layer {i} {type(m).__name__}: compiled differs by {err}"


@pytest.mark.parametrize("layers", [False, pytest.param(True, marks=pytest.mark.compile)])
def test_every_block_model_compiles(layers):
    _check(every_block_yaml(), 64, layers=layers)  # eval of every block: test_blocks.py (one case each, not in a model)


@pytest.mark.compile
@pytest.mark.parametrize("config", CONFIGS)
def test_ready_config_compiles(config):
    _check(config, 96)
