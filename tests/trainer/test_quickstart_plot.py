"""The quickstart's plot and length trend, from a run history of the trainer's shape."""

from __future__ import annotations

import pytest

from mindspeed_rl.quickstart.plot import length_trend, plot_run


def _history(iterations: int) -> list[dict[str, float]]:
    rows = [{"iteration": 0.0, "val/acc": 0.2, "val/prompts": 240.0}]
    for i in range(1, iterations + 1):
        row = {"iteration": float(i), "rollout/acc": 0.2 + 0.01 * i,
               "response_length/mean": 40.0 + i, "response_length/max": 100.0 + i}  # fmt: skip
        if i % 4 == 0:
            row["val/acc"] = 0.2 + 0.02 * i
        rows.append(row)
    return rows


def test_the_length_trend_averages_equal_spans():
    # means 41..48 in spans of two iterations
    assert length_trend(_history(8), parts=4) == [(2, 41.5), (4, 43.5), (6, 45.5), (8, 47.5)]
    # 5 iterations in 2 parts: 3 + 2
    assert length_trend(_history(5), parts=2) == [(3, 42.0), (5, 44.5)]
    assert length_trend(_history(0)) == []


def test_the_plot_is_a_png_with_both_panels_drawn(tmp_path):
    from matplotlib import image

    out = plot_run(_history(12), tmp_path / "logs" / "run.png", 128, 32, title="t")
    assert out == tmp_path / "logs" / "run.png" and not list(out.parent.glob("*.partial"))
    pixels = image.imread(out)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 400
    # something besides the white background in both halves (accuracy above, lengths below)
    half = pixels.shape[0] // 2
    for panel in (pixels[:half], pixels[half:]):
        assert (panel[..., :3] < 0.5).any(axis=-1).mean() > 0.01


def test_an_unwritable_place_fails_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(OSError):
        plot_run(_history(3), blocker / "run.png", 128)
