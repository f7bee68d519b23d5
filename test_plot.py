"""Tests for plot.py on synthetic run directories in the format that train.py writes.

Run: python -m pytest -q test_plot.py
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import plot

HEAD_DIM = 64
N_HEAD = 4
BLOCK_SIZE = 128


def write_run(
    root: Path,
    fraction: float,
    seed: int = 0,
    *,
    qk_norm: bool = False,
    parallel: bool = False,
    final_loss: float = 1.5,
    iters: int = 200,
    log_interval: int = 1,
    eval_interval: int = 20,
    summary: bool = True,
    status: str = "finished",
    spikes: tuple[int, ...] = (),
    long_context: dict[int, float] | None = None,
    noise: float = 0.05,
    end_event: bool | None = None,
) -> Path:
    """Write config.json, log.jsonl and (optionally) summary.json for one synthetic run.

    The val loss falls exponentially and reaches `final_loss` exactly at the last eval, so the
    run's final and best val loss both equal `final_loss`. The log ends with an "end" event when
    `end_event` is True. The default None writes one only together with summary.json, because a
    killed run has neither. Returns the run directory.
    """
    rope_dims = int(HEAD_DIM * fraction) // 2 * 2
    group = f"rope{fraction:.2f}"
    if qk_norm:
        group += "-qknorm"
    if parallel:
        group += "-par"
    name = f"{group}-s{seed}"
    run_dir = root / name
    run_dir.mkdir(parents=True)
    model = {"n_layer": 2, "n_head": N_HEAD, "n_embd": N_HEAD * HEAD_DIM, "block_size": BLOCK_SIZE,
             "rope_fraction": fraction, "qk_norm": qk_norm, "parallel_residual": parallel,
             "arch": "llama", "pos_emb": "rope"}
    # As in train.py, the CLI settings list every seed of the sweep, and the run's own seed and
    # dataset sit at the top level of config.json and the header.
    settings = {"rope_fraction": [fraction], "seed": [1337, seed], "max_iters": iters, "block_size": BLOCK_SIZE,
                "qk_norm": qk_norm}
    common = {"run_name": name, "group": group, "settings": settings, "seed": seed, "model": model,
              "rope_dims": rope_dims, "head_dim": HEAD_DIM, "dataset": "shakespeare_char", "versions": {},
              "device": "cpu", "dtype": "float32", "git_commit": None}
    (run_dir / "config.json").write_text(json.dumps(common))

    rng = np.random.default_rng(seed + int(fraction * 1000))
    tokens_per_iter = 8 * BLOCK_SIZE

    def val_at(i: int) -> float:
        return final_loss + 2.5 * (math.exp(-i / 40) - math.exp(-iters / 40))

    lines = [json.dumps({"event": "header", **common, "time": 0.0})]
    for i in range(0, iters + 1, log_interval):
        loss = val_at(i) - 0.05 + noise * rng.standard_normal()
        grad_norm = 1.0 + 0.2 * rng.random() + (5.0 if i in spikes else 0.0)
        lines.append(json.dumps({"event": "train", "iter": i, "loss": loss, "lr": 1e-3, "grad_norm": grad_norm,
                                 "tokens": i * tokens_per_iter, "ms": 10.0}))
        if i % eval_interval == 0:
            lines.append(json.dumps({"event": "eval", "iter": i, "tokens": i * tokens_per_iter,
                                     "train_loss": val_at(i) - 0.05, "val_loss": val_at(i)}))
        if i in spikes:
            lines.append(json.dumps({"event": "spike", "iter": i, "loss": loss + 1, "reference": loss}))
    for length, loss in (long_context or {}).items():
        lines.append(json.dumps({"event": "long_context", "block_size": length, "val_loss": loss}))
    if end_event or (end_event is None and summary):
        lines.append(json.dumps({"event": "end", "status": status, "iter": iters}))
    (run_dir / "log.jsonl").write_text("\n".join(lines) + "\n")

    if summary:
        cache = 2 * BLOCK_SIZE * rope_dims * 4
        data = {"run_name": name, "group": group, "rope_fraction": fraction, "rope_dims": rope_dims,
                "head_dim": HEAD_DIM, "n_head": N_HEAD, "n_layer": 2, "n_embd": N_HEAD * HEAD_DIM,
                "block_size": BLOCK_SIZE, "qk_norm": qk_norm, "parallel_residual": parallel, "arch": "llama",
                "pos_emb": "rope", "seed": seed, "dataset": "shakespeare_char", "final_val_loss": final_loss,
                "best_val_loss": final_loss, "rope_cache_bytes": cache,
                "full_rope_cache_bytes": 2 * BLOCK_SIZE * HEAD_DIM * 4, "cache_bytes_per_value": 4,
                "iters": iters, "tokens": iters * tokens_per_iter, "wall_seconds": 1.0, "status": status,
                "spikes": len(spikes), "long_context": {str(k): v for k, v in (long_context or {}).items()},
                "sample": "To be"}
        (run_dir / "summary.json").write_text(json.dumps(data))
    return run_dir


def write_sweep(root: Path) -> dict[str, list[float]]:
    """Write a small sweep: full RoPE and 10% with three seeds, NoPE, NoPE + QK-norm.

    Returns the final val losses per group name.
    """
    finals = {
        "rope1.00": [1.50, 1.52, 1.54],
        "rope0.10": [1.55, 1.58, 1.61],
        "rope0.00": [1.70],
        "rope0.00-qknorm": [1.62],
    }
    fractions = {"rope1.00": 1.0, "rope0.10": 0.1, "rope0.00": 0.0, "rope0.00-qknorm": 0.0}
    for group, losses in finals.items():
        for seed, loss in enumerate(losses):
            write_run(root, fractions[group], seed, qk_norm=group.endswith("qknorm"), final_loss=loss,
                      spikes=(50,) if group == "rope0.00" else (),
                      long_context={128: loss, 256: loss + 0.3, 512: loss + 0.8})
    return finals


def axes_by_label(fig) -> dict[str, matplotlib.axes.Axes]:
    return {ax.get_label(): ax for ax in fig.axes}


def row_for(rows: list[dict[str, str]], group: str) -> dict[str, str]:
    matches = [row for row in rows if row["run (group)"] == group]
    assert len(matches) == 1, f"expected one row for {group}, got {len(matches)}"
    return matches[0]


def plot_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "plot" and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------------------------------
# smooth()


def test_smooth_keeps_length_and_linear_series():
    values = np.arange(50, dtype=float) * 0.3 + 2.0
    smoothed = plot.smooth(values, 11)
    assert smoothed.shape == values.shape
    np.testing.assert_allclose(smoothed, values)


def test_smooth_step_edge_stays_in_place():
    step_at, window = 30, 9
    values = np.where(np.arange(60) < step_at, 0.0, 1.0)
    smoothed = plot.smooth(values, window)
    half = window // 2
    assert smoothed[step_at - 1] < 0.5
    assert smoothed[step_at] > 0.5
    assert np.all(smoothed[: step_at - half] == 0.0)
    assert np.all(smoothed[step_at + half:] == 1.0)
    np.testing.assert_allclose(smoothed[step_at - 1] + smoothed[step_at], 1.0)


def test_smooth_run_shorter_than_window():
    values = np.array([4.0, 3.0, 2.5, 2.0, 1.0])
    smoothed = plot.smooth(values, 101)
    assert smoothed.shape == values.shape
    assert smoothed[0] == 4.0
    assert smoothed[-1] == 1.0
    np.testing.assert_allclose(smoothed[2], values.mean())
    np.testing.assert_allclose(smoothed[1], values[:3].mean())


def test_smooth_tiny_and_disabled():
    assert plot.smooth([], 5).shape == (0,)
    np.testing.assert_array_equal(plot.smooth([2.0, 1.0], 5), [2.0, 1.0])
    values = np.array([1.0, 5.0, 2.0, 8.0])
    np.testing.assert_array_equal(plot.smooth(values, 1), values)


def test_smooth_masks_nonfinite_values():
    values = np.array([1.0, 1.0, np.nan, 1.0, np.inf, 1.0, 1.0])
    smoothed = plot.smooth(values, 3)
    assert np.isnan(smoothed[2])
    assert np.isnan(smoothed[4])
    np.testing.assert_allclose(smoothed[[0, 1, 3, 5, 6]], 1.0)


def test_smoothing_keeps_x_mixed_lengths(tmp_path):
    write_run(tmp_path, 1.0, iters=300)
    write_run(tmp_path, 0.1, iters=12)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    fig = plot.make_figure(groups, smooth_window=51)
    ax = axes_by_label(fig)["train_loss"]
    lines = ax.get_lines()
    assert len(lines) == 4
    for raw, smoothed in zip(lines[0::2], lines[1::2]):
        np.testing.assert_array_equal(raw.get_xdata(), smoothed.get_xdata())
        assert len(smoothed.get_ydata()) == len(raw.get_ydata())


# ---------------------------------------------------------------------------------------------
# Figure content


def test_figure_panels_and_line_counts(tmp_path):
    write_sweep(tmp_path)
    fig, _rows = plot.render([tmp_path], dpi=40)
    axes = axes_by_label(fig)
    assert set(axes) == {"val_loss", "train_loss", "gap", "final_loss", "stability", "long_context", "cache_size"}
    assert len(axes["val_loss"].get_lines()) == 8
    assert len(axes["train_loss"].get_lines()) == 16
    assert len(axes["stability"].get_lines()) == 8 + 1
    # Gap lines for 10%, NoPE and NoPE + QK-norm, plus the zero line.
    assert len(axes["gap"].get_lines()) == 3 + 1
    # One line per group, plus the dotted line at the training block_size.
    assert len(axes["long_context"].get_lines()) == 4 + 1


def test_figure_axis_labels(tmp_path):
    write_sweep(tmp_path)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    axes = axes_by_label(plot.make_figure(groups))
    assert axes["val_loss"].get_xlabel() == "iteration"
    assert axes["val_loss"].get_ylabel() == "validation loss"
    assert axes["train_loss"].get_ylabel() == "training loss"
    assert axes["stability"].get_ylabel() == "gradient norm"
    assert axes["stability"].get_yscale() == "log"
    assert axes["final_loss"].get_ylabel() == "final validation loss"
    assert axes["cache_size"].get_xscale() == "log"
    assert axes["cache_size"].get_yscale() == "log"

    tokens_axes = axes_by_label(plot.make_figure(groups, x_axis="tokens", logy=True))
    assert tokens_axes["val_loss"].get_xlabel() == "tokens"
    assert tokens_axes["train_loss"].get_xlabel() == "tokens"
    assert tokens_axes["val_loss"].get_yscale() == "log"


def test_tokens_axis_uses_token_counts(tmp_path):
    write_run(tmp_path, 1.0, iters=40)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    axes = axes_by_label(plot.make_figure(groups, x_axis="tokens"))
    xs = axes["val_loss"].get_lines()[0].get_xdata()
    np.testing.assert_array_equal(xs, [0, 20 * 8 * BLOCK_SIZE, 40 * 8 * BLOCK_SIZE])


def test_tokens_axis_warns_missing_counts(tmp_path, caplog):
    run_dir = write_run(tmp_path, 1.0, iters=40)
    log_path = run_dir / "log.jsonl"
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    for event in events:
        if event["event"] in ("train", "eval"):
            event.pop("tokens")
    log_path.write_text("\n".join(json.dumps(event) for event in events) + "\n")
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    caplog.set_level(logging.WARNING, logger="plot")
    axes = axes_by_label(plot.make_figure(groups, x_axis="tokens"))
    assert len(axes["val_loss"].get_lines()) == 0
    assert len(axes["train_loss"].get_lines()) == 0
    messages = plot_warnings(caplog)
    assert len(messages) == 1
    assert str(log_path) in messages[0]
    assert "some train and eval points have no token count" in messages[0]
    assert "Use --x iter" in messages[0]


def test_legend_labels_and_styles(tmp_path):
    write_sweep(tmp_path)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    fig = plot.make_figure(groups)
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert labels == ["NoPE", "NoPE + QK-norm", "10% (6/64 ch)", "100% (64/64 ch)"]

    styles = plot.run_styles(groups)
    by_label = {g.label: styles[g.key] for g in groups}
    assert by_label["NoPE"]["color"] == "black"
    assert by_label["NoPE + QK-norm"]["color"] == "black"
    assert by_label["NoPE + QK-norm"]["linestyle"] == "--"
    assert by_label["10% (6/64 ch)"]["linestyle"] == "-"
    assert by_label["10% (6/64 ch)"]["color"] != by_label["100% (64/64 ch)"]["color"]


def test_spike_markers_at_logged_iterations(tmp_path):
    write_run(tmp_path, 0.5, spikes=(30, 70))
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    ax = axes_by_label(plot.make_figure(groups))["stability"]
    markers = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert len(markers) == 1
    np.testing.assert_array_equal(markers[0].get_xdata(), [30, 70])


def test_gap_panel_values(tmp_path):
    write_run(tmp_path, 1.0, final_loss=1.5)
    write_run(tmp_path, 0.25, final_loss=1.6)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    series = plot.gap_series(groups)
    assert len(series) == 1
    group, iterations, gaps = series[0]
    assert group.label == "25% (16/64 ch)"
    np.testing.assert_array_equal(iterations, np.arange(0, 201, 20))
    np.testing.assert_allclose(gaps, 0.1)


def test_cache_panel_saving_factor_labels(tmp_path):
    write_sweep(tmp_path)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    ax = axes_by_label(plot.make_figure(groups))["cache_size"]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "6/64 ch: 10.7x smaller" in labels
    assert "64/64 ch: full RoPE" in labels
    assert "NoPE: no table (0 B)" in labels
    table_line = next(line for line in ax.get_lines() if line.get_label() == "6/64 ch: 10.7x smaller")
    xs, ys = table_line.get_xdata(), table_line.get_ydata()
    np.testing.assert_allclose(ys, 2 * xs * 6 * 4)


def test_panels_without_data_left_out(tmp_path):
    write_run(tmp_path, 0.1)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    labels = set(axes_by_label(plot.make_figure(groups)))
    assert "gap" not in labels
    assert "long_context" not in labels
    assert {"val_loss", "train_loss", "final_loss", "stability", "cache_size"} <= labels


def test_final_loss_panel_marks_nope_qknorm(tmp_path):
    write_sweep(tmp_path)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    ax = axes_by_label(plot.make_figure(groups))["final_loss"]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "NoPE + QK-norm" in legend
    assert "full RoPE level" in legend
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1
    np.testing.assert_allclose(np.asarray(stars[0].get_ydata(), dtype=float), [1.62])
    reference = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(reference) == 1
    np.testing.assert_allclose(np.asarray(reference[0].get_ydata(), dtype=float), [1.52, 1.52])


# ---------------------------------------------------------------------------------------------
# Table


def test_table_rows_mean_std_and_diff(tmp_path):
    finals = write_sweep(tmp_path)
    _fig, rows = plot.render([tmp_path], dpi=40)
    assert [row["run (group)"] for row in rows] == ["rope0.00", "rope0.00-qknorm", "rope0.10", "rope1.00"]

    full = np.mean(finals["rope1.00"])
    ten = row_for(rows, "rope0.10")
    assert ten["final val loss"] == f"{np.mean(finals['rope0.10']):.4f} ± {np.std(finals['rope0.10'], ddof=1):.4f}"
    assert ten["final val loss"] == "1.5800 ± 0.0300"
    assert ten["best val loss"] == "1.5800 ± 0.0300"
    assert ten["vs full RoPE"] == f"{100 * (1.58 - full) / full:+.2f}%"
    assert ten["vs full RoPE"] == "+3.95%"
    assert ten["rotated channels"] == "6/64"
    assert ten["fraction"] == "0.1"
    assert ten["seeds"] == "3"
    assert ten["cos/sin bytes"] == f"{2 * BLOCK_SIZE * 6 * 4:,}"
    assert ten["saving"] == "10.7x"
    assert ten["status"] == "3 finished"

    assert row_for(rows, "rope1.00")["vs full RoPE"] == "reference"
    assert row_for(rows, "rope1.00")["saving"] == "1x"
    nope = row_for(rows, "rope0.00")
    assert nope["final val loss"] == "1.7000"
    # NoPE has seed 0 only, so it is compared with full RoPE's seed 0 (1.50), not the mean.
    assert nope["vs full RoPE"] == f"{100 * (1.70 - 1.50) / 1.50:+.2f}%"
    assert nope["vs full RoPE"] == "+13.33%"
    assert nope["spikes"] == "1"
    assert nope["cos/sin bytes"] == "0"
    assert nope["saving"] == "n/a (no table)"
    assert row_for(rows, "rope0.00-qknorm")["vs full RoPE"] == f"{100 * (1.62 - 1.50) / 1.50:+.2f}%"


def test_table_diff_paired_by_seed(tmp_path):
    finals = write_sweep(tmp_path)
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    per_seed = np.array(finals["rope0.10"]) - np.array(finals["rope1.00"])
    assert row_for(rows, "rope1.00")["diff from full RoPE"] == "reference"
    assert row_for(rows, "rope0.10")["diff from full RoPE"] == f"{per_seed.mean():+.4f} ± {per_seed.std(ddof=1):.4f}"
    assert row_for(rows, "rope0.10")["diff from full RoPE"] == "+0.0600 ± 0.0100"
    assert row_for(rows, "rope0.00")["diff from full RoPE"] == "+0.2000"


def test_table_diff_unpaired_without_shared_seeds(tmp_path):
    for seed, loss in ((1, 1.50), (2, 1.60)):
        write_run(tmp_path, 1.0, seed, final_loss=loss)
    write_run(tmp_path, 0.1, 7, final_loss=1.65)
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    assert row_for(rows, "rope0.10")["diff from full RoPE"] == "+0.1000"
    assert row_for(rows, "rope0.10")["vs full RoPE"] == f"{100 * 0.10 / 1.55:+.2f}%"


def test_gap_paired_by_seed(tmp_path):
    write_run(tmp_path, 1.0, 1, final_loss=1.50, noise=0.0)
    write_run(tmp_path, 1.0, 2, final_loss=1.70, noise=0.0)
    write_run(tmp_path, 0.1, 1, final_loss=1.55, noise=0.0)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    [(group, iterations, gaps)] = plot.gap_series(groups)
    assert group.label.startswith("10%")
    assert iterations[-1] == 200
    # Against seed 1 only: 1.55 - 1.50, not 1.55 - the two-seed mean 1.60.
    np.testing.assert_allclose(gaps, 0.05, atol=1e-9)


def test_table_long_context_columns(tmp_path):
    finals = write_sweep(tmp_path)
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    columns = list(rows[0])
    lengths = ["val loss at 128 tokens", "val loss at 256 tokens", "val loss at 512 tokens"]
    assert columns[columns.index("diff from full RoPE") + 1:columns.index("spikes")] == lengths
    ten = row_for(rows, "rope0.10")
    at_512 = np.array(finals["rope0.10"]) + 0.8
    assert ten["val loss at 512 tokens"] == f"{at_512.mean():.4f} ± {at_512.std(ddof=1):.4f}"
    assert ten["val loss at 512 tokens"] == "2.3800 ± 0.0300"
    assert row_for(rows, "rope0.00")["val loss at 256 tokens"] == "2.0000"

    text = plot.format_table(rows)
    assert "| val loss at 256 tokens |" in text
    assert "Val loss at N tokens" in text


def test_table_long_context_missing_for_one_run(tmp_path):
    write_run(tmp_path, 1.0, 0, long_context={256: 1.9})
    write_run(tmp_path, 1.0, 1, long_context={256: 2.1})
    write_run(tmp_path, 0.0, 0)
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    assert row_for(rows, "rope1.00")["val loss at 256 tokens"] == "2.0000 ± 0.1414"
    assert row_for(rows, "rope0.00")["val loss at 256 tokens"] == "n/a"


def test_table_without_long_context_has_no_columns(tmp_path):
    write_run(tmp_path, 1.0)
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    assert list(rows[0]) == list(plot.TABLE_COLUMNS)
    assert "Val loss at N tokens" not in plot.format_table(rows)


def test_table_grad_norm_after_warmup(tmp_path):
    run_dir = write_run(tmp_path, 0.0, spikes=(50,))
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    median, maximum = (float(v) for v in row_for(rows, "rope0.00")["grad norm median / max"].split(" / "))
    assert 1.0 <= median <= 1.2
    assert maximum > 6.0

    # With 60 warmup steps, the step-50 spike and its gradient norm fall inside the warmup.
    config = json.loads((run_dir / "config.json").read_text())
    config["settings"]["warmup_iters"] = 60
    (run_dir / "config.json").write_text(json.dumps(config))
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    median, maximum = (float(v) for v in row_for(rows, "rope0.00")["grad norm median / max"].split(" / "))
    assert 1.0 <= median <= 1.2
    assert maximum <= 1.2


def test_table_diff_na_without_full_rope(tmp_path):
    write_run(tmp_path, 0.25)
    write_run(tmp_path / "other", 1.0, parallel=True)
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    assert row_for(rows, "rope0.25")["vs full RoPE"] == "n/a"
    assert row_for(rows, "rope1.00-par")["vs full RoPE"] == "reference"


def test_table_sorted_by_architecture_then_fraction(tmp_path):
    for fraction in (1.0, 0.25, 0.5):
        write_run(tmp_path, fraction, parallel=True)
        write_run(tmp_path, fraction)
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    assert [row["run (group)"] for row in rows] == [
        "rope0.25", "rope0.50", "rope1.00", "rope0.25-par", "rope0.50-par", "rope1.00-par"]


def test_markdown_file_and_stdout(tmp_path, capsys):
    write_sweep(tmp_path)
    assert plot.main([str(tmp_path), "--dpi", "40"]) == 0
    markdown = (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + 4
    assert table_lines[0].startswith("| run (group) | fraction | rotated channels | seeds |")
    assert "| rope0.10 | 0.1 | 6/64 | 3 | 1.5800 ± 0.0300 |" in markdown
    assert markdown in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Output formats


@pytest.mark.parametrize("name, magic", [("figure.svg", b"<?xml"), ("figure.pdf", b"%PDF"), ("figure.PNG", b"\x89PNG")])
def test_output_format_from_suffix(tmp_path, name, magic):
    write_run(tmp_path / "runs", 0.5)
    output = tmp_path / "figures" / name
    assert plot.main([str(tmp_path / "runs"), "-o", str(output), "--dpi", "40"]) == 0
    assert output.read_bytes().startswith(magic)
    assert output.with_suffix(".md").is_file()


def test_unsupported_suffix_rejected(tmp_path, capsys):
    write_run(tmp_path, 0.5)
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(tmp_path), "-o", str(tmp_path / "figure.jpg")])
    assert exit_info.value.code == 2
    assert "unsupported figure format '.jpg'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Damaged and incomplete runs


def test_truncated_and_garbage_lines_warn_once(tmp_path, caplog):
    run_dir = write_run(tmp_path, 0.5)
    log_path = run_dir / "log.jsonl"
    intact = log_path.read_bytes()
    log_path.write_bytes(intact + b"\x00\xff\xfe garbage\n" + b"not json\n" + b'{"event": "train", "iter": 201, "lo')
    caplog.set_level(logging.WARNING, logger="plot")
    run = plot.load_run(run_dir)
    messages = plot_warnings(caplog)
    assert len(messages) == 1
    assert str(log_path) in messages[0]
    assert "skipped 3 unreadable lines" in messages[0]
    assert run is not None
    assert len(run.train["iter"]) == 201


def test_nonfinite_values_masked_and_counted(tmp_path, caplog):
    run_dir = write_run(tmp_path, 0.5, summary=False)
    log_path = run_dir / "log.jsonl"
    lines = log_path.read_text().splitlines()
    lines.insert(5, '{"event": "train", "iter": 300, "loss": NaN, "lr": 0.001, "grad_norm": Infinity, "tokens": 1}')
    lines.insert(6, '{"event": "eval", "iter": 300, "tokens": 1, "train_loss": -Infinity, "val_loss": NaN}')
    log_path.write_text("\n".join(lines) + "\n")
    caplog.set_level(logging.WARNING, logger="plot")
    run = plot.load_run(run_dir)
    messages = plot_warnings(caplog)
    assert len(messages) == 1
    assert "masked 4 NaN/Infinity values" in messages[0]
    assert np.isnan(run.train["loss"][-1])
    assert np.isnan(run.evals["val_loss"][-1])
    assert math.isnan(run.final_val_loss)
    assert run.best_val_loss == pytest.approx(1.5)


def test_diverged_summary_counts_nan_once(tmp_path, caplog):
    run_dir = write_run(tmp_path, 0.1, status="diverged")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["final_val_loss"] = float("nan")
    summary_path.write_text(json.dumps(summary))
    write_run(tmp_path, 1.0)
    caplog.set_level(logging.WARNING, logger="plot")
    rows = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))
    messages = plot_warnings(caplog)
    assert messages == [f"{summary_path}: masked 1 NaN/Infinity value."]
    diverged = row_for(rows, "rope0.10")
    assert diverged["final val loss"] == "n/a"
    assert diverged["vs full RoPE"] == "n/a"
    assert diverged["status"] == "diverged"


def test_run_without_summary_uses_config_and_log(tmp_path):
    run_dir = write_run(tmp_path, 0.25, summary=False, iters=100)
    run = plot.load_run(run_dir)
    assert run.status == "incomplete"
    assert run.fraction == 0.25
    assert run.rope_dims == 16
    assert run.head_dim == HEAD_DIM
    assert run.final_val_loss == pytest.approx(1.5)
    rows = plot.table_rows(plot.aggregate([run]))
    assert rows[0]["status"] == "incomplete"
    assert rows[0]["final val loss"] == "1.5000"


def test_run_with_only_log_header(tmp_path):
    run_dir = write_run(tmp_path, 0.5, seed=3, summary=False)
    (run_dir / "config.json").unlink()
    run = plot.load_run(run_dir)
    assert run.fraction == 0.5
    assert run.rope_dims == 32
    assert run.block_size == BLOCK_SIZE
    assert run.seed == 3
    assert run.setup == ("shakespeare_char", 2, N_HEAD, N_HEAD * HEAD_DIM, BLOCK_SIZE)


def test_resume_drops_stale_iterations(tmp_path):
    run_dir = write_run(tmp_path, 0.5, iters=100, summary=False)
    log_path = run_dir / "log.jsonl"
    lines = log_path.read_text().splitlines()
    lines.append('{"event": "resume", "iter": 60}')
    lines.append('{"event": "train", "iter": 61, "loss": 9.0, "lr": 0.001, "grad_norm": 1.0, "tokens": 61}')
    log_path.write_text("\n".join(lines) + "\n")
    run = plot.load_run(run_dir)
    np.testing.assert_array_equal(run.train["iter"], np.arange(62))
    assert run.train["loss"][-1] == 9.0
    np.testing.assert_array_equal(run.evals["iter"], [0, 20, 40, 60])


def test_unusable_run_named_in_warning(tmp_path, caplog):
    write_run(tmp_path, 1.0)
    empty_run = tmp_path / "rope0.50-s0"
    empty_run.mkdir()
    (empty_run / "log.jsonl").write_bytes(b"")
    (tmp_path / "unrelated").mkdir()
    caplog.set_level(logging.WARNING, logger="plot")
    runs = plot.load_runs([tmp_path])
    assert [run.name for run in runs] == ["rope1.00-s0"]
    messages = plot_warnings(caplog)
    assert len(messages) == 1
    assert str(empty_run) in messages[0]
    assert "no usable data" in messages[0]


def test_exit_zero_with_some_bad_runs(tmp_path, capsys):
    write_run(tmp_path, 1.0)
    bad = tmp_path / "rope0.10-s0"
    bad.mkdir()
    (bad / "log.jsonl").write_bytes(b"\x00\x00\x00\x00")
    (bad / "config.json").write_text("{not json")
    assert plot.main([str(tmp_path), "--dpi", "40"]) == 0
    err = capsys.readouterr().err
    assert "rope0.10-s0/config.json: invalid JSON" in err
    assert "rope0.10-s0/log.jsonl: skipped 1 unreadable line" in err
    assert "rope0.10-s0: no usable data" in err


def test_exit_nonzero_without_data(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad" / "rope0.10-s0"
    bad.mkdir(parents=True)
    (bad / "log.jsonl").write_text('{"event": "train", "iter": 0, "loss": NaN}\n')
    missing = tmp_path / "missing"
    assert plot.main([str(empty), str(tmp_path / "bad"), str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"plot.py: error: no run with data found under {empty}, {tmp_path / 'bad'}, {missing}" in err
    assert f"{empty}: no run directories found" in err
    assert f"{missing}: not a directory" in err
    assert not (empty / "comparison.png").exists()


def test_seed_aggregation_with_incomplete_seed(tmp_path):
    write_run(tmp_path, 0.5, seed=0, final_loss=1.6)
    write_run(tmp_path, 0.5, seed=1, final_loss=1.7, summary=False)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    assert len(groups) == 1
    assert groups[0].final_mean == pytest.approx(1.6)
    assert math.isnan(groups[0].final_std)
    row = plot.table_rows(groups)[0]
    assert row["final val loss"] == "1.6000 (1 of 2 seeds)"
    assert row["status"] == "1 finished, 1 incomplete"


def test_seed_aggregation_all_incomplete(tmp_path):
    write_run(tmp_path, 0.5, seed=0, final_loss=1.6, summary=False)
    write_run(tmp_path, 0.5, seed=1, final_loss=1.7, summary=False)
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    assert groups[0].final_mean == pytest.approx(1.65)
    assert groups[0].final_std == pytest.approx(np.std([1.6, 1.7], ddof=1))
    assert plot.table_rows(groups)[0]["status"] == "2 incomplete"


def test_separate_setups_not_merged(tmp_path):
    write_run(tmp_path / "a", 0.5, seed=0)
    other = write_run(tmp_path / "b", 0.5, seed=1)
    summary = json.loads((other / "summary.json").read_text())
    summary["dataset"] = "fineweb"
    (other / "summary.json").write_text(json.dumps(summary))
    groups = plot.aggregate(plot.load_runs([tmp_path]))
    assert len(groups) == 2
    assert groups[0].label == "50% (32/64 ch) [fineweb, 2x256, block 128]"
    rows = plot.table_rows(groups)
    assert rows[0]["run (group)"] == "rope0.50 [fineweb, 2x256, block 128]"
    assert rows[1]["run (group)"] == "rope0.50 [shakespeare_char, 2x256, block 128]"


def test_nonfinite_seed_left_out_of_mean(tmp_path):
    for seed, loss in enumerate((1.6, 1.8, 1.7)):
        write_run(tmp_path, 0.5, seed=seed, final_loss=loss)
    summary_path = tmp_path / "rope0.50-s2" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["final_val_loss"] = float("inf")
    summary["status"] = "diverged"
    summary_path.write_text(json.dumps(summary))
    row = plot.table_rows(plot.aggregate(plot.load_runs([tmp_path])))[0]
    assert row["final val loss"] == f"1.7000 ± {np.std([1.6, 1.8], ddof=1):.4f} (2 of 3 seeds)"
    assert row["best val loss"] == "1.7000 ± 0.1000"
    assert row["status"] == "2 finished, 1 diverged"


def test_cos_sin_bytes_formula():
    assert plot.cos_sin_bytes(256, 6) == 2 * 256 * 6 * 4
    assert plot.cos_sin_bytes(256, 0) == 0
    np.testing.assert_array_equal(plot.cos_sin_bytes(np.array([1, 2]), 64, 2), [256, 512])


# ---------------------------------------------------------------------------------------------
# Display


def run_plot_in_subprocess(args: list[str], env_backend: str | None) -> subprocess.CompletedProcess[str]:
    """Run plot.main in a fresh interpreter with no display.

    The last line of its stdout is "pyplot" or "no pyplot", then the backend name.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    if env_backend:
        env["MPLBACKEND"] = env_backend
    code = ("import sys, matplotlib, plot; rc = plot.main(sys.argv[1:]); "
            "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'no pyplot', matplotlib.get_backend()); "
            "sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=Path(plot.__file__).parent, env=env,
                          capture_output=True, text=True, timeout=120)


def test_headless_without_show(tmp_path):
    write_run(tmp_path, 0.5, iters=20)
    result = run_plot_in_subprocess([str(tmp_path), "--dpi", "40"], env_backend=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].lower() == "no pyplot agg"
    assert (tmp_path / "comparison.png").is_file()


def test_show_uses_pyplot_and_still_saves(tmp_path):
    write_run(tmp_path, 0.5, iters=20)
    result = run_plot_in_subprocess([str(tmp_path), "--dpi", "40", "--show"], env_backend="Agg")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].lower() == "pyplot agg"
    assert (tmp_path / "comparison.png").is_file()


def test_long_context_starts_at_training_length(tmp_path):
    # train.py records only the longer lengths; the final val loss is the point at block_size.
    write_run(tmp_path, 1.0, final_loss=1.5, long_context={256: 1.9, 512: 2.4})
    fig, _rows = plot.render([tmp_path], dpi=40)
    curve = next(line for line in axes_by_label(fig)["long_context"].get_lines() if len(line.get_xdata()) > 2)
    assert list(curve.get_xdata()) == [128, 256, 512]
    assert list(curve.get_ydata()) == pytest.approx([1.5, 1.9, 2.4])


def test_architectures_get_distinct_styles(tmp_path):
    # Parallel-residual and GPT-2-style runs in one folder must not share a line style.
    write_run(tmp_path, 1.0)
    write_run(tmp_path, 1.0, parallel=True)
    write_run(tmp_path, 0.0, parallel=True, qk_norm=True)
    gpt2_dir = write_run(tmp_path, 0.0, seed=5)
    for name in ("summary.json", "config.json"):
        data = json.loads((gpt2_dir / name).read_text())
        target = data["model"] if name == "config.json" else data
        target["arch"], target["pos_emb"] = "gpt2", "learned"
        data["group"] = "rope0.00-gpt2-learnedpos"
        (gpt2_dir / name).write_text(json.dumps(data))

    groups = plot.aggregate(plot.load_runs([tmp_path]))
    styles = {g.first.arch + (g.first.qk_norm,): plot.run_styles(groups)[g.key]["linestyle"] for g in groups}
    assert len(styles) == 4
    assert styles[(False, False, False, False)] == "-"
    assert styles[(False, False, True, True)] == "-."
    assert styles[(False, False, True, False)] != styles[(True, True, False, False)]
