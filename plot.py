"""Draw the partial-RoPE comparison figure and table from run directories written by train.py.

Run it on one or more output folders of train.py:

    python plot.py out/shakespeare_char                  # writes out/shakespeare_char/comparison.png
    python plot.py out/a out/b -o figs/sweep.pdf --x tokens --logy
    python plot.py out/shakespeare_char --show           # also opens a window

Each RUNS_DIR is searched recursively for run directories, which contain log.jsonl, config.json
or summary.json. Runs that differ only by seed form one group. The output is a single figure with
one panel per view that has data (panels without data are left out):

    validation loss       val loss against iteration or tokens, one curve per run
    training loss         centred moving average, the raw curve faint behind it
    gap to full RoPE      val loss minus the full-RoPE val loss (seed means) at equal iterations
    final val loss        against rope fraction, mean and std over seeds, full RoPE as a line
    gradient norm         against iteration, with the loss spikes that train.py logged
    long-context loss     val loss against evaluation length, where runs recorded it
    cos/sin table size    bytes against context length per rotated-channel count, log axes

The Markdown table (one row per group) is written next to the figure, with the same name and the
suffix .md, and printed to stdout. Runs that crashed or are still running (no summary.json) show
what their log holds. Unreadable log lines and NaN/Infinity values are skipped or masked, with one
warning per file. The exit status is 0 when at least one run has data, 1 when none has, and 2
for invalid arguments.
The figure legend is placed with loc="outside ...", which needs matplotlib 3.7 or newer.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullLocator

log = logging.getLogger("plot")

RUN_FILES = ("log.jsonl", "config.json", "summary.json")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
DEFAULT_BYTES_PER_VALUE = 4  # model.py builds the cos/sin table in float32

# ----------------------------------------------------------------------------------------------
# Data records


@dataclass
class Run:
    """One loaded run directory.

    Settings come from summary.json, config.json or the log header, and the series from log.jsonl
    with non-finite values as NaN. Unknown numbers are NaN and unknown settings None.
    """

    path: Path
    name: str
    group: str
    fraction: float
    rope_dims: int | None
    head_dim: int | None
    qk_norm: bool
    parallel: bool
    gpt2: bool
    learned_pos: bool
    seed: int | None
    setup: tuple  # (dataset, n_layer, n_head, n_embd, block_size): runs must match to be compared
    block_size: int | None
    warmup_iters: int | None
    bytes_per_value: int
    cache_bytes: float  # cos/sin table bytes at block_size
    status: str
    final_val_loss: float
    best_val_loss: float
    spikes: int
    train: dict[str, np.ndarray]  # iter, tokens, loss, grad_norm
    evals: dict[str, np.ndarray]  # iter, tokens, val_loss
    spike_iters: np.ndarray
    long_context: dict[int, float]
    has_summary: bool

    @property
    def arch(self) -> tuple[bool, bool, bool]:
        """Architecture flags (gpt2 block, learned positions, parallel residual)."""
        return (self.gpt2, self.learned_pos, self.parallel)


@dataclass
class Group:
    """Runs that differ only by seed, with the seed statistics of their final and best val loss.

    The statistics cover the runs with a summary.json and a finite value. Runs without a summary
    (still going or killed, so their last eval is from an earlier iteration) count only when no
    run of the group has a summary. Std is the sample standard deviation (ddof 1), NaN for one run.
    """

    key: tuple
    label: str
    runs: list[Run]
    final_mean: float = math.nan
    final_std: float = math.nan
    final_count: int = 0
    best_mean: float = math.nan
    best_std: float = math.nan
    best_count: int = 0
    reference: Group | None = field(default=None, repr=False)
    diff: float = math.nan  # mean final val loss minus the reference's, over paired seeds (see aggregate)
    diff_std: float = math.nan  # sample std of the per-seed differences, NaN for fewer than two pairs
    diff_pct: float = math.nan

    @property
    def counted_runs(self) -> list[Run]:
        """The runs that the final and best val loss statistics may use (see the class doc)."""
        return [r for r in self.runs if r.has_summary] or self.runs

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def fraction(self) -> float:
        return self.first.fraction

    @property
    def is_full_rope(self) -> bool:
        run = self.first
        return run.rope_dims is not None and run.head_dim is not None and run.rope_dims == run.head_dim

    @property
    def is_nope(self) -> bool:
        return self.first.rope_dims == 0 or self.first.fraction == 0


class NoRunDataError(RuntimeError):
    """Raised when no run directory under the searched folders has usable data."""


# ----------------------------------------------------------------------------------------------
# Reading run directories


def find_run_dirs(roots: Sequence[str | Path]) -> list[Path]:
    """Return every directory under `roots` (the roots included) that contains a run file.

    Args:
        roots: folders to search recursively. A missing folder is reported in a warning.
    """
    found: set[Path] = set()
    for root in map(Path, roots):
        if not root.is_dir():
            log.warning("%s: not a directory, skipped. Pass the --out_dir that train.py wrote to.", root)
            continue
        candidates = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
        runs_here = [d for d in candidates if any((d / name).is_file() for name in RUN_FILES)]
        if not runs_here:
            log.warning("%s: no run directories found (none contains %s).", root, ", ".join(RUN_FILES))
        found.update(runs_here)
    return sorted(found)


def _count_nonfinite(value: Any) -> int:
    """Count NaN and infinite floats anywhere inside a parsed JSON value."""
    if isinstance(value, float):
        return 0 if math.isfinite(value) else 1
    if isinstance(value, dict):
        return sum(_count_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_nonfinite(v) for v in value)
    return 0


def _read_json_file(path: Path) -> dict | None:
    """Parse a JSON object file, or warn and return None when it is missing or invalid.

    NaN/Infinity values are kept (callers mask them) and counted in one warning.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("%s: invalid JSON (%s), ignored. The other run files are used instead.", path, error)
        return None
    if not isinstance(data, dict):
        log.warning("%s: invalid content, expected a JSON object but found %s. The file is ignored.", path,
                    type(data).__name__)
        return None
    nonfinite = _count_nonfinite(data)
    if nonfinite:
        log.warning("%s: masked %d NaN/Infinity value%s.", path, nonfinite, "" if nonfinite == 1 else "s")
    return data


def _number(value: Any) -> float:
    """Return `value` as a finite float, or NaN for non-finite and non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _integer(value: Any) -> int | None:
    """Return `value` as an int when it is a whole finite number, else None."""
    number = _number(value)
    if math.isnan(number) or number != int(number):
        return None
    return int(number)


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    return None


def _first(*values: Any) -> Any:
    """Return the first value that is not None."""
    return next((v for v in values if v is not None), None)


def _keep_last_per_iter(events: list[dict]) -> list[dict]:
    """Sort events by iteration, keeping the last event logged for each iteration."""
    by_iter = {event["iter"]: event for event in events}
    return [by_iter[i] for i in sorted(by_iter)]


def _empty_log() -> dict[str, Any]:
    return {"header": None, "end": None, "train": [], "eval": [], "spike": [], "long_context": {}}


def read_log(path: Path) -> dict[str, Any]:
    """Read log.jsonl into lists of events by kind, skipping lines that cannot be used.

    A line is skipped when it is not UTF-8, not a JSON object, or lacks the integer field its
    event needs (iter, or block_size for long_context). This covers a truncated last line and
    garbage bytes. NaN/Infinity values stay in the events as NaN. A "resume" event at iteration k
    drops the train, eval and spike events logged before it with iter > k, because the resumed
    run logs those iterations again. It also drops an earlier "end" event. One warning per file
    counts the skipped lines and the NaN/Infinity values.

    Args:
        path: the log.jsonl file.

    Returns:
        {"header": dict | None, "end": dict | None, "train": [...], "eval": [...],
        "spike": [...], "long_context": {block_size: val_loss}}, events sorted by iter.
    """
    events = _empty_log()
    skipped = 0
    nonfinite = 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            skipped += 1
            continue
        if not isinstance(event, dict):
            skipped += 1
            continue
        nonfinite += _count_nonfinite(event)
        kind = event.get("event")
        if kind == "header":
            events["header"] = event
        elif kind == "end":
            events["end"] = event
        elif kind in ("train", "eval", "spike", "resume"):
            iteration = _integer(event.get("iter"))
            if iteration is None:
                skipped += 1
                continue
            event["iter"] = iteration
            if kind == "resume":
                for name in ("train", "eval", "spike"):
                    events[name] = [e for e in events[name] if e["iter"] <= iteration]
                events["end"] = None
            else:
                events[kind].append(event)
        elif kind == "long_context":
            length = _integer(event.get("block_size"))
            if length is None:
                skipped += 1
                continue
            events["long_context"][length] = _number(event.get("val_loss"))

    for name in ("train", "eval", "spike"):
        events[name] = _keep_last_per_iter(events[name])
    if skipped or nonfinite:
        parts = []
        if skipped:
            parts.append(f"skipped {skipped} unreadable line{'s' if skipped != 1 else ''} (truncated or not JSON)")
        if nonfinite:
            parts.append(f"masked {nonfinite} NaN/Infinity value{'s' if nonfinite != 1 else ''}")
        log.warning("%s: %s.", path, " and ".join(parts))
    return events


def _series(events: list[dict], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Stack event fields into float arrays (NaN where missing or non-finite)."""
    return {name: np.array([_number(e.get(name)) for e in events], dtype=float) for name in fields}


def _fraction_from_name(name: str) -> float:
    match = re.match(r"rope(\d+(?:\.\d+)?)", name)
    return float(match.group(1)) if match else math.nan


def _dict_field(source: dict, key: str) -> dict:
    value = source.get(key)
    return value if isinstance(value, dict) else {}


def _run_settings(path: Path, summary: dict, config: dict, header: dict) -> dict[str, Any]:
    """Collect a run's settings as Run fields.

    Each value comes from the first source that has it. The order is summary.json, the model
    settings in config.json, then in the log header, then the CLI settings in config.json and in
    the header. Run name, group, seed, dataset, rope_dims and head_dim are read from the top level
    of summary.json, config.json and the header first. The run name (for example
    rope0.10-qknorm-s1) or the directory name is the last source.
    """
    config_model, config_settings = _dict_field(config, "model"), _dict_field(config, "settings")
    header_model, header_settings = _dict_field(header, "model"), _dict_field(header, "settings")

    def setting(key: str) -> Any:
        for source in (summary, config_model, header_model, config_settings, header_settings):
            if source.get(key) is not None:
                return source[key]
        return None

    def top_level(key: str) -> Any:
        return _first(summary.get(key), config.get(key), header.get(key))

    name = str(_first(top_level("run_name"), path.name))
    name_tokens = name.split("-")
    group = str(_first(top_level("group"), re.sub(r"-s\d+$", "", name)))

    n_head, n_embd = _integer(setting("n_head")), _integer(setting("n_embd"))
    head_dim = _integer(top_level("head_dim"))
    if head_dim is None and n_head and n_embd:
        head_dim = n_embd // n_head

    # The CLI setting rope_fraction is the list of the whole sweep, so it counts only when it
    # contains a single value.
    cli_fraction = config_settings.get("rope_fraction")
    if isinstance(cli_fraction, list) and len(cli_fraction) == 1:
        cli_fraction = cli_fraction[0]
    fraction = math.nan
    for candidate in (summary.get("rope_fraction"), config_model.get("rope_fraction"),
                      header_model.get("rope_fraction"), cli_fraction):
        if not math.isnan(_number(candidate)):
            fraction = _number(candidate)
            break
    if math.isnan(fraction):
        fraction = _fraction_from_name(name)

    rope_dims = _integer(top_level("rope_dims"))
    if rope_dims is None and head_dim is not None and not math.isnan(fraction):
        rope_dims = int(head_dim * fraction) // 2 * 2  # model.py's rule: round down to an even count
    if math.isnan(fraction) and rope_dims is not None and head_dim:
        fraction = rope_dims / head_dim

    arch, pos_emb = setting("arch"), setting("pos_emb")
    seed_match = re.search(r"-s(\d+)$", name)
    block_size = _integer(setting("block_size"))
    bytes_per_value = _integer(summary.get("cache_bytes_per_value")) or DEFAULT_BYTES_PER_VALUE
    cache_bytes = _number(summary.get("rope_cache_bytes"))
    if math.isnan(cache_bytes) and block_size is not None and rope_dims is not None:
        cache_bytes = float(cos_sin_bytes(block_size, rope_dims, bytes_per_value))

    return {
        "name": name,
        "group": group,
        "fraction": fraction,
        "rope_dims": rope_dims,
        "head_dim": head_dim,
        "qk_norm": bool(_first(_boolean(setting("qk_norm")), "qknorm" in name_tokens)),
        "parallel": bool(_first(_boolean(setting("parallel_residual")), "par" in name_tokens)),
        "gpt2": arch == "gpt2" if arch is not None else "gpt2" in name_tokens,
        "learned_pos": pos_emb == "learned" if pos_emb is not None else "learnedpos" in name_tokens,
        "seed": _first(_integer(top_level("seed")), _integer(setting("seed")),
                       int(seed_match.group(1)) if seed_match else None),
        "setup": (_first(top_level("dataset"), setting("dataset")), _integer(setting("n_layer")), n_head, n_embd,
                  block_size),
        "block_size": block_size,
        "warmup_iters": _integer(setting("warmup_iters")),
        "bytes_per_value": bytes_per_value,
        "cache_bytes": cache_bytes,
    }


def _run_results(summary: dict, events: dict[str, Any], evals: dict[str, np.ndarray]) -> dict[str, Any]:
    """Collect status, final and best val loss, spike count and long-context losses as Run fields.

    Without summary.json the run is still going or was killed, so the values come from the log.
    The final val loss is the last eval's (NaN if it was not finite) and the best is the lowest
    finite one. The status comes from an "end" event, else it is "incomplete".
    """
    finite_val = evals["val_loss"][np.isfinite(evals["val_loss"])]
    if summary:
        status = str(summary.get("status", "finished"))
        final_val = _number(summary.get("final_val_loss"))
        best_val = _number(summary.get("best_val_loss"))
    else:
        status = str(events["end"].get("status", "incomplete")) if events["end"] else "incomplete"
        final_val = float(evals["val_loss"][-1]) if len(evals["val_loss"]) else math.nan
        best_val = float(finite_val.min()) if len(finite_val) else math.nan

    spikes = _integer(summary.get("spikes"))
    long_context = dict(events["long_context"])
    summary_long = summary.get("long_context")
    if isinstance(summary_long, dict):
        for key, value in summary_long.items():
            if str(key).isdigit():
                long_context[int(key)] = _number(value)

    return {
        "status": status,
        "final_val_loss": final_val,
        "best_val_loss": best_val,
        "spikes": spikes if spikes is not None else len(events["spike"]),
        "spike_iters": np.array([e["iter"] for e in events["spike"]], dtype=float),
        "long_context": dict(sorted(long_context.items())),
    }


def load_run(path: Path) -> Run | None:
    """Load one run directory, or warn and return None when it has no usable data.

    Usable data is a summary.json or at least one finite train or eval loss.

    Args:
        path: a directory that contains log.jsonl, config.json or summary.json.
    """
    summary = _read_json_file(path / "summary.json") or {}
    config = _read_json_file(path / "config.json") or {}
    log_path = path / "log.jsonl"
    events = read_log(log_path) if log_path.is_file() else _empty_log()

    train = _series(events["train"], ("iter", "tokens", "loss", "grad_norm"))
    evals = _series(events["eval"], ("iter", "tokens", "val_loss"))
    _fill_eval_tokens(evals, train)

    has_curves = bool(np.isfinite(train["loss"]).any() or np.isfinite(evals["val_loss"]).any())
    if not summary and not has_curves:
        log.warning(
            "%s: no usable data, skipped. There is no summary.json and log.jsonl has no finite train "
            "or eval loss. If the run is still starting, plot again after its first eval.",
            path,
        )
        return None

    return Run(
        path=path,
        **_run_settings(path, summary, config, events["header"] or {}),
        **_run_results(summary, events, evals),
        train=train,
        evals=evals,
        has_summary=bool(summary),
    )


def _fill_eval_tokens(evals: dict[str, np.ndarray], train: dict[str, np.ndarray]) -> None:
    """Fill missing eval token counts by interpolating the train events' tokens over iterations."""
    missing = ~np.isfinite(evals["tokens"])
    known = np.isfinite(train["tokens"])
    if missing.any() and known.sum() >= 2:
        evals["tokens"][missing] = np.interp(evals["iter"][missing], train["iter"][known], train["tokens"][known],
                                             left=np.nan, right=np.nan)


def load_runs(roots: Sequence[str | Path]) -> list[Run]:
    """Find and load every run under `roots`, skipping (with a warning) runs without data.

    Args:
        roots: folders to search recursively.

    Raises:
        NoRunDataError: no run has usable data. The message names the folders searched.
    """
    runs = [run for run in map(load_run, find_run_dirs(roots)) if run is not None]
    if not runs:
        searched = ", ".join(str(r) for r in roots)
        raise NoRunDataError(
            f"no run with data found under {searched}. A run directory is written by train.py "
            f"and contains {', '.join(RUN_FILES)}. Pass the --out_dir of a training run."
        )
    return runs


# ----------------------------------------------------------------------------------------------
# Aggregation


def cos_sin_bytes(context_length: int | np.ndarray, rope_dims: int, bytes_per_value: int = DEFAULT_BYTES_PER_VALUE):
    """Return the size of the cos and sin tables: 2 * context_length * rope_dims * bytes_per_value.

    Args:
        context_length: positions covered by the table (block_size), a number or an array.
        rope_dims: rotated channels per head (0 for NoPE, which has no table).
        bytes_per_value: 4 for the float32 table that model.py builds.
    """
    return 2 * context_length * rope_dims * bytes_per_value


def _mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Return the mean, sample std (ddof 1, NaN for fewer than two) and count of the finite values."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if len(finite) == 0:
        return math.nan, math.nan, 0
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return float(finite.mean()), std, len(finite)


def _fraction_label(fraction: float, rope_dims: int | None, head_dim: int | None) -> str:
    if math.isnan(fraction):
        return "unknown fraction"
    if fraction == 0 or rope_dims == 0:
        return "NoPE"
    text = f"{fraction * 100:.3g}%"
    if rope_dims is not None and head_dim is not None:
        text += f" ({rope_dims}/{head_dim} ch)"
    return text


def _arch_text(run: Run) -> str:
    """Name the run's non-default architecture flags, or return "" for the default block."""
    parts = []
    if run.parallel:
        parts.append("parallel residual")
    if run.gpt2:
        parts.append("GPT-2 block")
    if run.learned_pos:
        parts.append("learned positions")
    return ", ".join(parts)


def group_label(run: Run) -> str:
    """Return the legend label of a run's group, e.g. "10% (6/64 ch)" or "NoPE + QK-norm"."""
    label = _fraction_label(run.fraction, run.rope_dims, run.head_dim)
    if run.qk_norm:
        label += " + QK-norm"
    if _arch_text(run):
        label += f", {_arch_text(run)}"
    return label


def _sort_value(value: Any) -> tuple:
    """Order None last, numbers by value and anything else by its text."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def _setup_text(setup: tuple) -> str:
    dataset, n_layer, _n_head, n_embd, block_size = setup
    parts = [str(dataset)] if dataset else []
    if n_layer and n_embd:
        parts.append(f"{n_layer}x{n_embd}")
    if block_size:
        parts.append(f"block {block_size}")
    return ", ".join(parts) or "unknown setup"


def aggregate(runs: Sequence[Run]) -> list[Group]:
    """Group runs that differ only by seed, compute seed statistics and the diff from full RoPE.

    A group's reference is the full-RoPE group (rope_dims == head_dim, no QK-norm) with the same
    setup and architecture flags. Runs of one sweep with the same seed start from the same weights
    and see the same batches, so the difference is paired by seed when the two groups share seeds:
    diff is the mean over shared seeds of (final val loss - the reference's with that seed), and
    diff_pct = 100 * diff / the reference's mean over those seeds. Without shared seeds both use
    the means over all seeds. Both are NaN without a reference. Groups are sorted by setup,
    architecture, fraction, QK-norm.

    Args:
        runs: loaded runs, in any order.
    """
    by_key: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        key = (run.setup, run.arch, run.fraction, run.rope_dims, run.qk_norm, run.group)
        by_key[key].append(run)

    def sort_key(key: tuple) -> tuple:
        setup, arch, fraction, _rope_dims, qk_norm, group = key
        return (tuple(_sort_value(v) for v in setup), arch, math.inf if math.isnan(fraction) else fraction,
                qk_norm, group)

    several_setups = len({key[0] for key in by_key}) > 1
    groups = []
    for key in sorted(by_key, key=sort_key):
        members = sorted(by_key[key], key=lambda r: (_sort_value(r.seed), r.name))
        label = group_label(members[0])
        if several_setups:
            label += f" [{_setup_text(members[0].setup)}]"
        group = Group(key=key, label=label, runs=members)
        group.final_mean, group.final_std, group.final_count = _mean_std(r.final_val_loss for r in group.counted_runs)
        group.best_mean, group.best_std, group.best_count = _mean_std(r.best_val_loss for r in group.counted_runs)
        groups.append(group)

    references = {(g.first.setup, g.first.arch): g for g in groups if g.is_full_rope and not g.first.qk_norm}
    for group in groups:
        reference = references.get((group.first.setup, group.first.arch))
        group.reference = reference
        if reference is not None:
            _set_diff(group, reference)
    return groups


def _final_by_seed(group: Group) -> dict[Any, float]:
    return {r.seed: r.final_val_loss for r in group.counted_runs
            if r.seed is not None and math.isfinite(r.final_val_loss)}


def _set_diff(group: Group, reference: Group) -> None:
    """Set group.diff, diff_std and diff_pct against the reference group (see aggregate)."""
    ours, theirs = _final_by_seed(group), _final_by_seed(reference)
    shared = [seed for seed in ours if seed in theirs]
    if shared:
        diffs = [ours[seed] - theirs[seed] for seed in shared]
        group.diff, group.diff_std, _ = _mean_std(diffs)
        base = float(np.mean([theirs[seed] for seed in shared]))
    else:
        group.diff = group.final_mean - reference.final_mean
        base = reference.final_mean
    if math.isfinite(group.diff) and base > 0:
        group.diff_pct = 100.0 * group.diff / base


# ----------------------------------------------------------------------------------------------
# Smoothing


def smooth(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Smooth a series with a centred moving average that never moves a point along x.

    Point i averages the finite values at i - h .. i + h with h = min(window // 2, i, n - 1 - i).
    The window shrinks symmetrically near both ends, so a finite linear series is returned
    unchanged and a step stays between the same two points. The first and last points are not
    smoothed. A series shorter than the window uses the largest symmetric window that fits. Points
    count equally whatever their x spacing. Non-finite inputs are left out of the averages and stay
    NaN in the output.

    Args:
        values: the series, one value per logged step.
        window: points in the full window. An even window acts as the next odd one; 1 or less
            returns a copy.

    Returns:
        A float array of the same length as `values`.
    """
    data = np.asarray(values, dtype=float)
    result = data.copy()
    n = len(data)
    half = int(window) // 2
    if n < 3 or half < 1:
        return result

    finite = np.isfinite(data)
    index = np.arange(n)
    halves = np.minimum(half, np.minimum(index, n - 1 - index))
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, data, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    low, high = index - halves, index + halves + 1
    window_counts = counts[high] - counts[low]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = (sums[high] - sums[low]) / window_counts
    result[~finite] = np.nan
    return result


# ----------------------------------------------------------------------------------------------
# Drawing


def run_styles(groups: Sequence[Group]) -> dict[tuple, dict[str, Any]]:
    """Return the line style of each group, keyed by Group.key.

    Colour follows the rank of the rope fraction on the viridis colormap, from dark (few rotated
    channels) to light (full RoPE). NoPE is black. QK-norm runs are dashed. Runs with other
    architecture flags are dotted, with a dot pattern of their own for each distinct set of flags
    (parallel residual, GPT-2 style, ...), and QK-norm with other flags is dash-dotted.
    """
    fractions = sorted({g.fraction for g in groups if not g.is_nope and not math.isnan(g.fraction)})
    colormap = matplotlib.colormaps["viridis"]
    positions = np.linspace(0.12, 0.85, len(fractions)) if len(fractions) > 1 else [0.45]
    colour_of = {f: colormap(p) for f, p in zip(fractions, positions)}

    dot_patterns = [":", (0, (1, 1, 4, 1)), (0, (1, 4)), (0, (3, 1, 1, 1, 1, 1))]
    other_archs = sorted({g.first.arch for g in groups if any(g.first.arch)}, key=repr)
    dots_of = {arch: dot_patterns[i % len(dot_patterns)] for i, arch in enumerate(other_archs)}

    styles = {}
    for group in groups:
        run = group.first
        if group.is_nope:
            colour = "black"
        else:
            colour = colour_of.get(group.fraction, "grey")
        if not any(run.arch):
            linestyle = "--" if run.qk_norm else "-"
        else:
            linestyle = "-." if run.qk_norm else dots_of[run.arch]
        styles[group.key] = {"color": colour, "linestyle": linestyle}
    return styles


def _set_x_axis(ax: Axes, x_axis: str) -> None:
    """Label the x axis of a loss panel, with token counts as 100k, 1M and so on."""
    if x_axis == "tokens":
        ax.set_xlabel("tokens")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    else:
        ax.set_xlabel("iteration")


def _warn_missing_tokens(groups: Sequence[Group]) -> None:
    """Warn about each run whose loss points have no token counts, which --x tokens leaves out."""
    for group in groups:
        for run in group.runs:
            kinds = []
            for kind, series, loss in (("train", run.train, "loss"), ("eval", run.evals, "val_loss")):
                has_loss = np.isfinite(series[loss])
                if not np.isfinite(series["tokens"][has_loss]).all():
                    kinds.append(kind)
            if kinds:
                log.warning("%s: some %s points have no token count and are left out of the loss panels. "
                            "Use --x iter to plot them.", run.path / "log.jsonl", " and ".join(kinds))


def _finite_xy(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop points whose x is unknown; keep NaN y values so the line breaks there."""
    keep = np.isfinite(xs)
    return xs[keep], ys[keep]


def _set_log_y(ax: Axes) -> None:
    """Log-scale the y axis with plain numbers.

    Minor ticks are labelled only when the axis spans at most one decade: all of them below half a
    decade, else those with leading digit 2, 3 or 5.
    """
    def minor_label(value: float, _position: Any) -> str:
        low, high = ax.get_ylim()
        if low <= 0 or value <= 0:
            return ""
        decades = math.log10(high / low)
        leading_digit = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        if decades <= 0.5 or (decades <= 1 and leading_digit in (2, 3, 5)):
            return f"{value:g}"
        return ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor_label))


def _set_loss_scale(ax: Axes, logy: bool) -> None:
    if logy:
        _set_log_y(ax)


def has_val_loss(groups: Sequence[Group]) -> bool:
    return any(np.isfinite(r.evals["val_loss"]).any() for g in groups for r in g.runs)


def draw_val_loss(ax: Axes, groups: Sequence[Group], styles: dict, x_axis: str = "iter", logy: bool = False) -> None:
    """Draw one validation-loss curve per run against iteration or tokens.

    Args:
        ax: the panel.
        groups: aggregated groups; every run with a finite val loss becomes one line.
        styles: run_styles(groups).
        x_axis: "iter" or "tokens".
        logy: log-scale y axis.
    """
    for group in groups:
        for run in group.runs:
            xs, ys = _finite_xy(run.evals[x_axis], run.evals["val_loss"])
            if not np.isfinite(ys).any():
                continue
            marker = "o" if len(xs) <= 40 else None
            ax.plot(xs, ys, marker=marker, markersize=3, linewidth=1.4, **styles[group.key])
    _set_x_axis(ax, x_axis)
    ax.set_ylabel("validation loss")
    ax.set_title("Validation loss")
    _set_loss_scale(ax, logy)


def has_train_loss(groups: Sequence[Group]) -> bool:
    return any(np.isfinite(r.train["loss"]).any() for g in groups for r in g.runs)


def draw_train_loss(ax: Axes, groups: Sequence[Group], styles: dict, x_axis: str = "iter",
                    smooth_window: int = 21, logy: bool = False) -> None:
    """Draw each run's training loss: the raw curve faint, the smoothed curve on top.

    The y range ignores the highest 0.5% of raw values, so a spike or the first iterations
    do not flatten the rest. Lines that leave the range are clipped at the edge.

    Args:
        ax: the panel.
        groups: aggregated groups; each run with a finite train loss adds two lines.
        styles: run_styles(groups).
        x_axis: "iter" or "tokens".
        smooth_window: centred moving-average window in logged points (see smooth()).
        logy: log-scale y axis.
    """
    raw_values = []
    for group in groups:
        for run in group.runs:
            xs, ys = _finite_xy(run.train[x_axis], run.train["loss"])
            if not np.isfinite(ys).any():
                continue
            style = styles[group.key]
            ax.plot(xs, ys, color=style["color"], linewidth=0.6, alpha=0.25)
            ax.plot(xs, smooth(ys, smooth_window), linewidth=1.4, **style)
            raw_values.append(ys[np.isfinite(ys)])
    values = np.concatenate(raw_values) if raw_values else np.array([])
    if len(values) > 1:
        low, high = float(values.min()), float(np.percentile(values, 99.5))
        if high > low:
            margin = 0.05 * (high - low)
            ax.set_ylim(low - margin if not logy else low / 1.05, high + margin)
    _set_x_axis(ax, x_axis)
    ax.set_ylabel("training loss")
    window_text = f"centred mean of {smooth_window // 2 * 2 + 1} points" if smooth_window > 1 else "not smoothed"
    ax.set_title(f"Training loss ({window_text}; raw faint)")
    _set_loss_scale(ax, logy)


def gap_series(groups: Sequence[Group]) -> list[tuple[Group, np.ndarray, np.ndarray]]:
    """Return (group, iterations, gap) for every group that has a full-RoPE reference.

    The gap at an iteration is the group's mean val loss over seeds minus the reference's mean
    val loss, at the iterations where both have a finite value. As in aggregate(), the reference
    mean covers only the seeds that the group has, when the two share any. The reference itself
    is left out.

    Args:
        groups: output of aggregate().
    """
    def mean_by_iter(runs: Sequence[Run]) -> dict[int, float]:
        values: dict[int, list[float]] = defaultdict(list)
        for run in runs:
            for iteration, loss in zip(run.evals["iter"], run.evals["val_loss"]):
                if math.isfinite(loss):
                    values[int(iteration)].append(float(loss))
        return {i: float(np.mean(v)) for i, v in values.items()}

    series = []
    for group in groups:
        if group.reference is None or group.reference is group:
            continue
        seeds = {run.seed for run in group.runs}
        reference_runs = [run for run in group.reference.runs if run.seed in seeds] or group.reference.runs
        ours, reference = mean_by_iter(group.runs), mean_by_iter(reference_runs)
        shared = sorted(set(ours) & set(reference))
        if shared:
            gaps = np.array([ours[i] - reference[i] for i in shared])
            series.append((group, np.array(shared, dtype=float), gaps))
    return series


def has_gap(groups: Sequence[Group]) -> bool:
    return bool(gap_series(groups))


def draw_gap(ax: Axes, groups: Sequence[Group], styles: dict) -> None:
    """Draw each group's val loss minus the full-RoPE val loss against iteration (seed means)."""
    for group, iterations, gaps in gap_series(groups):
        marker = "o" if len(iterations) <= 40 else None
        ax.plot(iterations, gaps, marker=marker, markersize=3, linewidth=1.4, **styles[group.key])
    ax.axhline(0.0, color="grey", linewidth=1.0, zorder=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val loss − full-RoPE val loss")
    ax.set_title("Gap to full RoPE (mean over seeds; above 0 = worse)")


def has_grad_norm(groups: Sequence[Group]) -> bool:
    return any((r.train["grad_norm"] > 0).any() for g in groups for r in g.runs)


def draw_stability(ax: Axes, groups: Sequence[Group], styles: dict) -> None:
    """Draw each run's gradient norm (before clipping) against iteration and mark loss spikes.

    A spike marker sits on the run's gradient-norm curve at the spike's iteration (interpolated
    between logged points).
    """
    any_spike = False
    for group in groups:
        for run in group.runs:
            iterations, norms = run.train["iter"], run.train["grad_norm"]
            positive = norms > 0
            if not positive.any():
                continue
            style = styles[group.key]
            ax.plot(iterations, np.where(positive, norms, np.nan), linewidth=0.8, alpha=0.85, **style)
            if len(run.spike_iters):
                marks = np.interp(run.spike_iters, iterations[positive], norms[positive])
                ax.plot(run.spike_iters, marks, linestyle="none", marker="v", markersize=7,
                        markerfacecolor=style["color"], markeredgecolor="red", markeredgewidth=1.2)
                any_spike = True
    _set_log_y(ax)
    ax.set_xlabel("iteration")
    ax.set_ylabel("gradient norm")
    ax.set_title("Gradient norm")
    if any_spike:
        spike_handle = Line2D([], [], linestyle="none", marker="v", markersize=7, markerfacecolor="white",
                              markeredgecolor="red", label="loss spike")
        ax.legend(handles=[spike_handle], loc="upper right", fontsize=8)


def has_final_loss(groups: Sequence[Group]) -> bool:
    return any(math.isfinite(g.final_mean) and not math.isnan(g.fraction) for g in groups)


def _signed_sqrt(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.sqrt(np.abs(values))


def _signed_square(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.square(values)


def _percent_ticks(ax: Axes, fractions: Iterable[float]) -> None:
    ticks = sorted({round(f, 6) for f in fractions if not math.isnan(f)})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t * 100:.3g}%" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def _series_marker(qk_norm: bool, other_arch: bool) -> str:
    if qk_norm:
        return "s"
    return "D" if other_arch else "o"


def draw_final_loss(ax: Axes, groups: Sequence[Group], styles: dict) -> None:
    """Draw final val loss against rope fraction: seed mean with std error bars, seeds faint.

    Each setup, architecture and QK-norm setting gets its own series, with the line style of its
    runs and its own marker. NoPE + QK-norm is a black star. The full-RoPE level of each
    architecture is a grey reference line. The x axis has a square-root scale, which spaces the
    usual fractions (0, 2 of 64 channels, 10%, 25%, 50%, 75%, 100%) about evenly.
    """
    ax.set_xscale("function", functions=(_signed_sqrt, _signed_square))
    series: dict[tuple, list[Group]] = defaultdict(list)
    for group in groups:
        if math.isfinite(group.final_mean) and not math.isnan(group.fraction):
            series[(group.first.setup, group.first.arch, group.first.qk_norm)].append(group)

    legend_handles: list[Line2D] = []
    for (_setup, arch, qk_norm), members in series.items():
        members.sort(key=lambda g: g.fraction)
        linestyle = styles[members[0].key]["linestyle"]
        marker = _series_marker(qk_norm, any(arch))
        ax.plot([g.fraction for g in members], [g.final_mean for g in members], color="0.45",
                linestyle=linestyle, linewidth=1.0, zorder=1)
        for group in members:
            colour = styles[group.key]["color"]
            star = qk_norm and group.is_nope
            seed_values = [r.final_val_loss for r in group.counted_runs if math.isfinite(r.final_val_loss)]
            ax.plot([group.fraction] * len(seed_values), seed_values, linestyle="none", marker=".",
                    color=colour, alpha=0.35, zorder=2)
            yerr = group.final_std if math.isfinite(group.final_std) else None
            ax.errorbar(group.fraction, group.final_mean, yerr=yerr, marker="*" if star else marker,
                        markersize=13 if star else 7, color=colour, markeredgecolor="black", ecolor="black",
                        capsize=3, zorder=3)

        arch_text = _arch_text(members[0].first)
        label = "QK-norm" if qk_norm else "no QK-norm"
        if arch_text:
            label += f", {arch_text}"
        if any(not (qk_norm and g.is_nope) for g in members):
            legend_handles.append(Line2D([], [], color="0.45", linestyle=linestyle, marker=marker,
                                         markerfacecolor="white", markeredgecolor="black", label=label))
        if qk_norm and any(g.is_nope for g in members):
            legend_handles.append(Line2D([], [], linestyle="none", marker="*", markersize=12, color="black",
                                         label=f"NoPE + QK-norm, {arch_text}" if arch_text else "NoPE + QK-norm"))

    for group in groups:
        if group.reference is group and math.isfinite(group.final_mean):
            arch_text = _arch_text(group.first)
            linestyle = "-." if arch_text else ":"
            ax.axhline(group.final_mean, color="0.3", linestyle=linestyle, linewidth=1.2, zorder=0)
            label = f"full RoPE level, {arch_text}" if arch_text else "full RoPE level"
            legend_handles.append(Line2D([], [], color="0.3", linestyle=linestyle, label=label))

    _percent_ticks(ax, (g.fraction for g in groups if math.isfinite(g.final_mean)))
    ax.set_xlabel("rope fraction (share of each head's channels rotated)")
    ax.set_ylabel("final validation loss")
    ax.set_title("Final val loss vs rope fraction (mean ± std over seeds)")
    unique = {handle.get_label(): handle for handle in legend_handles}
    ax.legend(handles=list(unique.values()), fontsize=8, loc="best")


def has_long_context(groups: Sequence[Group]) -> bool:
    return any(math.isfinite(v) for g in groups for r in g.runs for v in r.long_context.values())


def draw_long_context(ax: Axes, groups: Sequence[Group], styles: dict) -> None:
    """Draw val loss against evaluation context length (mean over seeds) for runs that recorded it.

    A vertical dotted line marks each training block_size. A run's final val loss is its point at
    the training block_size, so each curve starts at 1x the training context.
    """
    trained_lengths = set()
    for group in groups:
        values: dict[int, list[float]] = defaultdict(list)
        for run in group.runs:
            for length, loss in run.long_context.items():
                if math.isfinite(loss):
                    values[length].append(loss)
            if run.long_context and run.block_size:
                trained_lengths.add(run.block_size)
                if math.isfinite(run.final_val_loss) and run.block_size not in run.long_context:
                    values[run.block_size].append(run.final_val_loss)
        if not values:
            continue
        lengths = sorted(values)
        ax.plot(lengths, [np.mean(values[n]) for n in lengths], marker="o", markersize=4, linewidth=1.4,
                **styles[group.key])
    for length in sorted(trained_lengths):
        ax.axvline(length, color="grey", linestyle=":", linewidth=1.0)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("evaluation context length (tokens; dotted: training block_size)")
    ax.set_ylabel("validation loss")
    ax.set_title("Long-context loss")


def has_cache_size(groups: Sequence[Group]) -> bool:
    return any((g.first.rope_dims or 0) > 0 and g.first.head_dim for g in groups)


def _format_bytes(value: float, _position: Any = None) -> str:
    """Format a byte count with binary units: 512 B, 24 KiB, 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"


def _format_length(value: float, _position: Any = None) -> str:
    if value >= 1024 and value % 1024 == 0:
        return f"{value / 1024:g}K"
    return f"{value:g}"


def draw_cache_size(ax: Axes, groups: Sequence[Group], styles: dict) -> None:
    """Draw cos/sin table bytes against context length for each recorded rotated-channel count.

    bytes(L) = 2 * L * rope_dims * bytes_per_value, with rope_dims, head_dim and bytes_per_value
    from the runs. Each line's legend entry gives its saving factor head_dim / rope_dims against
    full RoPE, and a dot marks the table the run actually built at its block_size.
    """
    tables: dict[tuple[int, int, int], Group] = {}
    block_sizes = []
    has_nope = False
    for group in groups:
        run = group.first
        if run.block_size:
            block_sizes.append(run.block_size)
        if group.is_nope:
            has_nope = True
            continue
        if run.rope_dims and run.head_dim:
            tables.setdefault((run.rope_dims, run.head_dim, run.bytes_per_value), group)

    longest = max([*block_sizes, 1024]) * 64
    lengths = np.logspace(6, math.log2(longest), 64, base=2)
    for (rope_dims, head_dim, bytes_per_value), group in sorted(tables.items(), key=lambda item: item[0][0]):
        colour = styles[group.key]["color"]
        saving = head_dim / rope_dims
        if saving == 1:
            label = f"{head_dim}/{head_dim} ch: full RoPE"
        else:
            label = f"{rope_dims}/{head_dim} ch: {saving:.3g}x smaller"
        ax.plot(lengths, cos_sin_bytes(lengths, rope_dims, bytes_per_value), color=colour, linewidth=1.6,
                label=label)

        trained = sorted({g.first.block_size for g in groups
                          if g.first.rope_dims == rope_dims and g.first.head_dim == head_dim and g.first.block_size})
        ax.plot(trained, [cos_sin_bytes(n, rope_dims, bytes_per_value) for n in trained], marker="o",
                color=colour, markeredgecolor="black", linestyle="none")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=4))
    ax.yaxis.set_major_locator(LogLocator(base=4))
    ax.xaxis.set_major_formatter(FuncFormatter(_format_length))
    ax.yaxis.set_major_formatter(FuncFormatter(_format_bytes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("context length (positions; dot: trained block_size)")
    ax.set_ylabel("cos/sin table size")
    ax.set_title("cos/sin table size")
    handles, labels = ax.get_legend_handles_labels()
    if has_nope:
        handles.append(Line2D([], [], color="black", linestyle="none"))
        labels.append("NoPE: no table (0 B)")
    ax.legend(handles, labels, fontsize=8, loc="upper left")


# Each panel: (axes label, data check, draw function). Panels without data are left out.
PANELS: list[tuple[str, Callable[[Sequence[Group]], bool], Callable[..., None]]] = [
    ("val_loss", has_val_loss, draw_val_loss),
    ("train_loss", has_train_loss, draw_train_loss),
    ("gap", has_gap, draw_gap),
    ("final_loss", has_final_loss, draw_final_loss),
    ("stability", has_grad_norm, draw_stability),
    ("long_context", has_long_context, draw_long_context),
    ("cache_size", has_cache_size, draw_cache_size),
]


def _figure_title(groups: Sequence[Group]) -> str:
    runs = [r for g in groups for r in g.runs]
    setups = {r.setup for r in runs}
    text = f"Partial RoPE comparison: {len(runs)} run{'s' if len(runs) != 1 else ''} in {len(groups)} group"
    text += "s" if len(groups) != 1 else ""
    if len(setups) == 1:
        dataset, n_layer, n_head, n_embd, block_size = next(iter(setups))
        details = [str(dataset)] if dataset else []
        if n_layer and n_head and n_embd:
            details.append(f"{n_layer} layers, {n_head} heads of {n_embd // n_head} channels")
        if block_size:
            details.append(f"block {block_size}")
        if details:
            text += " (" + ", ".join(details) + ")"
    return text


def make_figure(groups: Sequence[Group], *, x_axis: str = "iter", smooth_window: int = 21, logy: bool = False,
                figure: Figure | None = None) -> Figure:
    """Draw every panel that has data into one figure, two panels per row.

    Each panel's Axes label (ax.get_label()) is its key in PANELS. The figure legend above the
    panels lists the groups with their colour and line style, under a title naming the runs.

    Args:
        groups: output of aggregate().
        x_axis: "iter" or "tokens", the x axis of the validation and training loss panels.
        smooth_window: training-loss smoothing window in logged points (see smooth()).
        logy: log-scale y on the two loss panels.
        figure: the figure to draw into, for example one made by pyplot for --show. The default
            is a new Figure that is not attached to any GUI backend.
    """
    styles = run_styles(groups)
    if x_axis == "tokens":
        _warn_missing_tokens(groups)
    panels = [(key, draw) for key, has_data, draw in PANELS if has_data(groups)]
    columns = 2 if len(panels) > 1 else 1
    rows = max(1, math.ceil(len(panels) / columns))
    legend_rows = math.ceil(len(groups) / 4)
    size = (7.0 * columns, 4.2 * rows + 0.3 * legend_rows + 0.5)

    fig = figure if figure is not None else Figure()
    fig.set_size_inches(*size)
    fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(rows, columns)
    options = {"val_loss": {"x_axis": x_axis, "logy": logy},
               "train_loss": {"x_axis": x_axis, "logy": logy, "smooth_window": smooth_window}}
    for position, (key, draw) in enumerate(panels):
        ax = fig.add_subplot(grid[position // columns, position % columns], label=key)
        draw(ax, groups, styles, **options.get(key, {}))
        ax.grid(True, alpha=0.3)

    # The title is the legend's title because, with matplotlib 3.11, constrained layout let a
    # suptitle overlap an "outside" figure legend.
    handles = [Line2D([], [], linewidth=2, **styles[g.key]) for g in groups]
    fig.legend(handles, [g.label for g in groups], loc="outside upper center", ncols=min(4, len(groups)),
               fontsize=9, frameon=False, title=_figure_title(groups), title_fontsize=12)
    return fig


# ----------------------------------------------------------------------------------------------
# Table

TABLE_COLUMNS = ("run (group)", "fraction", "rotated channels", "seeds", "final val loss", "best val loss",
                 "vs full RoPE", "diff from full RoPE", "spikes", "grad norm median / max", "cos/sin bytes", "saving",
                 "status")


def long_context_column(length: int) -> str:
    """Return the table column name for the val loss at an evaluation context of `length` tokens."""
    return f"val loss at {length} tokens"


def _mean_std_text(mean: float, std: float, count: int, total: int) -> str:
    if count == 0:
        return "n/a"
    text = f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"
    if count < total:
        text += f" ({count} of {total} seeds)"
    return text


def _diff_text(group: Group) -> str:
    if group.reference is group:
        return "reference"
    if math.isfinite(group.diff_pct):
        return f"{group.diff_pct:+.2f}%"
    return "n/a"


def _diff_nats_text(group: Group) -> str:
    if group.reference is group:
        return "reference"
    if not math.isfinite(group.diff):
        return "n/a"
    if math.isnan(group.diff_std):
        return f"{group.diff:+.4f}"
    return f"{group.diff:+.4f} ± {group.diff_std:.4f}"


def _grad_norm_text(group: Group) -> str:
    """Return the median and max gradient norm of the group's steps after warmup, all seeds pooled."""
    pooled = np.concatenate([run.train["grad_norm"][run.train["iter"] > (run.warmup_iters or 0)]
                             for run in group.runs])
    pooled = pooled[np.isfinite(pooled)]
    if len(pooled) == 0:
        return "n/a"
    return f"{np.median(pooled):.2f} / {pooled.max():.2f}"


def _long_context_text(group: Group, length: int) -> str:
    runs = group.counted_runs
    mean, std, count = _mean_std(r.long_context.get(length, math.nan) for r in runs)
    return _mean_std_text(mean, std, count, len(runs))


def _saving_text(group: Group) -> str:
    run = group.first
    if group.is_nope:
        return "n/a (no table)"
    if run.rope_dims and run.head_dim:
        return f"{run.head_dim / run.rope_dims:.3g}x"
    return "n/a"


def _status_text(runs: Sequence[Run]) -> str:
    """Return the status of a single run, or counts such as "2 finished, 1 diverged"."""
    statuses = Counter(run.status for run in runs)
    if len(runs) == 1:
        return runs[0].status
    return ", ".join(f"{count} {status}" for status, count in statuses.items())


def table_rows(groups: Sequence[Group]) -> list[dict[str, str]]:
    """Format one table row per group, keyed by TABLE_COLUMNS plus one long_context_column() per
    evaluation length that any run has (train.py --eval_block_sizes), after "diff from full RoPE".

    Args:
        groups: output of aggregate(), already in table order.
    """
    several_setups = len({g.first.setup for g in groups}) > 1
    lengths = sorted({length for g in groups for r in g.runs for length in r.long_context})
    rows = []
    for group in groups:
        run = group.first
        name = f"{run.group} [{_setup_text(run.setup)}]" if several_setups else run.group
        rope_dims = "?" if run.rope_dims is None else str(run.rope_dims)
        head_dim = "?" if run.head_dim is None else str(run.head_dim)
        count = len(group.runs)
        row = {
            "run (group)": name,
            "fraction": "n/a" if math.isnan(run.fraction) else f"{run.fraction:g}",
            "rotated channels": f"{rope_dims}/{head_dim}",
            "seeds": str(count),
            "final val loss": _mean_std_text(group.final_mean, group.final_std, group.final_count, count),
            "best val loss": _mean_std_text(group.best_mean, group.best_std, group.best_count, count),
            "vs full RoPE": _diff_text(group),
            "diff from full RoPE": _diff_nats_text(group),
        }
        for length in lengths:
            row[long_context_column(length)] = _long_context_text(group, length)
        row.update({
            "spikes": str(sum(r.spikes for r in group.runs)),
            "grad norm median / max": _grad_norm_text(group),
            "cos/sin bytes": "n/a" if math.isnan(run.cache_bytes) else f"{int(run.cache_bytes):,}",
            "saving": _saving_text(group),
            "status": _status_text(group.runs),
        })
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, str]]) -> str:
    """Format rows as a Markdown table followed by notes on how the columns are computed.

    Args:
        rows: output of table_rows(); every row has the same columns.
    """
    columns = list(rows[0]) if rows else list(TABLE_COLUMNS)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(row[c].replace("|", "\\|") for c in columns) + " |")
    lines += [
        "",
        "- Val losses: mean ± sample std (ddof 1) over seeds. \"(n of m seeds)\" means that non-finite values "
        "were left out, and so were runs without summary.json where other seeds have one.",
        "- vs full RoPE: relative difference of the final val loss from the full-RoPE group (every head "
        "channel rotated, no QK-norm) with the same architecture and setup, paired by seed: the mean over the "
        "seeds both groups have of (loss - full-RoPE loss with that seed), over the full-RoPE mean of those "
        "seeds. Groups without a shared seed compare means over all seeds. Diff from full RoPE: the same "
        "difference in nats, ± the std of the per-seed differences.",
        "- Grad norm: the global gradient norm before clipping, over the steps after warmup of all seeds.",
        "- cos/sin bytes: one table at the trained block_size, 2 × block_size × rotated channels × 4 bytes "
        "(float32). Saving: head channels / rotated channels.",
        "- Status \"incomplete\": no summary.json, so the run is still going or was killed.",
    ]
    if any(column.startswith("val loss at ") for column in columns):
        lines.append("- Val loss at N tokens: measured once after training on val windows of N tokens "
                     "(train.py --eval_block_sizes), mean ± std over seeds.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Command line


def output_path(runs_dirs: Sequence[str | Path], output: str | Path | None) -> Path:
    """Return the figure path: `output`, or comparison.png in the first runs folder.

    Raises:
        ValueError: the suffix is not .png, .svg or .pdf.
    """
    path = Path(output) if output else Path(runs_dirs[0]) / "comparison.png"
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"unsupported figure format {path.suffix or '(no suffix)'!r} in {path}. "
                         f"Use a name ending in {', '.join(FORMATS)}.")
    return path


def render(runs_dirs: Sequence[str | Path], output: str | Path | None = None, *, x_axis: str = "iter",
           smooth_window: int = 21, logy: bool = False, dpi: int = 150,
           figure: Figure | None = None) -> tuple[Figure, list[dict[str, str]]]:
    """Load the runs, save the figure and the Markdown table, and return both.

    Args:
        runs_dirs: folders to search for run directories.
        output: figure path whose suffix picks PNG, SVG or PDF; by default
            <first runs_dir>/comparison.png. The table goes to the same path with suffix .md.
        x_axis: "iter" or "tokens" for the loss panels.
        smooth_window: training-loss smoothing window in logged points.
        logy: log-scale y on the loss panels.
        dpi: resolution of PNG output.
        figure: optional figure to draw into (see make_figure).

    Raises:
        NoRunDataError: no run has usable data.
        ValueError: unsupported output suffix.
    """
    path = output_path(runs_dirs, output)
    groups = aggregate(load_runs(runs_dirs))
    fig = make_figure(groups, x_axis=x_axis, smooth_window=smooth_window, logy=logy, figure=figure)
    rows = table_rows(groups)

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=FORMATS[path.suffix.lower()], dpi=dpi)
    path.with_suffix(".md").write_text(format_table(rows), encoding="utf-8")
    return fig, rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw the comparison figure and Markdown table of partial-RoPE runs written by train.py.")
    parser.add_argument("runs_dirs", nargs="+", metavar="RUNS_DIR",
                        help="folder searched recursively for run directories (train.py --out_dir)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="figure file; .png, .svg or .pdf picks the format (default: "
                             "<first RUNS_DIR>/comparison.png). The table goes next to it as .md")
    parser.add_argument("--x", dest="x_axis", choices=("iter", "tokens"), default="iter",
                        help="x axis of the validation and training loss panels (default: iter); "
                             "the gap and gradient-norm panels always use iterations")
    parser.add_argument("--smooth", type=int, default=21, metavar="N",
                        help="training-loss smoothing window in logged training points, centred "
                             "(default: 21; 1 turns smoothing off)")
    parser.add_argument("--logy", action="store_true", help="log-scale y axis on the loss panels (default: linear)")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of PNG output in dots per inch (default: 150)")
    parser.add_argument("--show", action="store_true",
                        help="also open the figure in a window (default: only write files, no display needed)")
    args = parser.parse_args(argv)
    try:
        output_path(args.runs_dirs, args.output)
    except ValueError as error:
        parser.error(str(error))
    if args.smooth < 1:
        parser.error(f"--smooth must be 1 or more, got {args.smooth}")
    if args.dpi < 1:
        parser.error(f"--dpi must be positive, got {args.dpi}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status: 0 on success, 1 when no run has data.

    Invalid arguments exit with status 2 through argparse.
    """
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("plot.py: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    try:
        return _render_and_report(args)
    finally:
        log.removeHandler(handler)


def _render_and_report(args: argparse.Namespace) -> int:

    figure = None
    if args.show:
        import matplotlib.pyplot as plt  # only here, so that no GUI backend loads without --show
        figure = plt.figure()
    else:
        matplotlib.use("Agg")
    try:
        _fig, rows = render(args.runs_dirs, args.output, x_axis=args.x_axis, smooth_window=args.smooth,
                            logy=args.logy, dpi=args.dpi, figure=figure)
    except NoRunDataError as error:
        print(f"plot.py: error: {error}", file=sys.stderr)
        return 1

    path = output_path(args.runs_dirs, args.output)
    print(format_table(rows))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    if args.show:
        plt.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
