"""Tests of train.py: runs, run directories, exact resume, multi-process training, failure handling.

Every test trains a 1-layer, 64-wide model on a small character data set written into a temporary
folder, so the file runs offline on a CPU. The resume and torchrun tests start train.py in child
processes, because only a real process can be killed with SIGKILL or joined into a process group.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import model
import train
from model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent
TRAIN_SCRIPT = REPO / "train.py"
SUBPROCESS_TIMEOUT_S = 180

# The tiny model and schedule of every run in this file. Tests add the data, output and run flags.
TINY_FLAGS = ["--n_layer", "1", "--n_embd", "64", "--n_head", "1", "--block_size", "32",
              "--batch_size", "8", "--eval_iters", "1", "--lr", "1e-2", "--sample_tokens", "0",
              "--log_interval", "1000"]

SUMMARY_KEYS = {"run_name", "group", "rope_fraction", "rope_dims", "head_dim", "n_head", "n_layer",
                "n_embd", "block_size", "qk_norm", "parallel_residual", "arch", "pos_emb", "seed",
                "dataset", "final_val_loss", "best_val_loss", "rope_cache_bytes", "full_rope_cache_bytes",
                "cache_bytes_per_value", "iters", "tokens", "wall_seconds", "status", "spikes",
                "long_context", "sample"}
CONFIG_KEYS = {"run_name", "group", "settings", "model", "rope_dims", "head_dim", "versions", "device",
               "dtype", "git_commit"}
NEWER_MODEL_FIELDS = ("qk_norm", "parallel_residual", "pos_emb", "tie_embeddings", "arch")

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n")


# -----------------------------------------------------------------------------
# Helpers

def write_data_dir(path: Path, repeats: int = 100, val_tokens: int | None = None) -> Path:
    """Write train.bin, val.bin and a char-tokenizer meta.json as prepare_data.py does."""
    path.mkdir(parents=True, exist_ok=True)
    text = TEXT * repeats
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text], dtype=np.uint16)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    if val_tokens is not None:
        val_ids = val_ids[:val_tokens]
    train_ids.tofile(path / "train.bin")
    val_ids.tofile(path / "val.bin")
    meta = {"dataset": "custom", "tokenizer": "char", "tiktoken_encoding": None, "vocab": vocab,
            "vocab_size": len(vocab), "eot_token": None, "dtype": "uint16",
            "train_tokens": len(train_ids), "val_tokens": len(val_ids), "source": "test_train.py",
            "sha256": None, "val_fraction": 0.1, "seed": 0}
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


def run_flags(data_dir: Path, out_dir: Path, fractions=("1",), seeds=("1",), max_iters: int = 8,
              eval_interval: int = 4, extra: tuple = ()) -> list[str]:
    return [*TINY_FLAGS, "--data_dir", str(data_dir), "--out_dir", str(out_dir),
            "--rope_fraction", *fractions, "--seed", *seeds, "--max_iters", str(max_iters),
            "--eval_interval", str(eval_interval), *extra]


def read_log(run_dir: Path) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def events(log: list[dict], kind: str) -> list[dict]:
    return [e for e in log if e["event"] == kind]


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(e["iter"], e["loss"]) for e in events(read_log(run_dir), "train")]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def child_env() -> dict:
    env = dict(os.environ)
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo traffic on the Linux loopback interface
    return env


def with_out_dir(flags: list[str], out_dir: Path) -> list[str]:
    """Return a copy of flags with --out_dir replaced."""
    changed = list(flags)
    changed[changed.index("--out_dir") + 1] = str(out_dir)
    return changed


def run_child(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(), capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)


# Child process code that trains through train.main and then SIGKILLs itself.
# Mode after_train N kills right after the log line of training step N is written.
# Mode mid_save N kills while the checkpoint of step N is written, after half of its bytes.
KILL_HARNESS = r"""
import io, os, signal, sys
import torch
import train

mode, kill_iter, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

if mode == "after_train":
    original_log = train.Run.log

    def log(self, event):
        original_log(self, event)
        if event["event"] == "train" and event["iter"] == kill_iter:
            os.kill(os.getpid(), signal.SIGKILL)

    train.Run.log = log
elif mode == "mid_save":
    original_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("iter") == kill_iter):
            return original_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        original_save(obj, buffer)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save
else:
    raise SystemExit(f"unknown mode {mode}")

sys.exit(train.main(argv))
"""


class SimulatedCrash(BaseException):
    """A kill inside the training process, simulated by an exception that train.main does not catch."""


# -----------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("data") / "tiny_char")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """Train 30 steps at fraction 1 and seed 1, and return the run directory. Tests copy it before changing it."""
    out_dir = tmp_path_factory.mktemp("tiny_run")
    flags = run_flags(data_dir, out_dir, max_iters=30, eval_interval=10, extra=("--sample_tokens", "20"))
    assert train.main(flags) == 0
    return out_dir / "rope1.00-s1"


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, data_dir) -> tuple[Path, list[str]]:
    """Run A of the resume tests: 8 steps in a child process, checkpoints at steps 4 and 8.

    Dropout makes every step draw from the global torch generator, so a resume must restore it.
    """
    out_dir = tmp_path_factory.mktemp("run_a")
    flags = run_flags(data_dir, out_dir, seeds=("3",), extra=("--dropout", "0.1"))
    result = run_child([str(TRAIN_SCRIPT), *flags])
    assert result.returncode == 0, result.stderr
    return out_dir / "rope1.00-s3", flags


def one_step_flags(data_dir: Path, out_dir: Path, batch_size: int, grad_accum: int) -> list[str]:
    """Return the flags for one optimizer step at lr 1e-3 (5e-4 after the one-step warmup).

    Adam's first step moves each weight by lr * g / (|g| + 1e-8). So where a gradient is near 1e-8,
    float32 rounding of g becomes a parameter difference proportional to lr. Measured with torch
    2.13 on CPU with this file's model and data, batch 8 x 1 and batch 2 x 4 differed by 4.8e-6
    at lr 1e-2 and by 4.8e-7 at lr 1e-3. Their gradients differed by 2.3e-8 at both.
    """
    return run_flags(data_dir, out_dir, max_iters=1, eval_interval=1,
                     extra=("--lr", "1e-3", "--batch_size", str(batch_size), "--grad_accum", str(grad_accum)))


def step_gradients(ckpt: dict) -> dict:
    """Return the clipped gradients of a one-step checkpoint, from AdamW's first moment (1 - beta1) * g."""
    return {i: state["exp_avg"] / (1 - 0.9) for i, state in ckpt["optimizer"]["state"].items()}


@pytest.fixture(scope="module")
def accumulation_runs(tmp_path_factory, data_dir) -> dict[str, Path]:
    """One optimizer step, in one process, with batch 8 x 1 micro-step and with batch 2 x 4 micro-steps."""
    checkpoints = {}
    for batch_size, grad_accum in ((8, 1), (2, 4)):
        out_dir = tmp_path_factory.mktemp(f"accum_{batch_size}x{grad_accum}")
        flags = one_step_flags(data_dir, out_dir, batch_size, grad_accum)
        assert train.main(flags) == 0
        checkpoints[f"{batch_size}x{grad_accum}"] = out_dir / "rope1.00-s1" / "ckpt.pt"
    return checkpoints


def copy_run(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Copy a run directory into a fresh out_dir, and return (out_dir, copied run directory)."""
    out_dir = tmp_path / "out"
    copied = out_dir / run_dir.name
    shutil.copytree(run_dir, copied)
    return out_dir, copied


# -----------------------------------------------------------------------------
# A training run and its run directory

def test_tiny_run_lowers_loss(tiny_run):
    log = read_log(tiny_run)
    evals = events(log, "eval")
    losses = [loss for _, loss in train_losses(tiny_run)]

    assert [e["iter"] for e in evals] == [0, 10, 20, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0
    assert evals[-1]["train_loss"] < evals[0]["train_loss"] - 1.0
    assert statistics.mean(losses[-5:]) < statistics.mean(losses[:5]) - 1.0


def test_run_directory_files(tiny_run, data_dir):
    assert tiny_run.name == "rope1.00-s1"
    assert {p.name for p in tiny_run.iterdir()} == {"config.json", "log.jsonl", "ckpt.pt", "summary.json"}

    config = read_json(tiny_run / "config.json")
    assert CONFIG_KEYS <= config.keys()
    assert config["run_name"] == "rope1.00-s1"
    assert config["group"] == "rope1.00"
    assert config["model"]["n_layer"] == 1
    assert config["rope_dims"] == 64
    assert config["settings"]["max_iters"] == 30

    log = read_log(tiny_run)
    header = log[0]
    assert header["event"] == "header"
    assert {"settings", "versions", "git_commit", "device", "dtype", "model"} <= header.keys()
    assert header["versions"]["torch"] == torch.__version__
    assert header["git_commit"] is None or isinstance(header["git_commit"], str)
    assert len(events(log, "header")) == 1
    assert [i for i, _ in train_losses(tiny_run)] == list(range(1, 31))
    assert log[-1]["event"] == "end"
    assert log[-1]["status"] == "finished"
    assert log[-1]["iter"] == 30

    summary = read_json(tiny_run / "summary.json")
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["status"] == "finished"
    assert summary["iters"] == 30
    assert summary["tokens"] == 30 * 8 * 32
    assert summary["final_val_loss"] == events(log, "eval")[-1]["val_loss"]
    assert summary["rope_cache_bytes"] == 2 * 32 * 64 * 4
    assert summary["spikes"] == 0
    vocab = set(read_json(data_dir / "meta.json")["vocab"])
    assert len(summary["sample"]) == 20
    assert set(summary["sample"]) <= vocab


def test_run_names_encode_settings():
    args = train.parse_args(["--rope_fraction", "0.1", "--qk_norm", "--seed", "7"])
    assert train.run_name(args, 0.1, 7) == "rope0.10-qknorm-s7"
    assert train.run_group(args, 0.1) == "rope0.10-qknorm"
    args = train.parse_args(["--rope_fraction", "0"])
    assert train.run_name(args, 0.0, 1337) == "rope0.00-s1337"


def test_sweep_shares_weights_and_batches(tmp_path, data_dir, monkeypatch):
    initial_weights, samplers, eval_starts = [], [], []

    class RecordingGPT(GPT):
        def __init__(self, config):
            super().__init__(config)
            initial_weights.append({k: v.clone() for k, v in self.state_dict().items()})

    class RecordingSampler(train.BatchSampler):
        def __init__(self, *args):
            super().__init__(*args)
            self.draws = []
            samplers.append(self)

        def next_step(self):
            chunks = super().next_step()
            self.draws.append(torch.cat(chunks))
            return chunks

    original_estimate_loss = train.estimate_loss

    def recording_estimate_loss(net, split, starts, *args):
        eval_starts.append((split.path.name, starts.clone()))
        return original_estimate_loss(net, split, starts, *args)

    monkeypatch.setattr(train, "GPT", RecordingGPT)
    monkeypatch.setattr(train, "BatchSampler", RecordingSampler)
    monkeypatch.setattr(train, "estimate_loss", recording_estimate_loss)
    out_dir = tmp_path / "out"
    flags = run_flags(data_dir, out_dir, fractions=("1", "0"), seeds=("1", "2"), max_iters=3, eval_interval=3)
    assert train.main(flags) == 0

    names = ["rope1.00-s1", "rope0.00-s1", "rope1.00-s2", "rope0.00-s2"]  # seeds outer, fractions inner
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)
    for name in names:
        assert read_json(out_dir / name / "summary.json")["status"] == "finished"

    assert len(initial_weights) == len(samplers) == 4
    assert [len(sampler.draws) for sampler in samplers] == [3, 3, 3, 3]
    for a, b in ((0, 1), (2, 3)):  # same seed, fractions 1 and 0
        assert all(torch.equal(initial_weights[a][k], initial_weights[b][k]) for k in initial_weights[a])
        assert all(torch.equal(x, y) for x, y in zip(samplers[a].draws, samplers[b].draws))
    assert not torch.equal(initial_weights[0]["wte.weight"], initial_weights[2]["wte.weight"])
    assert not torch.equal(samplers[0].draws[0], samplers[2].draws[0])

    val_starts = [starts for split, starts in eval_starts if split == "val.bin"]
    assert len(val_starts) == 4 * 2  # step 0 and step 3 of every run
    assert all(torch.equal(starts, val_starts[0]) for starts in val_starts)


def test_seed_gives_same_initial_weights():
    def initial_state(**overrides):
        train.seed_everything(5)
        config = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, **overrides)
        return GPT(config).state_dict()

    full = initial_state(rope_fraction=1.0)
    for overrides in ({"rope_fraction": 0.25}, {"rope_fraction": 0.0}, {"rope_fraction": 0.1, "qk_norm": True}):
        other = initial_state(**overrides)
        for key, value in full.items():
            assert torch.equal(value, other[key]), (overrides, key)

    train.seed_everything(6)
    other_seed = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32)).state_dict()
    assert not torch.equal(full["wte.weight"], other_seed["wte.weight"])


def test_sampler_windows_follow_seed():
    def draws(seed, batch_size, grad_accum):
        sampler = train.BatchSampler(seed, 1000, 32, batch_size, grad_accum)
        return [torch.cat(sampler.next_step()) for _ in range(3)]

    same = draws(4, 8, 1)
    assert all(torch.equal(a, b) for a, b in zip(same, draws(4, 8, 1)))
    assert all(torch.equal(a, b) for a, b in zip(same, draws(4, 2, 4)))  # same global batch
    assert not torch.equal(same[0], draws(5, 8, 1)[0])
    assert all(0 <= int(s) < 1000 - 32 for step in same for s in step)


def test_fixed_windows_ignore_global_seed():
    torch.manual_seed(1)
    first = train.fixed_windows(5000, 32, 64)
    torch.manual_seed(2)
    rng_before = torch.get_rng_state()
    second = train.fixed_windows(5000, 32, 64)

    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global generator is untouched
    assert first.shape == (64,)
    assert int(first.min()) >= 0
    assert int(first.max()) < 5000 - 32
    assert len(set(first.tolist())) > 32  # windows spread over the split, not one repeated start


def test_lr_schedule_warmup_and_decay():
    args = train.parse_args(["--max_iters", "100", "--warmup_iters", "10", "--lr", "1e-3", "--min_lr", "1e-4"])
    lrs = [train.lr_at(it, args) for it in range(101)]

    warmup_steps = [b - a for a, b in zip(lrs[:10], lrs[1:11])]
    assert all(math.isclose(step, warmup_steps[0], rel_tol=1e-9) for step in warmup_steps)
    assert warmup_steps[0] > 0
    assert lrs[10] == pytest.approx(1e-3, rel=1e-12)
    assert max(lrs) == lrs[10]
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(1e-4, rel=1e-12)
    assert lrs[55] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4), rel=1e-12)  # cosine midpoint


# -----------------------------------------------------------------------------
# Exact resume

def test_resume_after_sigkill_matches_uninterrupted(tmp_path, uninterrupted_run):
    run_a, flags_a = uninterrupted_run
    out_dir = tmp_path / "run_b"
    flags = with_out_dir(flags_a, out_dir)
    run_b = out_dir / run_a.name

    killed = run_child(["-c", KILL_HARNESS, "after_train", "6", *flags])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run_b / "summary.json").exists()
    assert train.load_checkpoint(run_b / "ckpt.pt")["iter"] == 4
    assert [i for i, _ in train_losses(run_b)] == [1, 2, 3, 4, 5, 6]  # steps 5 and 6 must be replayed

    resumed = run_child([str(TRAIN_SCRIPT), *flags, "--resume"])
    assert resumed.returncode == 0, resumed.stderr

    losses_a, losses_b = train_losses(run_a), train_losses(run_b)
    assert [i for i, _ in losses_b] == list(range(1, 9))  # each step logged once
    assert losses_b == losses_a  # bitwise: the floats round-trip exactly through JSON
    log_b = read_log(run_b)
    assert log_b[0]["event"] == "header"
    assert [e["iter"] for e in events(log_b, "resume")] == [4]
    assert [e["iter"] for e in events(log_b, "checkpoint")] == [4, 8]
    assert events(log_b, "eval") == events(read_log(run_a), "eval")
    assert read_json(run_b / "summary.json")["status"] == "finished"
    weights_a = train.load_checkpoint(run_a / "ckpt.pt")["model"]
    weights_b = train.load_checkpoint(run_b / "ckpt.pt")["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_kill_during_checkpoint_write(tmp_path, uninterrupted_run):
    run_a, flags_a = uninterrupted_run
    out_dir = tmp_path / "run_c"
    flags = with_out_dir(flags_a, out_dir)
    run_c = out_dir / run_a.name

    killed = run_child(["-c", KILL_HARNESS, "mid_save", "8", *flags])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = run_c / "ckpt.pt.tmp"
    assert partial.exists()  # the kill really hit the write
    with pytest.raises(RuntimeError, match="failed reading zip archive"):
        torch.load(partial, weights_only=True)
    previous = torch.load(run_c / "ckpt.pt", weights_only=True)
    assert previous["iter"] == 4

    resumed = run_child([str(TRAIN_SCRIPT), *flags, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert train_losses(run_c) == train_losses(run_a)
    assert not partial.exists()
    assert torch.load(run_c / "ckpt.pt", weights_only=True)["iter"] == 8


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    train.save_checkpoint(path, {"iter": 4, "weights": torch.arange(10.0)})
    original_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        original_save(obj, buffer)
        f.write(buffer.getvalue()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        train.save_checkpoint(path, {"iter": 8, "weights": torch.arange(10.0) * 2})

    restored = torch.load(path, weights_only=True)
    assert restored["iter"] == 4
    assert torch.equal(restored["weights"], torch.arange(10.0))
    assert not (tmp_path / "ckpt.pt.tmp").exists()


def test_crash_before_checkpoint_log_line(tmp_path, data_dir, monkeypatch):
    """A kill after ckpt.pt is renamed but before its "checkpoint" log line keeps the log's steps."""
    original_log = train.Run.log
    crash = {"armed": True}

    def log(self, event):
        if crash["armed"] and event["event"] == "checkpoint" and event["iter"] == 8:
            raise SimulatedCrash()
        original_log(self, event)

    monkeypatch.setattr(train.Run, "log", log)
    out_dir = tmp_path / "out"
    flags = run_flags(data_dir, out_dir)
    with pytest.raises(SimulatedCrash):
        train.main(flags)
    run_dir = out_dir / "rope1.00-s1"
    assert train.load_checkpoint(run_dir / "ckpt.pt")["iter"] == 8

    crash["armed"] = False
    assert train.main([*flags, "--resume"]) == 0
    log = read_log(run_dir)
    assert log[0]["event"] == "header"
    assert [i for i, _ in train_losses(run_dir)] == list(range(1, 9))
    assert [e["iter"] for e in events(log, "eval")] == [0, 4, 8]
    assert [e["iter"] for e in events(log, "resume")] == [8]
    assert log[-1]["event"] == "end"
    assert read_json(run_dir / "summary.json")["status"] == "finished"


def test_resume_finished_run_exits_cleanly(tmp_path, tiny_run, data_dir, capsys):
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    log_before = (run_dir / "log.jsonl").read_text()
    flags = run_flags(data_dir, out_dir, max_iters=30, eval_interval=10)

    assert train.main([*flags, "--resume"]) == 0
    assert "run is finished; nothing to resume" in capsys.readouterr().out
    assert (run_dir / "log.jsonl").read_text() == log_before


def test_resume_without_checkpoint_fails(tmp_path, data_dir, capsys):
    out_dir = tmp_path / "out"
    (out_dir / "rope1.00-s1").mkdir(parents=True)

    assert train.main([*run_flags(data_dir, out_dir), "--resume"]) == 1
    err = capsys.readouterr().err
    assert str(out_dir / "rope1.00-s1" / "ckpt.pt") in err
    assert "not found" in err


def test_resume_starts_runs_not_yet_begun(tmp_path, tiny_run, data_dir, capsys):
    # A sweep stopped during its first run: --resume finishes that run and starts the next one.
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "summary.json").unlink()
    flags = run_flags(data_dir, out_dir, fractions=("1", "0"), max_iters=30, eval_interval=10)

    assert train.main([*flags, "--resume"]) == 0
    assert "starting this run from step 0" in capsys.readouterr().out
    assert read_json(run_dir / "summary.json")["status"] == "finished"
    assert read_json(out_dir / "rope0.00-s1" / "summary.json")["iters"] == 30


def test_fresh_run_over_checkpoint_needs_overwrite(tmp_path, tiny_run, data_dir, capsys):
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    flags = run_flags(data_dir, out_dir, max_iters=4)

    assert train.main(flags) == 1
    err = capsys.readouterr().err
    assert str(run_dir) in err
    assert "ckpt.pt" in err
    assert "--resume" in err
    assert "--overwrite" in err
    assert read_json(run_dir / "summary.json")["iters"] == 30  # untouched

    assert train.main([*flags, "--overwrite"]) == 0
    log = read_log(run_dir)
    assert len(events(log, "header")) == 1
    assert [i for i, _ in train_losses(run_dir)] == [1, 2, 3, 4]
    assert read_json(run_dir / "summary.json")["iters"] == 4


def test_fresh_run_over_old_log_needs_overwrite(tmp_path, tiny_run, data_dir, capsys):
    # A run directory whose checkpoint was deleted still has a log and a summary to protect.
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "ckpt.pt").unlink()
    before = (run_dir / "log.jsonl").read_bytes()

    assert train.main(run_flags(data_dir, out_dir, max_iters=4)) == 1
    assert "log.jsonl" in capsys.readouterr().err
    assert (run_dir / "log.jsonl").read_bytes() == before


def test_resume_on_other_data_fails(tmp_path, tiny_run, capsys):
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "summary.json").unlink()  # an unfinished run
    other = write_data_dir(tmp_path / "other")
    meta = read_json(other / "meta.json")
    meta["vocab"] = meta["vocab"] + ["\u00e9"]
    meta["vocab_size"] += 1
    (other / "meta.json").write_text(json.dumps(meta))
    before = (run_dir / "ckpt.pt").read_bytes()

    assert train.main([*run_flags(other, out_dir), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "vocab_size" in err
    assert (run_dir / "ckpt.pt").read_bytes() == before


def test_data_checked_against_meta(tmp_path, capsys):
    data = write_data_dir(tmp_path / "data")
    ids = np.fromfile(data / "train.bin", dtype=np.uint16)
    ids[:-10].tofile(data / "train.bin")  # truncated
    assert train.main(run_flags(data, tmp_path / "out")) == 1
    assert "meta.json expects" in capsys.readouterr().err

    data = write_data_dir(tmp_path / "data2")
    meta = read_json(data / "meta.json")
    meta["vocab_size"] = 3
    meta["vocab"] = meta["vocab"][:3]
    (data / "meta.json").write_text(json.dumps(meta))
    assert train.main(run_flags(data, tmp_path / "out2")) == 1
    assert "vocab_size 3" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("flag, value", [
    ("--rope_base", "0"), ("--rope_base", "nan"), ("--beta1", "1.5"), ("--grad_clip", "-1"),
    ("--spike_factor", "nan"), ("--sample_tokens", "-5"), ("--seed", "-1"), ("--device", "foo")])
def test_invalid_flag_values_rejected(tmp_path, data_dir, capsys, flag, value):
    assert train.main([*run_flags(data_dir, tmp_path / "out"), flag, value]) == 1
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_resume_contradicting_flag_fails(tmp_path, tiny_run, data_dir, capsys):
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "summary.json").unlink()  # an unfinished run
    flags = run_flags(data_dir, out_dir, max_iters=32, eval_interval=10)
    flags[flags.index("--n_layer") + 1] = "2"

    assert train.main([*flags, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "--n_layer 2" in err
    assert "n_layer=1" in err
    assert train.load_checkpoint(run_dir / "ckpt.pt")["iter"] == 30


def resume_without_model_flags(data_dir: Path, out_dir: Path, max_iters: int) -> int:
    """Resume seed 1 at fraction 1 with the schedule flags only, so the cpu preset's model flags differ."""
    return train.main(["--resume", "--data_dir", str(data_dir), "--out_dir", str(out_dir),
                       "--rope_fraction", "1", "--seed", "1", "--max_iters", str(max_iters),
                       "--eval_interval", "10", "--batch_size", "8", "--eval_iters", "1", "--lr", "1e-2",
                       "--sample_tokens", "0"])


def test_resume_uses_checkpoint_model_settings(tmp_path, tiny_run, data_dir):
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "summary.json").unlink()

    assert resume_without_model_flags(data_dir, out_dir, max_iters=32) == 0
    summary = read_json(run_dir / "summary.json")
    assert (summary["n_layer"], summary["n_embd"], summary["n_head"], summary["block_size"]) == (1, 64, 1, 32)
    assert summary["iters"] == 32
    assert summary["tokens"] == 32 * 8 * 32
    assert [i for i, _ in train_losses(run_dir)] == list(range(1, 33))


def test_bare_resume_keeps_checkpoint_schedule(tmp_path, tiny_run, data_dir):
    # Only the run's identity is repeated: max_iters, batch_size and lr come from the checkpoint,
    # not from the cpu preset (600 iterations, batch 32).
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "summary.json").unlink()
    ckpt = train.load_checkpoint(run_dir / "ckpt.pt")
    ckpt["iter"] = 20
    torch.save(ckpt, run_dir / "ckpt.pt")

    assert train.main(["--resume", "--data_dir", str(data_dir), "--out_dir", str(out_dir),
                       "--rope_fraction", "1", "--seed", "1", "--sample_tokens", "0"]) == 0
    summary = read_json(run_dir / "summary.json")
    config = read_json(run_dir / "config.json")
    assert summary["iters"] == 30
    assert summary["tokens"] == 30 * 8 * 32
    assert config["settings"]["max_iters"] == 30
    assert config["settings"]["n_layer"] == config["model"]["n_layer"] == 1


def test_resume_old_checkpoint_without_new_fields(tmp_path, tiny_run, data_dir):
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "summary.json").unlink()
    ckpt = train.load_checkpoint(run_dir / "ckpt.pt")
    for field in NEWER_MODEL_FIELDS:
        del ckpt["model_config"][field]
    torch.save(ckpt, run_dir / "ckpt.pt")

    assert resume_without_model_flags(data_dir, out_dir, max_iters=31) == 0
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "finished"
    assert summary["iters"] == 31
    assert (summary["qk_norm"], summary["parallel_residual"], summary["arch"], summary["pos_emb"]) == \
        (False, False, "llama", "none")


def test_resume_past_max_iters_writes_summary(tmp_path, tiny_run, data_dir):
    out_dir, run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "summary.json").unlink()  # killed after the last checkpoint, before the summary

    assert resume_without_model_flags(data_dir, out_dir, max_iters=20) == 0
    summary = read_json(run_dir / "summary.json")
    assert summary["iters"] == 30
    assert summary["final_val_loss"] == train.load_checkpoint(run_dir / "ckpt.pt")["val_loss"]


# -----------------------------------------------------------------------------
# Gradient accumulation and multi-process training

def test_grad_accum_matches_large_batch(accumulation_runs):
    large = train.load_checkpoint(accumulation_runs["8x1"])
    accumulated = train.load_checkpoint(accumulation_runs["2x4"])
    param_diff = max_abs_diff(large["model"], accumulated["model"])
    grad_diff = max_abs_diff(step_gradients(large), step_gradients(accumulated))
    print(f"grad_accum, batch 8 x 1 vs batch 2 x 4: max abs difference "
          f"parameters {param_diff:.3g}, gradients {grad_diff:.3g}")
    assert param_diff <= 1e-6
    assert grad_diff <= 1e-6

    train.seed_everything(1)
    initial = GPT(GPTConfig.from_dict(large["model_config"])).state_dict()
    assert max_abs_diff(initial, large["model"]) > 1e-4  # the step really moved the weights
    loss_large = train_losses(accumulation_runs["8x1"].parent)
    loss_accumulated = train_losses(accumulation_runs["2x4"].parent)
    assert loss_large[0][1] == pytest.approx(loss_accumulated[0][1], abs=1e-6)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available in this torch build")
def test_two_processes_match_one(tmp_path, data_dir, accumulation_runs):
    out_dir = tmp_path / "ddp"
    flags = one_step_flags(data_dir, out_dir, batch_size=2, grad_accum=4)
    result = run_child(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(TRAIN_SCRIPT), *flags])
    assert result.returncode == 0, result.stdout + result.stderr

    run_dir = out_dir / "rope1.00-s1"
    assert [p.name for p in out_dir.iterdir()] == ["rope1.00-s1"]
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "log.jsonl", "ckpt.pt", "summary.json"}
    log = read_log(run_dir)
    assert log[0]["world_size"] == 2
    assert len(events(log, "header")) == 1  # only rank 0 writes
    assert [i for i, _ in train_losses(run_dir)] == [1]
    assert result.stdout.count("status=finished") == 1  # only rank 0 prints run lines

    two_processes = train.load_checkpoint(run_dir / "ckpt.pt")
    one_process = train.load_checkpoint(accumulation_runs["2x4"])
    param_diff = max_abs_diff(one_process["model"], two_processes["model"])
    grad_diff = max_abs_diff(step_gradients(one_process), step_gradients(two_processes))
    print(f"torchrun, 2 processes vs 1 process: max abs difference "
          f"parameters {param_diff:.3g}, gradients {grad_diff:.3g}")
    assert param_diff <= 1e-5
    assert grad_diff <= 1e-6


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available in this torch build")
def test_grad_accum_not_divisible_by_processes(tmp_path, data_dir):
    out_dir = tmp_path / "ddp"
    flags = run_flags(data_dir, out_dir, max_iters=1, extra=("--batch_size", "2", "--grad_accum", "3"))
    result = run_child(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(TRAIN_SCRIPT), *flags])

    assert result.returncode != 0
    assert "--grad_accum 3 is not divisible by the 2 processes" in result.stderr
    assert not out_dir.exists()


# -----------------------------------------------------------------------------
# Divergence and loss spikes

def patch_training_loss(monkeypatch, change_loss, fraction: float | None = None) -> None:
    """Wrap GPT.forward so change_loss(step, loss) rewrites the training loss of micro-step `step` (from 1).

    Only forwards in training mode with targets count, because evaluation and sampling run in eval
    mode. With fraction set, only models with that rope_fraction are affected.
    """
    original_forward = model.GPT.forward
    calls = {}

    def forward(self, idx, targets=None, allow_long_context=False):
        logits, loss = original_forward(self, idx, targets, allow_long_context)
        affected = fraction is None or self.config.rope_fraction == fraction
        if self.training and targets is not None and affected:
            calls[id(self)] = calls.get(id(self), 0) + 1
            loss = change_loss(calls[id(self)], loss)
        return logits, loss

    monkeypatch.setattr(model.GPT, "forward", forward)


def test_nan_loss_marks_run_diverged(tmp_path, data_dir, monkeypatch, capsys):
    patch_training_loss(monkeypatch, lambda step, loss: loss * float("nan") if step == 6 else loss, fraction=1.0)
    out_dir = tmp_path / "out"
    flags = run_flags(data_dir, out_dir, fractions=("1", "0"))

    assert train.main(flags) == 3
    assert "diverged" in capsys.readouterr().out

    diverged = out_dir / "rope1.00-s1"
    summary = read_json(diverged / "summary.json")
    assert summary["status"] == "diverged"
    assert summary["iters"] == 5
    assert math.isnan(summary["final_val_loss"])
    assert train.load_checkpoint(diverged / "ckpt.pt")["iter"] == 4  # the last checkpoint before step 6
    log = read_log(diverged)
    assert log[-1]["event"] == "end"
    assert log[-1]["status"] == "diverged"
    assert log[-1]["iter"] == 5
    last_train = events(log, "train")[-1]
    assert last_train["iter"] == 6
    assert math.isnan(last_train["loss"])

    survivor = read_json(out_dir / "rope0.00-s1" / "summary.json")
    assert survivor["status"] == "finished"
    assert survivor["iters"] == 8


def test_spike_event_in_log(tmp_path, data_dir, monkeypatch):
    patch_training_loss(monkeypatch, lambda step, loss: loss * 4 if step in (25, 26) else loss)
    out_dir = tmp_path / "out"

    assert train.main(run_flags(data_dir, out_dir, max_iters=30, eval_interval=30)) == 0
    run_dir = out_dir / "rope1.00-s1"
    log = read_log(run_dir)
    spikes = events(log, "spike")
    losses = dict(train_losses(run_dir))
    assert [e["iter"] for e in spikes] == [25]  # steps 25 and 26 are one spike
    assert spikes[0]["loss"] == losses[25]
    assert spikes[0]["reference"] == pytest.approx(statistics.median(losses[i] for i in range(1, 25)))
    assert read_json(run_dir / "summary.json")["spikes"] == 1


def test_spike_detector_rules():
    detector = train.SpikeDetector(factor=1.5, window=50, min_history=20)
    for _ in range(19):
        assert detector.update(1.0) is None
    assert detector.update(10.0) is None  # only 19 earlier losses, fewer than min_history
    assert detector.count == 0

    assert detector.update(1.5) is None  # exactly factor x median is not a spike
    assert detector.update(2.0) == 1.0
    assert detector.update(3.0) is None  # the same spike continues
    assert detector.update(2.5) is None
    assert detector.count == 1

    assert detector.update(1.0) is None
    assert detector.update(2.0) == 1.0  # a new spike after recovery
    assert detector.count == 2

    restored = train.SpikeDetector(factor=1.5, window=50, min_history=20)
    restored.load_state_dict(detector.state_dict())
    assert restored.update(3.0) is None  # still inside the second spike
    assert restored.count == 2


def test_spike_detector_window_limits_history():
    detector = train.SpikeDetector(factor=1.3, window=5, min_history=3)
    for loss in (10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0, 1.0):
        detector.update(loss)
    assert detector.history == [1.0] * 5
    assert detector.update(2.0) == 1.0  # the old level of 10 has left the window


# -----------------------------------------------------------------------------
# Checkpoints

def test_checkpoint_loads_with_weights_only(tiny_run):
    ckpt = torch.load(tiny_run / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["iter"] == 30
    assert ckpt["model_config"]["n_layer"] == 1
    for key in ("model", "optimizer", "sampler", "spikes", "rng", "best_val_loss", "scaler"):
        assert key in ckpt


def test_model_from_checkpoint_rebuilds_model(tiny_run, data_dir):
    ckpt = train.load_checkpoint(tiny_run / "ckpt.pt")
    rebuilt = train.model_from_checkpoint(ckpt)
    assert rebuilt.config == GPTConfig.from_dict(ckpt["model_config"])
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, ckpt["model"][key])

    # Scoring the same fixed validation windows as the run reproduces its last val loss.
    val = train.TokenFile(data_dir / "val.bin", read_json(data_dir / "meta.json"), "val")
    starts = train.fixed_windows(val.num_tokens, 32, 1 * 8)  # eval_iters x batch_size windows
    val_loss = train.estimate_loss(rebuilt, val, starts, 32, 8, "cpu", contextlib.nullcontext())
    assert val_loss == pytest.approx(ckpt["val_loss"], abs=1e-6)
    assert ckpt["val_loss"] == events(read_log(tiny_run), "eval")[-1]["val_loss"]


def test_compiled_state_dict_round_trip(tiny_run, tmp_path):
    ckpt = train.load_checkpoint(tiny_run / "ckpt.pt")
    source = train.model_from_checkpoint(ckpt)
    # torch.compile compiles at the first call, so this state_dict has the real _orig_mod. prefix at no cost.
    prefixed = torch.compile(source).state_dict()
    assert all(k.startswith("_orig_mod.") for k in prefixed)

    # saved from a compiled model, loaded into a plain one (through a weights_only checkpoint)
    path = tmp_path / "compiled.pt"
    train.save_checkpoint(path, {**ckpt, "model": prefixed})
    plain = train.model_from_checkpoint(train.load_checkpoint(path))
    assert max_abs_diff(plain.state_dict(), source.state_dict()) == 0.0

    # saved from a plain model, loaded into a compiled one
    target = GPT(GPTConfig.from_dict(ckpt["model_config"]))
    compiled = torch.compile(target)
    compiled._orig_mod.load_state_dict(train.clean_state_dict(source.state_dict()))
    assert max_abs_diff(train.clean_state_dict(compiled.state_dict()), source.state_dict()) == 0.0
    compiled.load_state_dict(prefixed)  # a prefixed state dict loads into the compiled module itself

    # DDP's module. prefix, also stacked on _orig_mod.
    wrapped = {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()}
    assert train.clean_state_dict(wrapped).keys() == source.state_dict().keys()


def test_checkpoint_without_new_fields_loads(tiny_run):
    ckpt = train.load_checkpoint(tiny_run / "ckpt.pt")
    for field in NEWER_MODEL_FIELDS:
        del ckpt["model_config"][field]

    rebuilt = train.model_from_checkpoint(ckpt)
    defaults = GPTConfig()
    for field in NEWER_MODEL_FIELDS:
        assert getattr(rebuilt.config, field) == getattr(defaults, field)
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, ckpt["model"][key])


# -----------------------------------------------------------------------------
# Invalid settings and data

def test_missing_data_dir_names_prepare_data(tmp_path, capsys):
    assert train.main([*TINY_FLAGS, "--data_dir", str(tmp_path / "missing"), "--out_dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "prepare_data.py" in err
    assert str(tmp_path / "missing") in err


def test_missing_token_file_names_prepare_data(tmp_path, data_dir, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(data_dir, partial)
    (partial / "train.bin").unlink()

    assert train.main(run_flags(partial, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "prepare_data.py" in err
    assert str(partial / "train.bin") in err


def test_short_val_split_fails(tmp_path, capsys):
    short = write_data_dir(tmp_path / "short", val_tokens=20)

    assert train.main(run_flags(short, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert str(short / "val.bin") in err
    assert "20 tokens" in err
    assert "block_size + 1 = 33" in err


@pytest.mark.parametrize("fraction, message", [
    ("1.5", "outside [0, 1]"),
    ("nan", "outside [0, 1]"),
    ("0.01", "the smallest fraction that rotates 2 channels is 2/64"),
])
def test_invalid_rope_fraction(tmp_path, data_dir, capsys, fraction, message):
    assert train.main(run_flags(data_dir, tmp_path / "out", fractions=(fraction,))) == 1
    err = capsys.readouterr().err
    assert "--rope_fraction" in err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_compile_failure_stops_before_training(tmp_path, data_dir, monkeypatch, capsys):
    class BrokenCompiled(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("backend exploded")

    monkeypatch.setattr(torch, "compile", lambda module, *args, **kwargs: BrokenCompiled())
    out_dir = tmp_path / "out"

    assert train.main([*run_flags(data_dir, out_dir), "--compile"]) == 1
    err = capsys.readouterr().err
    assert "--no-compile" in err
    assert "backend exploded" in err
    assert not out_dir.exists()  # nothing written: training never started


def test_tokenizer_checked_before_training(tmp_path, data_dir, capsys, monkeypatch):
    # A GPT-2 vocabulary that cannot be loaded must stop the sweep before step 1, not at the sample.
    def unavailable(meta):
        raise RuntimeError("could not load the GPT-2 BPE vocabulary; set TIKTOKEN_CACHE_DIR")

    monkeypatch.setattr(train, "decoder_from_meta", unavailable)
    assert train.main([*run_flags(data_dir, tmp_path / "out"), "--sample_tokens", "20"]) == 1
    assert "--sample_tokens 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert train.main([*run_flags(data_dir, tmp_path / "out"), "--sample_tokens", "0"]) == 0
