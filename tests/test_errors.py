"""Bad YAML rows give one clear error naming the layer index, the block, what it got and what it expects."""

from __future__ import annotations

import copy
import re

import pytest

from conftest import BIN, run

from yolo_attn import releases
from yolo_attn.registry import LayerError

STEM = [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [64, 3, 1]]]  # widths 16, 32, 32


def parse(*rows):
    from ultralytics.nn.tasks import parse_model

    d = {"nc": 80, "scales": {"s": [0.33, 0.5, 1024]}, "scale": "s", "backbone": copy.deepcopy(STEM) + list(rows)}
    d["head"] = []
    return parse_model(d, ch=3, verbose=False)


@pytest.mark.parametrize(
    "row, pattern",
    [
        ([-1, 1, "CA", [16, 8, 3]], r"YAML layer 3 \(CA\): got YAML args \[16, 8, 3\]; expected \[reduction=32, min_mid=8\]"),
        ([-1, 1, "CA", [0]], r"YAML layer 3 \(CA\): reduction must be an integer >= 1, got 0"),
        ([-1, 1, "CBAM", [16, 6]], r"YAML layer 3 \(CBAM\): kernel_size must be odd"),
        ([-1, 1, "DCN", [64, "abc"]], r"YAML layer 3 \(DCN\): k must be an integer >= 1, got 'abc'"),
        ([-1, 1, "SPDConv", []], r"YAML layer 3 \(SPDConv\): needs the output width as its first argument"),
        ([-1, 1, "SPDConv", [64, 3, 1]], r"YAML layer 3 \(SPDConv\): s \(the space-to-depth scale\) must be an integer >= 2"),
        ([-1, 1, "SPD", [1]], r"YAML layer 3 \(SPD\): scale must be an integer >= 2, got 1"),
        ([[-1, 1], 1, "CA", []], r"YAML layer 3 \(CA\): takes one input; 'from' must be a single layer index"),
        ([[-1, 0, 1], 1, "AFF", [64]], r"YAML layer 3 \(AFF\): expects exactly 2 inputs in 'from', got 3"),
        ([-1, 1, "AFF", [64]], r"YAML layer 3 \(AFF\): fuses several inputs; 'from' must be a list"),
        ([[-1, 0], 1, "AFF", []], r"YAML layer 3 \(AFF\): inputs have different widths \[32, 16\]; give an output width"),
        ([[-1, 1], 2, "AFF", [64]], r"YAML layer 3 \(AFF\): repeats must be 1"),
        ([[-1, 7], 1, "AFF", [64]], r"YAML layer 3 \(AFF\): 'from' index 7 does not name an earlier layer"),
        ([[-1], 1, "ASFF", [64, 0]], r"YAML layer 3 \(ASFF\): expects at least 2 inputs in 'from', got 1"),
        ([[0, 1, 2], 1, "ASFF", [64, 5]], r"YAML layer 3 \(ASFF\): level must be an index into 'from' \(0..2\), got 5"),
        ([[0, 1, 2], 1, "ASFF", []], r"YAML layer 3 \(ASFF\): needs the output width as its first argument"),
    ],
)
def test_bad_rows_name_layer_block_and_expectation(row, pattern):
    with pytest.raises(LayerError, match=pattern) as e:
        parse(row)
    assert e.value.index == 3
    assert "Traceback" not in str(e.value)


@pytest.mark.parametrize("typo, suggestion", [("CBMA", "CBAM"), ("simam", "SimAM"), ("C2F", "C2f"), ("AFFF", "AFF")])
def test_unknown_name_suggests_the_closest(typo, suggestion):
    with pytest.raises(KeyError) as e:  # still a KeyError, as Ultralytics raised, and a LayerError
        parse([-1, 1, typo, []])
    assert isinstance(e.value, LayerError)
    msg = str(e.value)
    assert msg.startswith(f"yolo_attn: YAML layer 3 ({typo}): unknown module name. did you mean")
    assert re.search(rf"did you mean [^?]*\b{suggestion}\b", msg), msg


def test_shape_contract_errors_name_the_layer():
    """ASFF fed levels that are not a pyramid: found when Ultralytics runs its stride probe at build time."""
    from ultralytics.nn.tasks import DetectionModel

    d = {
        "nc": 80,
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 1]]],
        "head": [[[0, 1, 2], 1, "ASFF", [32, 1]], [[3], 1, "Detect", ["nc"]]],
    }
    with pytest.raises(ValueError, match=r"layer 3 \(ASFF\): input 2 has shape .* ASFF inputs must be a pyramid"):
        DetectionModel(d, verbose=False)


def test_errors_of_ultralytics_own_modules_are_untouched():
    with pytest.raises(TypeError) as e:
        parse([-1, 1, "Conv", [64, 3, 2, None, 1, 1, True, "extra"]])
    assert not isinstance(e.value, LayerError)


@pytest.mark.slow
def test_cli_shows_the_clear_error(tmp_path, sample_data):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "nc: 80\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, CBMA, []]\nhead:\n  - [[-1], 1, Detect, [nc]]\n"
    )
    p = run([BIN / "yolo", "train", f"model={bad}", f"data={sample_data}", "epochs=1", "device=cpu"], tmp_path, check=False)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "yolo_attn: YAML layer 1 (CBMA): unknown module name. did you mean CBAM" in out


@pytest.mark.parametrize("row, since", [([-1, 1, "A2C2f", [64, True, 4]], "8.3.78"), ([-1, 1, "Segment26", [80, 32, 64]], "8.4.0")])  # fmt: skip
def test_a_module_newer_than_the_installed_release_names_the_release_it_needs(row, since):
    from ultralytics import __version__

    if releases.at_least(since):
        pytest.skip(f"Ultralytics {__version__} has {row[2]}")
    with pytest.raises(LayerError) as e:
        parse(row)
    assert str(e.value).splitlines() == [
        f"yolo_attn: YAML layer 3 ({row[2]}): the {'YOLO12' if row[2] == 'A2C2f' else 'YOLO26'} module {row[2]} needs "
        f"ultralytics>={since}; the installed Ultralytics is {__version__}: pip install 'ultralytics>={since},<8.5'"
    ]  # fmt: skip


def test_a_yolo26_yaml_on_a_release_without_its_head_keys_is_refused():
    """yolo26.yaml's `end2end` and `reg_max` are read by parse_model from 8.4.0 on; an older release would build
    another model from the same file. The check is driven by what the installed parse_model reads."""
    from ultralytics import __version__
    from ultralytics.nn.tasks import DetectionModel

    import yolo_attn.patch as patch

    yaml = {"nc": 80, "end2end": True, "reg_max": 1, "scales": {"n": [0.5, 0.25, 1024]}, "scale": "n",
            "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "CBAM", []]],
            "head": [[[-1], 1, "Detect", ["nc"]]]}  # fmt: skip
    if releases.at_least("8.4.0"):
        m = DetectionModel(copy.deepcopy(yaml), verbose=False)
        assert m.model[-1].reg_max == 1  # the key reached the head
    else:
        with pytest.raises(releases.UltralyticsTooOld, match=r"^yolo_attn: model YAML key 'end2end' \(YOLO26's end-to-end "
                           rf"head\) needs ultralytics>=8\.4\.0; the installed Ultralytics is {re.escape(__version__)}"):  # fmt: skip
            DetectionModel(copy.deepcopy(yaml), verbose=False)
    # the same rule, as an older parse_model (one that reads neither key) would apply it
    hooks = patch.ParserHooks(reads=frozenset())
    with pytest.raises(releases.UltralyticsTooOld, match="model YAML key 'end2end'"):
        hooks.built(None, yaml)
    patch.ParserHooks(reads=frozenset(releases.NEWER_YAML_KEYS)).built(None, yaml)  # a release that reads them: fine
