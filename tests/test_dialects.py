"""Community YAML rows read as their authors meant them, or refused in one line; never a silently different block.

The corpus (tests/data/community_rows.yaml) holds real rows from public "improved YOLO" repositories, each with its
repository, file, line, the rows around it and what that repository's own parser and class build. Each row is built
here in a model that gives it its input at the width it has in its file, at the file's first scale, and checked
against EXPECT: the block and hyper-parameters it must become (compared with the model its canonical row builds:
same state-dict keys, same outputs with the same weights), or the one-line refusal.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import yaml

from conftest import REPO, BIN, run, yolo_attn

from yolo_attn import patch, registry
from yolo_attn.registry import SAME, LayerError

CORPUS = yaml.safe_load((REPO / "tests" / "data" / "community_rows.yaml").read_text())
UNKNOWN = ("refused", r"unknown module name")  # a block yolo_attn does not have (yet)
NOT_COMPOSITE = ("refused", r"composites put a channel-preserving block after each bottleneck's second conv")


def R(pattern: str) -> tuple:
    return ("refused", pattern)


# What each row must become: (our block, the values it must get) or a refusal. Notes say where the row's own fork
# builds something else (a width landing on a hyper-parameter), which the reading corrects.
EXPECT = {
    "cbam-7-kendyle2702": R(r"\[7\] reads two ways: yolo_attn's CBAM \[reduction, kernel_size\] -> \[-1, 1, CBAM, "
                            r"\[\{reduction: 7\}\]\], or Ultralytics' CBAM\(c1, kernel_size\) -> \[-1, 1, CBAM, \[\]\]"),
    "cbam-128-kendyle2702-y12": ("CBAM", {}),  # the P2 width: its fork puts 128 on kernel_size (an assert fails)
    "cbam-empty-kendyle2702": ("CBAM", {}),
    "ca-32-kendyle2702": ("CA", {"reduction": 32}),
    "eca-3-kendyle2702": ("ECA", {"kernel_size": 3}),
    "ema-8-kendyle2702": ("EMA", {"factor": 8}),
    "gam-4-kendyle2702": ("GAM", {"reduction": 4}),
    "se-16-kendyle2702": ("SE", {"reduction": 16}),
    "simam-1e4-kendyle2702": ("SimAM", {"e_lambda": 1e-4}),
    "cablock-16-cvtree": ("CA", {"reduction": 16}),
    "seblock-16conv-cvtree": ("SE", {"reduction": 16}),
    "eca-empty-cvtree": ("ECA", {"kernel_size": None}),
    "simam-4-cvtree": R(r"\(SimAM\): e_lambda must be a number in \(0, 1\), got 4"),  # its fork: lambda 4, a flat gate
    "cpca-4-cvtree": ("CPCA", {"reduction": 4}),
    "cpca-2-rep3-cvtree": ("CPCA", {"reduction": 2}),
    "ema-8-cvtree": ("EMA", {"factor": 8}),
    "c2f_ema-256-yolodpc": ("C2f_EMA", {"c2": 256, "shortcut": False}),
    "c2f_dcnv2-512-yolodpc": ("C2f_DCN", {"c2": 512}),
    "c2f_iaff-256-yolodpc": NOT_COMPOSITE,  # iAFF fuses two inputs (this fork's replaces the shortcut add)
    "c2f_scconv-256-yolodpc": NOT_COMPOSITE,  # this fork's C2f_SCConv builds ScConv (CVPR 2023), EEML's SCConv (2020)
    "c2f_mlca-256-yolodpc": ("C2f_MLCA", {"c2": 256, "shortcut": True}),
    "c2f_irmb-256-yolodpc": ("C2f_iRMB", {"c2": 256}),
    "c2f_fasterblock-256-yolodpc": ("C2f_Faster", {"c2": 256}),  # alias: FasterNet blocks in C2f
    "acmix-empty-yolodpc": ("ACmix", {"c2": SAME}),  # a channel-preserving ACmix
    "ema-empty-yolodpc": ("EMA", {"factor": 32}),
    "mlca-empty-yolodpc": ("MLCA", {"local_size": 5}),
    "irmb-empty-yolodpc": ("iRMB", {"window_size": 7}),
    "carafe-empty-yolodpc": ("CARAFE", {"scale": 2}),
    # HS-FPN's channel attention under the name CA (another paper's block): alone the row is our Coordinate
    # Attention; its file does not build (its flag rows below are refused). README: name clashes.
    "ca-empty-hsfpn-yolodpc": ("CA", {}),
    "ca-4false-hsfpn-yolodpc": R(r"min_mid must be an integer >= 1, got False"),
    "ema-8-prsyolov8": ("EMA", {"factor": 8}),
    "scconv-empty-prsyolov8": ("ScConv", {"group_num": 4}),  # the paper code's default
    "irmb-1024-prsyolov8": ("iRMB", {}),  # the width checked and dropped
    "space_to_depth-1-prsyolov8": ("SPD", {"scale": 2}),
    "eca-empty-ycren993": ("ECA", {"kernel_size": None}),  # this copy fixes k = 3; ours is the paper's adaptive k
    "cbam-empty-ycren993": ("CBAM", {}),
    "coordatt-empty-iamsunday": ("CA", {}),
    "cbam-empty-iamsunday": ("CBAM", {}),
    "gam-empty-iamsunday": ("GAM", {}),
    "seattention-16-iamsunday": ("SE", {"reduction": 16}),
    "seattention-256-base-beiwei": ("SE", {"reduction": 16}),  # its fork puts the width on reduction: 1 hidden unit
    "ema_attention-256-rep3-beiwei": ("EMA", {"factor": 32}),
    "simam-1024-unresolved-beiwei": ("SimAM", {"e_lambda": 1e-4}),
    "dysample-2lp-beiwei": ("DySample", {"scale": 2, "style": "lp"}),  # its fork: in_channels 2 (fails)
    "tripletattention-empty-beiwei": ("TripletAttention", {}),  # its fork drops the spatial gate (c1 -> no_spatial)
    "coordatt-empty-beiwei": ("CA", {"reduction": 32}),  # this copy defaults to 8; ours is the paper's 32
    "irmb-empty-beiwei": ("iRMB", {}),
    "lska-23-beiwei": ("LSKA", {"kernel_size": 23}),
    "spdconv-128-beiwei": ("SPDConv", {"c2": 128, "k": 3}),  # this copy's conv defaults to 1x1
    "rfcbamconv-128-beiwei": ("RFCBAMConv", {"c2": 128, "k": 3, "s": 2}),
    "carafe-1024-3-2-beiwei": R(r"\(CARAFE\): scale must be at most 8, got 1024"),  # [c2, k, up]: not ours
    "bifpn_concat2-1-beiwei": ("BiFPN_Concat", {"mode": "concat"}),
    "coordatt-256-rep3-nidhogg": ("CA", {"reduction": 32}),  # its fork: reduction 256, an 8-channel bottleneck
    "seattention-1024-rep3-nidhogg": ("SE", {"reduction": 16}),  # its fork: reduction 1024, 0 hidden units
    "shuffleattention-16-8-nidhogg": R(r"got YAML args \[16, 8\]; expected \[groups=64\]"),
    "gam_attention-empty-nidhogg": ("GAM", {}),
    "c2f_ema-256-shiprs": ("C2f_EMA", {"c2": 256, "shortcut": True}),
    "c2f_pconv-128-shiprs": ("C2f_PConv", {"c2": 128}),  # its fork: PConv in place of cv2 (logged)
    "gsconv-256-3-2-shiprs": ("GSConv", {"c2": 256, "k": 3, "s": 2}),
    "spdconv-128-k3-shiprs": ("SPDConv", {"c2": 128, "k": 3}),
    "cbam-512-invincible": ("CBAM", {}),
    "ecaattention-256-invincible": ("ECA", {"kernel_size": None}),
    "gam-256-invincible": ("GAM", {"reduction": 4}),
    "skattention-1024-rep3-invincible": ("SKAttention", {"kernels": (1, 3, 5, 7), "reduction": 16}),
    "coordatt-1024-rep2-invincible": ("CA", {"reduction": 32}),  # its fork: reduction 1024
    "ca-empty-sunhan": ("CA", {}),
    "eca-empty-adaptive-sunhan": ("ECA", {"kernel_size": None}),
    "simam-empty-default-sunhan": ("SimAM", {}),
    "se-1024-rep2-sunhan": ("SE", {"reduction": 16}),
    "ema-empty-sunhan": ("EMA", {"factor": 32}),  # this copy defaults to 8; ours is the paper code's 32
    "cbam-256-default-054324": ("CBAM", {}),  # the n-scale width (at s this row is refused, as in its own fork)
    "cbam-256-base-na110": ("CBAM", {}),
    "cbam-1024-consume-gilangarmy": ("CBAM", {}),
    "cbam-512-rep3-base-zcosmicc": ("CBAM", {}),
    "cbam-1024-consume-sywhs": ("CBAM", {}),
    "tripletattention-empty-sywhs": ("TripletAttention", {"kernel_size": 7}),
    "c2f_tripletattention-256-sywhs": ("C2f_TripletAttention", {"c2": 256}),  # this copy swaps cv2 for the block
    "c2f_lsk-256-slayolo": UNKNOWN,
    "dysample-empty-slayolo": ("DySample", {"scale": 2, "style": "lp"}),
    "cbam-1024-consume-slayolo": ("CBAM", {}),
    "coordatt-empty-slayolo": ("CA", {}),
    "c2f_lska_attention-256-dlw": UNKNOWN,
    "dysample-empty-pl-dlw": ("DySample", {"style": "lp"}),  # this copy defaults to 'pl'; ours to the paper's lp
    "simam-256-lambda-dlw": ("SimAM", {"e_lambda": 1e-4}),  # its fork: lambda = 256
    "seattention-512-base-dlw": ("SE", {"reduction": 16}),
    "odconv-256-1-1-dlw": ("ODConv", {"c2": 256, "k": 1, "s": 1}),  # this copy defaults to one kernel; ours to 4
    "carafe-256-3-2-dlw": R(r"\(CARAFE\): scale must be at most 8, got 256"),
    "cbam-1024-base-c1c2-dlw": ("CBAM", {}),
    "vovgscsp-256-dlw": ("VoVGSCSP", {"c2": 256}),  # n inside VoVGSCSP, as the paper; its fork stacks copies
    "bifpn-empty-truongan": ("BiFPN_Concat", {"mode": "sum"}),  # BiFPN is the weighted sum
    "ema-1024-8-ignored-truongan": ("EMA", {"factor": 8}),  # its fork ignores both args: factor 32
    "simam-1024-consume-truongan": ("SimAM", {}),
    "cbam-1024-consume-truongan": ("CBAM", {}),
    "c2f_dcn-256-dingjiji1": ("C2f_DCN", {"c2": 256, "shortcut": True}),  # this copy deforms both convs
    "c2f_shuffleattention-256-dingjiji1": ("C2f_ShuffleAttention", {"c2": 256}),  # its fork: SA before the split
    "c2f_scconv-256-dingjiji1": ("C2f_ScConv", {"c2": 256}),  # its fork: ScConv in place of cv2 (logged)
    "psa-1024-yolov10-scuzyq": ("Ultralytics:PSA", {}),  # YOLOv10's PSA: Ultralytics' own, not polarized attention
    "skattention-1024-rep3-broken-scuzyq": ("SKAttention", {"kernels": (1, 3, 5, 7)}),  # its fork: n on kernels
    "ema_attention-256-factor-n-scuzyq": ("EMA", {"factor": 32}),  # its fork: n = 1 lands on factor
    "ca-1024-inp-oup-scuzyq": ("CA", {"reduction": 32}),
    "lska-11-rep3-scuzyq": ("LSKA", {"kernel_size": 11}),
    "mlca-empty-scuzyq": ("MLCA", {}),
    "bifpn_concat3-1-scuzyq": ("BiFPN_Concat", {"mode": "concat"}),
    "c2f_dcn-1024-scuzyq": ("C2f_DCN", {"c2": 1024, "shortcut": True}),  # this copy deforms both convs
    "c2f_lska_attention-256-diedao": UNKNOWN,
    "space_to_depth-1-diedao": ("SPD", {"scale": 2}),
    "iaff-1-fusion-xh92117": ("iAFF", {"c2": None}),  # Concat's [1] kept when iAFF replaced Concat
    "scse-512-xh92117": ("scSE", {}),
    "c3k2_wtconv-1024-true-xh92117": ("C3k2_WTConv", {"c2": 1024, "c3k": True}),  # its fork: in place of cv2
    "c3k2_ema-256-eeml": ("C3k2_EMA", {"c2": 256, "c3k": False, "e": 0.25}),
    "c3k2_scconv-1024-selfcal-eeml": NOT_COMPOSITE,
    "c3k2_scconv2023-1024-eeml": ("C3k2_ScConv", {"c2": 1024, "c3k": True}),  # its fork: in place of cv2
    "c3k2_pconv-512-eeml": ("C3k2_PConv", {"c2": 512, "c3k": False}),  # its fork: PConv for both convs
    "c3k2_dcnv2-1024-eeml": NOT_COMPOSITE,
    "c3k2_irmb-512-eeml": ("C3k2_iRMB", {"c2": 512, "c3k": True}),  # its fork: iRMB in place of the bottlenecks
    "c3k2_mlca-256-eeml": ("C3k2_MLCA", {"c2": 256, "e": 0.25}),
    "c3k2_faster_ema-256-eeml": UNKNOWN,
    "rfcaconv-256-3-2-eeml": ("RFCAConv", {"c2": 256, "k": 3, "s": 2}),
    "dysample-2lp-eeml": ("DySample", {"scale": 2, "style": "lp"}),
    "ema-1024-rep2-broken-eeml": ("EMA", {"factor": 32}),  # its fork: 1024 on factor (fails)
    "c3_faster_ema-256-mhlimarco": UNKNOWN,
    "c2f_faster-128-mhlimarco": ("C2f_Faster", {"c2": 128}),
    "spdconv-256-v5-mhlimarco": ("SPDConv", {"c2": 256}),
    "ca_hsfpn-8-false-eeml": UNKNOWN,
    "ela_hsfpn-false-eeml": UNKNOWN,
    "rfaconv-256-3-2-yolodpc": ("RFAConv", {"c2": 256, "k": 3, "s": 2}),
    "odconv2d-256-3-2-yolodpc": ("ODConv", {"c2": 256, "k": 3, "s": 2}),
    "bamblock-1024-xh92117": ("BAM", {}),  # its forks put 1024 on the reduction or the width
}  # fmt: skip


def _row(text: str) -> list:
    return yaml.safe_load(text.split("#")[0].strip().rstrip(","))


def _scale(entry: dict) -> dict:
    """The file's first scale as top-level keys of a model dict (what Ultralytics builds the row at)."""
    s = entry["scales_or_multiples"]
    m = re.match(r"\s*([nslmx]):\s*\[([^\]]+)\]", s)
    if m:
        d, w, mc = (float(x) for x in m.group(2).split(","))
        return {"scales": {m.group(1): [d, w, mc]}, "scale": m.group(1)}
    m = re.search(r"depth_multiple:\s*([\d.]+);\s*width_multiple:\s*([\d.]+)", s)
    if m:
        return {"depth_multiple": float(m.group(1)), "width_multiple": float(m.group(2))}
    return {}  # 'scales' written unindented: Ultralytics builds at full width


def model_dict(entry: dict, row: list) -> dict:
    """A model giving ``row`` its input(s) at the nominal width(s) they have in its file, at the file's scale."""
    w = entry["input_nominal_width"]
    widths = w if isinstance(w, list) else [w]
    backbone = [[-1, 1, "Conv", [widths[0], 3, 2]]] + [[0, 1, "Conv", [x, 1, 1]] for x in widths[1:]]
    f = list(range(len(widths))) if isinstance(row[0], list) else -1
    return {"nc": 80, **_scale(entry), "backbone": backbone + [[f, *row[1:]]], "head": []}


def build(d: dict):
    from ultralytics.nn.tasks import parse_model

    model, _ = parse_model(copy.deepcopy(d), ch=3, verbose=False)
    return model.eval()


def source(entry: dict) -> str:
    return f"{entry['repo']} {entry['path']}:{entry['line']}: {entry['row']}"


@pytest.mark.parametrize("entry", CORPUS, ids=[e["id"] for e in CORPUS])
def test_community_row(entry):
    expected = EXPECT[entry["id"]]
    row = _row(entry["row"])
    d = model_dict(entry, row)
    if expected[0] == "refused":
        with pytest.raises((LayerError, KeyError)) as e:
            build(d)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"yolo_attn: YAML layer {len(d['backbone']) - 1} ("), source(entry)
        assert re.search(expected[1], msg), f"{source(entry)}\n{msg}"
        return
    block, values = expected
    if block.startswith("Ultralytics:"):  # not ours: Ultralytics' own module, untouched
        assert type(build(d)[-1]).__name__ == block.split(":")[1], source(entry)
        return
    with patch.recording(keep_going=False) as rec:
        model = build(d)
    (layer, decision, _), = rec.rows
    assert decision.spec.name == block, source(entry)
    # a composite whose fork puts the block elsewhere in the bottleneck says, in its log line, which model it builds
    if entry["id"] in PLACED_ELSEWHERE:
        assert "build another model" in decision.conversion, source(entry)
    elif decision.spec.inner is None:
        assert "build another model" not in decision.conversion, source(entry)
    assert {k: decision.values[k] for k in values} == values, f"{source(entry)}: {decision.values}"
    built = model[-1]
    assert all(type(m) is decision.spec.cls for m in (built if isinstance(built, torch.nn.Sequential) else [built]))
    # the canonical row builds the same block: same state-dict keys, and with the same weights the same outputs
    canonical = yaml.safe_load(decision.canonical)
    assert canonical[2] == block, source(entry)
    d2 = {**d, "backbone": d["backbone"][:-1] + [[d["backbone"][-1][0], *canonical[1:]]]}
    other = build(d2)
    assert list(model.state_dict()) == list(other.state_dict()), source(entry)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    other.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64, generator=g)
    assert torch.equal(_forward(model, x), _forward(other, x)), source(entry)


def _forward(model, x):
    outs = []
    with torch.no_grad():
        for m in model:
            x = m([outs[j] for j in m.f] if isinstance(m.f, list) else (x if m.f == -1 else outs[m.f]))
            outs.append(x)
    return x


def test_the_corpus_is_real_and_covered():
    """At least 40 rows from at least 15 repositories, each with its source, and an expectation for every row."""
    assert len(CORPUS) >= 40 and len({e["repo"] for e in CORPUS}) >= 15
    assert set(EXPECT) == {e["id"] for e in CORPUS}
    for e in CORPUS:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", e["repo"]) and e["path"].endswith((".yaml", ".yml")) and e["line"]


# Rows read as meant whose own fork builds something else (a width landing on a reduction, a lambda, a kernel or a
# flag; a repeat count on a factor), from the corpus' `meant` field
FORK_DIFFERS = {"cbam-128-kendyle2702-y12", "seattention-256-base-beiwei", "tripletattention-empty-beiwei",
                "coordatt-256-rep3-nidhogg", "seattention-1024-rep3-nidhogg", "coordatt-1024-rep2-invincible",
                "simam-256-lambda-dlw", "seattention-512-base-dlw", "simam-1024-consume-truongan",
                "ema-1024-8-ignored-truongan", "ema_attention-256-factor-n-scuzyq"}  # fmt: skip

# Composites built with the block after each bottleneck's second conv where their fork puts it elsewhere (in place of
# a conv, before the split): built, never silently: the log line says so (registry.FORK_PLACEMENTS)
PLACED_ELSEWHERE = {"c2f_pconv-128-shiprs", "c2f_shuffleattention-256-dingjiji1", "c2f_scconv-256-dingjiji1",
                    "c3k2_wtconv-1024-true-xh92117", "c3k2_scconv2023-1024-eeml", "c3k2_pconv-512-eeml",
                    "c3k2_irmb-512-eeml"}  # fmt: skip


def corpus_counts() -> dict:
    """Rows read as meant / refused in one line, and why refused (the README quotes these)."""
    read = [e for e in CORPUS if EXPECT[e["id"]][0] != "refused" and e["id"] not in PLACED_ELSEWHERE]
    refused = [EXPECT[e["id"]][1] for e in CORPUS if EXPECT[e["id"]][0] == "refused"]
    return {"rows": len(CORPUS), "repos": len({e["repo"] for e in CORPUS}), "read": len(read),
            "elsewhere": len(PLACED_ELSEWHERE),
            "fork_differs": len(FORK_DIFFERS), "refused": len(refused), "unknown": refused.count(UNKNOWN[1]),
            "not_composite": refused.count(NOT_COMPOSITE[1])}  # fmt: skip


def test_readme_quotes_the_corpus_counts():
    c = corpus_counts()
    assert FORK_DIFFERS <= {e["id"] for e in CORPUS if EXPECT[e["id"]][0] != "refused"} - PLACED_ELSEWHERE
    assert PLACED_ELSEWHERE <= {e["id"] for e in CORPUS if EXPECT[e["id"]][0] != "refused"}
    text = " ".join((REPO / "README.md").read_text().split())
    assert (f"{c['rows']} rows from {c['repos']} public repositories" in text and f"{c['read']} are read as their "
            f"authors meant ({c['fork_differs']} of them are rows whose own fork builds something else" in text and
            f"{c['elsewhere']} are composites built with the block where yolo_attn puts it" in text and
            f"{c['refused']} are refused in one line: {c['unknown']} name blocks yolo_attn does not have, "
            f"{c['not_composite']} are composites of blocks that change widths, "
            f"{c['refused'] - c['unknown'] - c['not_composite']} have two readings or none" in text), c  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# The rules, one by one: both readings of the ambiguous, keywords, aliases, conversions logged once
# ----------------------------------------------------------------------------------------------------------------
STEM = [[-1, 1, "Conv", [1024, 3, 2]]]  # 256 channels at n, 1024 as written
N = {"scales": {"n": [0.33, 0.25, 1024]}, "scale": "n"}


def one(row, **extra) -> torch.nn.Module:
    return build({"nc": 80, **N, **extra, "backbone": STEM + [row], "head": []})[-1]


def test_both_readings_of_an_ambiguous_row_build_and_differ():
    with pytest.raises(LayerError, match=r"reads two ways"):
        one([-1, 1, "CBAM", [7]])
    ours, ultralytics = one([-1, 1, "CBAM", [{"reduction": 7}]]), one([-1, 1, "CBAM", [{"kernel_size": 7}]])
    assert ours.channel.mlp[0].out_channels == 256 // 7 and ultralytics.channel.mlp[0].out_channels == 256 // 16
    assert ours.spatial.conv.kernel_size == ultralytics.spatial.conv.kernel_size == (7, 7)
    # a width that is also a valid reduction: the input is 64 channels wide
    stem64 = [[-1, 1, "Conv", [256, 3, 2]]]  # 64 at n
    with pytest.raises(LayerError, match=r"\[64\] reads two ways: yolo_attn's SE \[reduction\] -> \[-1, 1, SE, "
                                         r"\[\{reduction: 64\}\]\], or a width first .* -> \[-1, 1, SE, \[\]\]"):
        build({"nc": 80, **N, "backbone": stem64 + [[-1, 1, "SE", [64]]], "head": []})


def test_keywords_name_every_argument_and_unknown_keys_list_the_valid_ones():
    m = one([-1, 1, "CBAM", [{"reduction": 8, "kernel_size": 3}]])
    assert m.channel.mlp[0].out_channels == 32 and m.spatial.conv.kernel_size == (3, 3)
    m = one([-1, 1, "CBAM", [8, {"kernel_size": 3}]])  # positional, then by name
    assert m.channel.mlp[0].out_channels == 32 and m.spatial.conv.kernel_size == (3, 3)
    with pytest.raises(LayerError, match=r"YAML layer 1 \(CBAM\): unknown argument 'kernel'; CBAM's arguments: "
                                         r"reduction, kernel_size$"):
        one([-1, 1, "CBAM", [{"kernel": 3}]])
    with pytest.raises(LayerError, match=r"reduction given twice"):
        one([-1, 1, "CBAM", [8, {"reduction": 4}]])
    with pytest.raises(LayerError, match=r"YAML layer 1 \(CBAM\): reduction must be at most 64, got 1024"):
        one([-1, 1, "CBAM", [{"reduction": 1024}]])  # a mapping means our names: never re-read as a width


@pytest.mark.parametrize("row, block, values", [
    ([-1, 1, "CoordAtt", []], "CA", {}),
    ([-1, 1, "CoordAttention", [16]], "CA", {"reduction": 16}),
    ([-1, 1, "SELayer", []], "SE", {}),
    ([-1, 1, "EfficientChannelAttention", [1, 2]], "ECA", {"b": 1, "gamma": 2}),
    ([-1, 1, "GlobalContext", []], "GCBlock", {}),
    ([-1, 1, "ContextBlock", []], "GCBlock", {}),
    ([-1, 1, "PolarizedSelfAttention", []], "PSA_p", {}),
    ([-1, 1, "SequentialPolarizedSelfAttention", []], "PSA_s", {}),
    ([-1, 1, "SPBlock", []], "StripPooling", {}),
    ([-1, 1, "CBAMBlock", [16, 7]], "CBAM", {"reduction": 16, "kernel_size": 7}),
    ([-1, 1, "simam_module", []], "SimAM", {}),
    ([-1, 1, "DCNv2", [256, 3, 1]], "DCN", {"c2": 256, "k": 3, "s": 1}),
    ([-1, 1, "DeformableConv2d", [256, 3, 2]], "DCN", {"c2": 256, "s": 2}),
    ([-1, 3, "C2f_CoordAtt", [256, True]], "C2f_CA", {"shortcut": True}),
])  # fmt: skip
def test_aliases_build_our_block(row, block, values):
    with patch.recording(keep_going=False) as rec:
        m = one(row)
    (_, decision, _), = rec.rows
    assert decision.spec.name == block and {k: decision.values[k] for k in values} == values
    assert type(m).__module__.startswith("yolo_attn.modules")  # our class: checkpoints store it
    assert f"{row[2]} is yolo_attn's {block}," in decision.conversion


def test_a_conversion_is_logged_once_per_model_with_the_canonical_row(tmp_path):
    import logging

    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import LOGGER

    text = (REPO / "model_yamls" / "yolov8-cbam.yaml").read_text().replace("CBAM, []", "CBAM, [256]", 1)  # after P3
    path = tmp_path / "yolov8n-community.yaml"
    path.write_text(text)
    lines = []
    h = logging.Handler()
    h.emit = lambda r: lines.append(r.getMessage())
    LOGGER.addHandler(h)
    try:
        DetectionModel(str(path), verbose=False)
        DetectionModel(str(path), verbose=False)  # the same model again: no second line
    finally:
        LOGGER.removeHandler(h)
    ours = [x for x in lines if x.startswith("yolo_attn: YAML layer")]
    assert len(ours) == 1 and "(CBAM): [256] read as a width first" in ours[0], lines
    assert ours[0].endswith("canonical row: [-1, 1, CBAM, []]") and "\n" not in ours[0]


def test_ultralytics_cbam_is_not_what_the_name_means():
    """CBAM in a YAML is the paper's block (shared MLP over average- and max-pooled descriptors), ours."""
    from yolo_attn.modules import CBAM

    assert type(one([-1, 1, "CBAM", []])) is CBAM


# ----------------------------------------------------------------------------------------------------------------
# yolo-attn check
# ----------------------------------------------------------------------------------------------------------------
COMMUNITY_YAML = """# rows from public community YAMLs (sources in tests/data/community_rows.yaml)
nc: 80
scales:
  n: [0.33, 0.25, 1024]
  s: [0.33, 0.50, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, SEAttention, [256]] # 5 seattention-256-base-beiwei
  - [-1, 1, Conv, [512, 3, 2]] # 6-P4/16
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]] # 8-P5/32
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]] # 10
  - [-1, 1, CBAM, [1024]] # 11 cbam-1024-consume-gilangarmy
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 7], 1, Concat, [1]]
  - [-1, 3, C2f, [512]] # 14
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 5], 1, Concat, [1]]
  - [-1, 3, C2f, [256]] # 17
  - [-1, 1, CoordAtt, []] # 18 coordatt-empty-iamsunday
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 14], 1, Concat, [1]]
  - [-1, 3, C2f, [512]] # 21
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 11], 1, Concat, [1]]
  - [-1, 3, C2f, [1024]] # 24
  - [[18, 21, 24], 1, Detect, [nc]]
"""


def test_check_reports_every_row_and_canonical_rebuilds_the_same_model(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    src = tmp_path / "yolov8-community.yaml"
    src.write_text(COMMUNITY_YAML)
    p = yolo_attn("check", src.name, cwd=tmp_path)
    out = p.stdout.splitlines()
    assert out[0] == ("yolov8-community.yaml (scales n, s): 3 rows of yolo_attn blocks or community names; 3 read "
                      "from another dialect, 0 refused")  # fmt: skip
    assert "layer 5   [-1, 1, SEAttention, [256]]  ->  [-1, 1, SE, []]" in out
    assert any(x.strip().startswith("SE(reduction=16); SEAttention is yolo_attn's SE") for x in out)
    assert "layer 18  [-1, 1, CoordAtt, []]  ->  [-1, 1, CA, []]" in out
    canonical = yolo_attn("check", src.name, "--canonical", cwd=tmp_path).stdout
    assert "SEAttention" not in canonical and "CoordAtt" not in canonical and "CBAM, [1024]" not in canonical
    assert canonical.splitlines()[0] == COMMUNITY_YAML.splitlines()[0]  # comments and layout kept
    (tmp_path / "yolov8-canonical.yaml").write_text(canonical)
    for scale in "ns":
        a = DetectionModel(str(tmp_path / f"yolov8{scale}-community.yaml"), verbose=False).eval()
        b = DetectionModel(str(tmp_path / f"yolov8{scale}-canonical.yaml"), verbose=False).eval()
        assert list(a.state_dict()) == list(b.state_dict())
        b.load_state_dict(a.state_dict())
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(a(x)[0], b(x)[0])


def test_check_refusals_exit_non_zero_from_another_directory(tmp_path):
    """Through the installed `yolo-attn` command: every refused row is named, at the scale where it fails."""
    src = tmp_path / "yolov8-mixed.yaml"
    src.write_text(COMMUNITY_YAML.replace("CBAM, [1024]", "CBAM, [7]").replace("CoordAtt, []", "SimAM, [4]"))
    other = tmp_path / "elsewhere"
    other.mkdir()
    p = run([BIN / "yolo-attn", "check", src], other, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "layer 11  [-1, 1, CBAM, [7]]  REFUSED at scale n: YAML layer 11 (CBAM): [7] reads two ways" in p.stdout
    assert "layer 18  [-1, 1, SimAM, [4]]  REFUSED at scale n:" in p.stdout
    assert p.stderr.strip() == f"yolo-attn: error: {src}: 2 row(s) refused (see above)"
    q = run([BIN / "yolo-attn", "check", src, "--canonical"], other, check=False)
    assert q.returncode == 1 and "REFUSED" in q.stdout  # no canonical YAML for a model that is refused


def test_list_shows_aliases_and_composites(tmp_path):
    import json

    rows = {r["name"]: r for r in json.loads(yolo_attn("list", "--json", cwd=tmp_path).stdout)}
    assert {"CoordAtt", "CoordAttention", "CABlock"} <= set(rows["CA"]["aliases"])
    assert rows["CA"]["composites"] == ["C2f_CA", "C3k2_CA"] and rows["SPDConv"]["composites"] == []
    assert all(registry.lookup(a)[0].name == n for n, r in rows.items() for a in r["aliases"])
    text = yolo_attn("list", cwd=tmp_path).stdout
    assert "community names: CoordAtt, CoordAttention, CABlock" in text


def test_argument_tables_follow_the_constructors():
    """Each block's argument table names its constructor's parameters in order (after the widths and repeats the
    parser fills in), and every default is valid in its own range: the table is what the block takes."""
    import inspect

    for name, spec in registry.BLOCKS.items():
        params = list(inspect.signature(spec.cls).parameters.values())
        skip = {registry.same_width: 1, registry.space_to_depth_width: 1, registry.conv_width: 2,
                registry.conv_width_repeat: 3, registry.fused_width: 1, registry.fused_width_or_equal: 1,
                registry.upsample_width: 1, registry.concat_width: 1}[spec.rule]  # fmt: skip
        taken = [p.name for p in params[skip:]]
        ours = [a.name for a in spec.args if a.name != "c2" or spec.rule in (registry.fused_width,
                                                                             registry.fused_width_or_equal)]  # fmt: skip
        if spec.rule in (registry.conv_width, registry.conv_width_repeat):
            ours = [a.name for a in spec.args[1:]]
        assert taken[: len(ours)] == ours, (name, taken, ours)
        for a in spec.args:
            if a.default is not registry.REQUIRED:
                assert a.problem(a.default, 256) is None, (name, a.name)
