"""
Train GPTs with full, partial and no RoPE on the same data, one run after another: a small-scale
reproduction of "Fractional Rotation, Full Potential?" (arXiv 2603.11611, called "the paper" below).

    python prepare_data.py                                   # data/shakespeare_char
    python train.py --rope_fraction 1 0.1 0                  # CPU preset, a few minutes a run
    python train.py --preset gpu --rope_fraction 1 0.1 0     # nanoGPT's "baby GPT" size
    torchrun --standalone --nproc_per_node=4 train.py --preset gpu --grad_accum 4
    python plot.py out/shakespeare_char

Every run of a sweep shares the seed, the initial weights (shapes do not depend on rope_fraction),
the training batches and the validation windows, so its curves differ only by position handling.
Each run writes <out_dir>/<run_name>/: config.json, log.jsonl (one JSON event a line, starting with
a header that reproduces the run), ckpt.pt (written atomically) and summary.json.

Exit codes: 0 all runs finished, 1 invalid settings or data, 3 at least one run diverged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GPT, GPTConfig, rotary_dims
from prepare_data import decoder_from_meta, load_meta

# Settings that differ between the two presets. Both keep head_dim = 64, so 10% means 6 channels,
# the paper's setting. cpu: a few minutes a run on 2 cores; gpu: nanoGPT's "baby GPT" (6 x 6 x 384).
PRESETS = {
    "cpu": dict(n_layer=4, n_head=2, n_embd=128, block_size=128, batch_size=32, grad_accum=1,
                max_iters=600, lr=2e-3, min_lr=2e-4, eval_interval=100, eval_iters=10),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, grad_accum=1,
                max_iters=5000, lr=1e-3, min_lr=1e-4, eval_interval=250, eval_iters=20),
}
MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "rope_base", "qk_norm",
               "parallel_residual", "arch", "pos_emb", "tie_embeddings", "dropout")
# Validation and train-loss windows come from a generator with this fixed seed, so every run and
# every --seed is scored on the same text.
EVAL_WINDOW_SEED = 0


class RunError(Exception):
    """Invalid settings or data; main() prints the message and exits with status 1."""


# -----------------------------------------------------------------------------
# Command line

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("runs")
    g.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="size and schedule defaults that the flags below override (default: cpu)")
    g.add_argument("--rope_fraction", type=float, nargs="+", default=[1.0, 0.1, 0.0], metavar="F",
                   help="share of each head's channels to rotate, one run per value; 0 is NoPE "
                        "(default: 1 0.1 0)")
    g.add_argument("--seed", type=int, nargs="+", default=[1337], metavar="S",
                   help="random seed for weights and batches, one run per seed and fraction (default: 1337)")
    g.add_argument("--data_dir", default="data/shakespeare_char",
                   help="folder with train.bin, val.bin and meta.json from prepare_data.py "
                        "(default: data/shakespeare_char)")
    g.add_argument("--out_dir", default=None,
                   help="folder for run directories (default: out/<dataset from meta.json>)")
    g.add_argument("--resume", action="store_true",
                   help="continue each run from its ckpt.pt; model settings come from the checkpoint")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in run directories that already hold a checkpoint")

    g = p.add_argument_group("model (defaults from --preset)")
    g.add_argument("--n_layer", type=int, help="transformer blocks (cpu 4, gpu 6)")
    g.add_argument("--n_head", type=int, help="attention heads (cpu 2, gpu 6)")
    g.add_argument("--n_embd", type=int, help="model width; head_dim = n_embd / n_head (cpu 128, gpu 384)")
    g.add_argument("--block_size", type=int, help="training context length in tokens (cpu 128, gpu 256)")
    g.add_argument("--rope_base", type=float, help="RoPE base for the frequencies (default 10000)")
    g.add_argument("--qk_norm", action=argparse.BooleanOptionalAction,
                   help="RMSNorm on q and k per head, before RoPE (default off)")
    g.add_argument("--parallel_residual", action=argparse.BooleanOptionalAction,
                   help="Pythia-style block x + attn(n1(x)) + mlp(n2(x)) (default off: sequential)")
    g.add_argument("--arch", choices=["llama", "gpt2"],
                   help="llama: RMSNorm + SwiGLU; gpt2: LayerNorm + GELU MLP (default llama)")
    g.add_argument("--pos_emb", choices=["none", "learned"],
                   help="learned absolute position embeddings, usually with --rope_fraction 0 (default none)")
    g.add_argument("--tie_embeddings", action=argparse.BooleanOptionalAction,
                   help="share the input embedding and output weights (default off)")
    g.add_argument("--dropout", type=float, help="dropout probability (default 0)")

    g = p.add_argument_group("optimisation (defaults from --preset)")
    g.add_argument("--batch_size", type=int, help="sequences per micro-batch and process (cpu 32, gpu 64)")
    g.add_argument("--grad_accum", type=int,
                   help="micro-batches per optimizer step, summed over all processes (default 1)")
    g.add_argument("--max_iters", type=int, help="optimizer steps (cpu 600, gpu 5000)")
    g.add_argument("--lr", type=float, help="peak learning rate (cpu 2e-3, gpu 1e-3)")
    g.add_argument("--min_lr", type=float, help="learning rate at the end of the cosine decay (cpu 2e-4, gpu 1e-4)")
    g.add_argument("--warmup_iters", type=int, help="linear warmup steps (default 5%% of max_iters)")
    g.add_argument("--weight_decay", type=float, default=0.1,
                   help="AdamW weight decay on matrices only (default 0.1)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default 0.9)")
    g.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2 (default 0.95)")
    g.add_argument("--grad_clip", type=float, default=1.0,
                   help="clip the global gradient norm to this value; 0 disables (default 1.0)")

    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval_interval", type=int, help="steps between evaluations and checkpoints (cpu 100, gpu 250)")
    g.add_argument("--eval_iters", type=int,
                   help="evaluation batches; eval_iters x batch_size fixed windows per split (cpu 10, gpu 20)")
    g.add_argument("--log_interval", type=int, default=10, help="steps between printed lines (default 10)")
    g.add_argument("--eval_block_sizes", type=int, nargs="*", default=[], metavar="N",
                   help="after training, also evaluate val loss at these context lengths, e.g. 256 512")
    g.add_argument("--sample_tokens", type=int, default=200,
                   help="tokens to sample at the end of each run; 0 skips sampling (default 200)")
    g.add_argument("--spike_factor", type=float, default=1.3,
                   help="a step is a loss spike when its loss exceeds this factor times the median "
                        "of the previous 50 losses; judged from step 21 on (default 1.3)")

    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="auto: bfloat16 autocast on CUDA where supported, else float16 with a gradient "
                        "scaler; float32 on CPU")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on for CUDA, off elsewhere)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    # Record which flags were given explicitly (a second parse with every default suppressed), so
    # that --resume can tell a contradiction or a deliberate change from a default.
    for action in p._actions:
        action.default = argparse.SUPPRESS
    args.explicit = sorted(vars(p.parse_args(argv)))
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    model_defaults = GPTConfig()
    for key in MODEL_FLAGS:
        if getattr(args, key) is None:
            setattr(args, key, getattr(model_defaults, key))
    if args.warmup_iters is None:
        args.warmup_iters = max(1, round(0.05 * args.max_iters))
    validate_args(args)
    return args


def validate_args(args: argparse.Namespace) -> None:
    """Raise RunError naming the flag when a setting is out of range."""
    # sizes and counts
    positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "max_iters",
                "eval_interval", "eval_iters", "log_interval")
    for key in positive:
        if getattr(args, key) < 1:
            raise RunError(f"--{key} {getattr(args, key)} is invalid; it must be at least 1")

    # head shape and rotated channels
    if args.n_embd % args.n_head:
        raise RunError(f"--n_embd {args.n_embd} is not divisible by --n_head {args.n_head}")
    for f in args.rope_fraction:
        try:
            rotary_dims(args.n_embd // args.n_head, f)
        except ValueError as e:
            raise RunError(f"--rope_fraction: {e}") from None

    # optimisation and model numbers
    if not (args.lr > 0 and 0 <= args.min_lr <= args.lr):
        raise RunError(f"--lr {args.lr} and --min_lr {args.min_lr} are invalid; need 0 <= min_lr <= lr, lr > 0")
    if not 0 <= args.warmup_iters <= args.max_iters:
        raise RunError(f"--warmup_iters {args.warmup_iters} must be between 0 and --max_iters {args.max_iters}")
    if not 0 <= args.dropout < 1:
        raise RunError(f"--dropout {args.dropout} must be in [0, 1)")
    if not args.spike_factor > 1 or math.isinf(args.spike_factor):
        raise RunError(f"--spike_factor {args.spike_factor} must be a finite number > 1")
    if not math.isfinite(args.lr):
        raise RunError(f"--lr {args.lr} must be finite")
    if not (args.rope_base > 0 and math.isfinite(args.rope_base)):
        raise RunError(f"--rope_base {args.rope_base} is invalid; it must be a finite number > 0 (usually 10000)")
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(args, key) < 1:
            raise RunError(f"--{key} {getattr(args, key)} must be in [0, 1)")
    for key in ("weight_decay", "grad_clip"):
        if not (getattr(args, key) >= 0 and math.isfinite(getattr(args, key))):
            raise RunError(f"--{key} {getattr(args, key)} must be a finite number >= 0")

    # evaluation, sampling and run identity
    if args.sample_tokens < 0:
        raise RunError(f"--sample_tokens {args.sample_tokens} must be >= 0; 0 skips sampling")
    for seed in args.seed:
        if not 0 <= seed < 2 ** 63:
            raise RunError(f"--seed {seed} is invalid; use a non-negative integer below 2**63")
    if args.resume and args.overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one of them")
    for n in args.eval_block_sizes:
        if n < 1:
            raise RunError(f"--eval_block_sizes {n} is invalid; give context lengths in tokens")
    names = [run_name(args, f, args.seed[0]) for f in args.rope_fraction]
    if len(set(names)) < len(names):
        raise RunError(f"--rope_fraction {args.rope_fraction} gives duplicate run names {names}; "
                       f"fractions must differ in the first two decimals")
    if len(set(args.seed)) < len(args.seed):
        raise RunError(f"--seed {args.seed} repeats a seed")


def run_group(args: argparse.Namespace, fraction: float) -> str:
    """Name of the runs that differ only by seed, e.g. rope0.10-qknorm-par."""
    name = f"rope{fraction:.2f}"
    name += "-qknorm" if args.qk_norm else ""
    name += "-par" if args.parallel_residual else ""
    name += "-gpt2" if args.arch == "gpt2" else ""
    name += "-learnedpos" if args.pos_emb == "learned" else ""
    return name


def run_name(args: argparse.Namespace, fraction: float, seed: int) -> str:
    return f"{run_group(args, fraction)}-s{seed}"


# -----------------------------------------------------------------------------
# Small helpers: files, versions, devices

def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint so that path is always a complete one: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    """Load a checkpoint written by save_checkpoint; plain tensors and containers only.

    Raises RunError naming the file when it is not a readable checkpoint.
    """
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch.load raises pickle, zip and runtime errors for damaged files
        raise RunError(f"{path} is not a readable checkpoint ({type(e).__name__}); restore it or start "
                       f"the run again with --overwrite") from None
    missing = [k for k in ("model", "optimizer", "model_config", "iter") if k not in ckpt]
    if not isinstance(ckpt, dict) or missing:
        raise RunError(f"{path} lacks {missing}; it was not written by train.py")
    return ckpt


def clean_state_dict(state_dict: dict) -> dict:
    """Strip the prefixes that torch.compile (_orig_mod.) and DDP (module.) add to parameter names."""
    cleaned = {}
    for key, value in state_dict.items():
        # in any order and nesting: DDP around a compiled model gives module._orig_mod.
        while key.startswith(("_orig_mod.", "module.")):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def model_from_checkpoint(ckpt: dict, device: str = "cpu") -> GPT:
    """Rebuild a GPT from a checkpoint's model settings and weights, whatever wrapped it when saved."""
    model = GPT(GPTConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(clean_state_dict(ckpt["model"]))
    return model.to(device)


def library_versions() -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("tiktoken", "matplotlib"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


def git_commit() -> Optional[str]:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def pick_device(requested: str) -> str:
    valid = requested in ("auto", "cpu", "mps", "cuda") or (requested.startswith("cuda:") and requested[5:].isdigit())
    if not valid:
        raise RunError(f"--device {requested} is invalid; use auto, cpu, cuda, cuda:N or mps")
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise RunError(f"--device {requested} requested but CUDA is not available; use --device cpu")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise RunError("--device mps requested but MPS is not available; use --device cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device_type: str) -> str:
    if requested != "auto":
        if device_type == "cpu" and requested == "float16":
            raise RunError("--dtype float16 is not supported on CPU; use float32 or bfloat16")
        return requested
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device_type == "mps":
        # NOTE: MPS autocast has not been run by this project; pass --dtype float32 if it fails.
        return "bfloat16" if torch.amp.autocast_mode.is_autocast_available("mps") else "float32"
    return "float32"


# -----------------------------------------------------------------------------
# Data

class TokenFile:
    """One split's token ids on disk, read through a fresh memmap for each batch.

    Reopening the memmap per batch keeps the pages that were read from piling up as resident
    memory over a long run (the same trick as nanoGPT).
    """

    def __init__(self, path: Path, meta: dict, split: str):
        if not path.is_file():
            raise RunError(f"{path} not found; run: python prepare_data.py --data_dir {path.parent}")
        self.path, self.dtype = path, np.dtype(meta["dtype"])
        size = path.stat().st_size
        self.num_tokens = size // self.dtype.itemsize
        expected = meta.get(f"{split}_tokens")
        if size % self.dtype.itemsize or (expected is not None and self.num_tokens != expected):
            raise RunError(f"{path} has {size} bytes, but meta.json expects {expected} {meta['dtype']} tokens; "
                           f"the data is truncated or from another run of prepare_data.py: run it again")
        if self.num_tokens:
            # An id outside the vocabulary would index past the embedding table, so check them all once.
            top = int(np.max(np.memmap(path, dtype=self.dtype, mode="r")))
            if top >= meta["vocab_size"]:
                raise RunError(f"{path} contains token id {top}, but meta.json has vocab_size "
                               f"{meta['vocab_size']}; run prepare_data.py again for {path.parent}")

    def windows(self, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return inputs and next-token targets, each (len(starts), length) int64."""
        data = np.memmap(self.path, dtype=self.dtype, mode="r")
        rows = [np.asarray(data[s:s + length + 1], dtype=np.int64) for s in starts.tolist()]
        both = torch.from_numpy(np.stack(rows))
        return both[:, :-1].contiguous(), both[:, 1:].contiguous()


def fixed_windows(num_tokens: int, length: int, count: int) -> torch.Tensor:
    """Start offsets of `count` windows of `length` + 1 tokens, the same for every run and seed."""
    g = torch.Generator().manual_seed(EVAL_WINDOW_SEED)
    return torch.randint(0, num_tokens - length, (count,), generator=g)


class BatchSampler:
    """Sampler of the random training windows, with a generator of its own.

    One optimizer step draws batch_size x grad_accum windows (the global batch), whatever the
    number of processes. Micro-step j of rank k takes chunk j * world_size + k. So one step of
    batch 8, four micro-steps of batch 2 and 2 processes x 2 micro-steps all see the same windows.
    """

    def __init__(self, seed: int, num_tokens: int, block_size: int, batch_size: int, grad_accum: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.high, self.batch_size, self.grad_accum = num_tokens - block_size, batch_size, grad_accum

    def next_step(self) -> list[torch.Tensor]:
        starts = torch.randint(0, self.high, (self.batch_size * self.grad_accum,), generator=self.generator)
        return list(starts.split(self.batch_size))


def check_split_length(split: TokenFile, block_size: int, name: str) -> None:
    if split.num_tokens < block_size + 1:
        raise RunError(f"the {name} split {split.path} has {split.num_tokens} tokens, fewer than "
                       f"block_size + 1 = {block_size + 1}; lower --block_size or prepare more data")


# -----------------------------------------------------------------------------
# Training-loop helpers

def lr_at(it: int, args: argparse.Namespace) -> float:
    """Linear warmup to args.lr over warmup_iters steps, then cosine decay to min_lr at max_iters."""
    if it < args.warmup_iters:
        return args.lr * (it + 1) / (args.warmup_iters + 1)
    span = max(1, args.max_iters - args.warmup_iters)
    progress = min(1.0, (it - args.warmup_iters) / span)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)


class SpikeDetector:
    """Counts loss spikes: a step whose loss exceeds `factor` x the median of the previous
    `window` losses (judged once at least `min_history` are known). Consecutive spiking steps
    are one spike, so a single blow-up that takes 30 steps to recover counts once."""

    def __init__(self, factor: float, window: int = 50, min_history: int = 20):
        self.factor, self.window, self.min_history = factor, window, min_history
        self.history: list[float] = []
        self.count = 0
        self.in_spike = False

    def update(self, loss: float) -> Optional[float]:
        """Record a loss; return the reference level when this step starts a new spike."""
        reference = statistics.median(self.history) if len(self.history) >= self.min_history else None
        self.history = (self.history + [loss])[-self.window:]
        spiking = reference is not None and loss > self.factor * reference
        starts = spiking and not self.in_spike
        self.in_spike = spiking
        if starts:
            self.count += 1
            return reference
        return None

    def state_dict(self) -> dict:
        return {"history": list(self.history), "count": self.count, "in_spike": self.in_spike}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.count, self.in_spike = list(state["history"]), state["count"], state["in_spike"]


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, split: TokenFile, starts: torch.Tensor, length: int,
                  batch_size: int, device: str, autocast) -> float:
    """Mean next-token loss over fixed windows (every position of each window counts equally)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for chunk in starts.split(batch_size):
        x, y = split.windows(chunk, length)
        with autocast:
            _, loss = model(x.to(device), y.to(device), allow_long_context=length > model.config.block_size)
        total += loss.item() * len(chunk)
    model.train(was_training)
    return total / len(starts)


def rng_state() -> dict:
    """Capture every random state a run consumes, as plain tensors and lists (weights_only-safe)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Settings that --resume takes from the checkpoint unless the flag is given again, so that
# `train.py --resume` alone continues the run's own schedule.
RESUMED_FLAGS = ("batch_size", "grad_accum", "max_iters", "lr", "min_lr", "warmup_iters", "weight_decay",
                 "beta1", "beta2", "grad_clip", "eval_interval", "eval_iters", "spike_factor", "log_interval")


def read_status(summary_path: Path) -> Optional[str]:
    """Return the status in a summary.json, or None when the file is damaged."""
    try:
        return json.loads(summary_path.read_text(encoding="utf-8")).get("status")
    except (ValueError, AttributeError, OSError):
        return None


def resume_settings(args: argparse.Namespace, ckpt: dict) -> argparse.Namespace:
    """Return a copy of args with the checkpoint's training settings where no flag overrides them."""
    resumed = argparse.Namespace(**vars(args))
    for key in RESUMED_FLAGS:
        if key not in args.explicit and key in ckpt.get("settings", {}):
            setattr(resumed, key, ckpt["settings"][key])
    return resumed


def resolve_model_config(args: argparse.Namespace, fraction: float, vocab_size: int,
                         ckpt: Optional[dict]) -> GPTConfig:
    """Return the run's GPTConfig: from the flags, or on --resume from the checkpoint.

    Explicit flags that contradict the checkpoint raise RunError naming both values.
    """
    if ckpt is None:
        values = {k: getattr(args, k) for k in MODEL_FLAGS}
        return GPTConfig(vocab_size=vocab_size, rope_fraction=fraction, **values)
    config = GPTConfig.from_dict(ckpt["model_config"])
    requested = {k: getattr(args, k) for k in args.explicit if k in MODEL_FLAGS}
    requested["rope_fraction"] = fraction
    for key, value in requested.items():
        if getattr(config, key) != value:
            raise RunError(f"--{key} {value} contradicts the checkpoint's {key}={getattr(config, key)}; "
                           f"drop the flag to resume, or start a new run in another --out_dir")
    return config


# -----------------------------------------------------------------------------
# One run

class Run:
    """Training run of one rope fraction and one seed, with the sweep's shared settings."""

    def __init__(self, args: argparse.Namespace, fraction: float, seed: int, meta: dict, ctx: dict):
        self.args, self.fraction, self.seed, self.meta = args, fraction, seed, meta
        self.device, self.dtype = ctx["device"], ctx["dtype"]
        self.rank, self.world = ctx["rank"], ctx["world"]
        self.master = self.rank == 0
        self.name = run_name(args, fraction, seed)
        self.dir = Path(args.out_dir) / self.name
        self.log_path = self.dir / "log.jsonl"

    def print(self, line: str) -> None:
        if self.master:
            print(f"run={self.name} {line}", flush=True)

    def log(self, event: dict) -> None:
        if self.master:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")

    def trim_log_to_checkpoint(self, ckpt_iter: int) -> None:
        """Drop log lines written after the checkpoint, so a resumed log has each step once."""
        if not self.master or not self.log_path.exists():
            return
        keep_upto, covered_upto = 0, 0
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
        for i, line in enumerate(lines):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "checkpoint" and event.get("iter") == ckpt_iter:
                keep_upto = i + 1
            if event.get("iter", 0) <= ckpt_iter:
                covered_upto = i + 1
        # A kill after the checkpoint's rename but before its log line leaves no "checkpoint" line:
        # then keep the header and every line up to the last one about a step the checkpoint covers.
        kept = lines[:keep_upto or covered_upto]
        tmp = self.log_path.with_name("log.jsonl.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.log_path)

    def execute(self) -> str:
        """Train, evaluate and summarise; return the run's status ("finished" or "diverged")."""
        args, device = self.args, self.device
        device_type = "cuda" if device.startswith("cuda") else device
        ckpt_path = self.dir / "ckpt.pt"
        summary_path = self.dir / "summary.json"

        # ---- resume or start ----
        ckpt = None
        if args.resume and not self.dir.exists():
            # A sweep stopped before this run began: start it, so one --resume continues the sweep.
            self.print("message=\"no run directory yet; starting this run from step 0\"")
        elif args.resume:
            if not ckpt_path.exists():
                raise RunError(f"--resume: {ckpt_path} not found; run without --resume to start this run")
            if summary_path.exists() and read_status(summary_path) == "finished":
                note = " (--max_iters applies to new runs only: start one with another --out_dir to train longer)" \
                    if "max_iters" in args.explicit else ""
                self.print(f"status=finished message=\"run is finished; nothing to resume{note}\"")
                return "finished"
            ckpt = load_checkpoint(ckpt_path, device)
            vocab = ckpt["model_config"].get("vocab_size")
            if vocab != self.meta["vocab_size"]:
                raise RunError(f"--resume: {ckpt_path} was trained with vocab_size {vocab}, but "
                               f"{args.data_dir} has vocab_size {self.meta['vocab_size']}; pass the run's own --data_dir")
            self.args = args = resume_settings(args, ckpt)
        elif not args.overwrite:
            existing = [p.name for p in (ckpt_path, self.log_path, summary_path) if p.exists()]
            if existing:
                raise RunError(f"{self.dir} already contains {', '.join(existing)}; pass --resume to continue "
                               f"it, --overwrite to start again, or choose another --out_dir")

        config = resolve_model_config(args, self.fraction, self.meta["vocab_size"], ckpt)
        train_data = TokenFile(Path(args.data_dir) / "train.bin", self.meta, "train")
        val_data = TokenFile(Path(args.data_dir) / "val.bin", self.meta, "val")
        check_split_length(train_data, config.block_size, "train")
        check_split_length(val_data, config.block_size, "val")

        # ---- model, optimizer, data order: identical for every fraction with this seed ----
        seed_everything(self.seed)
        model = GPT(config).to(device)
        optimizer = model.configure_optimizer(args.lr, args.weight_decay, (args.beta1, args.beta2), device_type)
        scaler = torch.amp.GradScaler(device_type, enabled=self.dtype == "float16")
        sampler = BatchSampler(self.seed, train_data.num_tokens, config.block_size, args.batch_size, args.grad_accum)
        spikes = SpikeDetector(args.spike_factor)
        n_windows = args.eval_iters * args.batch_size
        val_starts = fixed_windows(val_data.num_tokens, config.block_size, n_windows)
        train_starts = fixed_windows(train_data.num_tokens, config.block_size, n_windows)
        start_iter, best_val, wall_before = 0, float("inf"), 0.0
        if ckpt is not None:
            model.load_state_dict(clean_state_dict(ckpt["model"]))
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            sampler.generator.set_state(ckpt["sampler"])
            spikes.load_state_dict(ckpt["spikes"])
            set_rng_state(ckpt["rng"])
            start_iter, best_val, wall_before = ckpt["iter"], ckpt["best_val_loss"], ckpt["wall_seconds"]
            self.trim_log_to_checkpoint(start_iter)

        autocast = (torch.autocast(device_type, dtype=getattr(torch, self.dtype))
                    if self.dtype != "float32" else nullcontext())
        raw_model = model
        if args.compile:
            model = torch.compile(model)
            self.probe_compile(model, config, device)
        if self.world > 1:
            model = DDP(model, device_ids=[int(device.split(":")[1])] if device_type == "cuda" else None)
        micro_steps = args.grad_accum // self.world
        tokens_per_step = args.batch_size * args.grad_accum * config.block_size

        # ---- run directory and the header that reproduces the run ----
        settings = {k: v for k, v in vars(args).items() if k != "explicit"}
        settings.update({k: getattr(config, k) for k in MODEL_FLAGS})  # the model actually built
        header = {"event": "header", "run_name": self.name, "group": run_group(args, self.fraction),
                  "settings": settings, "seed": self.seed, "model": config.to_dict(),
                  "rope_dims": config.rope_dims, "head_dim": config.head_dim,
                  "num_params": raw_model.num_params(), "dataset": self.meta.get("dataset"),
                  "versions": library_versions(), "device": device, "dtype": self.dtype,
                  "world_size": self.world, "git_commit": git_commit(), "argv": args.argv,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if self.master:
            self.dir.mkdir(parents=True, exist_ok=True)
            if ckpt is None:
                self.log_path.unlink(missing_ok=True)
                (self.dir / "summary.json").unlink(missing_ok=True)
                self.log(header)
            else:
                self.log({"event": "resume", "iter": start_iter, "time": header["time"]})
            write_json_atomic(self.dir / "config.json", {k: v for k, v in header.items() if k != "event"})
        r, hs = config.rope_dims, config.head_dim
        rope_bytes, full_bytes = raw_model.rope_cache_bytes(), raw_model.full_rope_cache_bytes()
        if not rope_bytes:
            saving = "no cache (NoPE)"
        elif rope_bytes == full_bytes:
            saving = "full RoPE"
        else:
            saving = f"{full_bytes / rope_bytes:.1f}x smaller"
        self.print(f"rope_dims={r}/{hs} params={raw_model.num_params()} device={device} dtype={self.dtype} "
                   f"cos_sin_bytes={rope_bytes} full_rope_bytes={full_bytes} saving=\"{saving}\" "
                   f"start_iter={start_iter}")

        def evaluate(it: int) -> float:
            nonlocal best_val
            val = estimate_loss(raw_model, val_data, val_starts, config.block_size, args.batch_size, device, autocast)
            trn = estimate_loss(raw_model, train_data, train_starts, config.block_size, args.batch_size, device, autocast)
            best_val = min(best_val, val)
            self.log({"event": "eval", "iter": it, "tokens": it * tokens_per_step, "train_loss": trn, "val_loss": val})
            self.print(f"iter={it} train_loss={trn:.4f} val_loss={val:.4f}")
            return val

        def checkpoint(it: int, val_loss: float, wall: float) -> None:
            if not self.master:
                return
            save_checkpoint(ckpt_path, {
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "model_config": config.to_dict(), "iter": it,
                "best_val_loss": best_val, "val_loss": val_loss, "wall_seconds": wall, "sampler": sampler.generator.get_state(),
                "spikes": spikes.state_dict(), "rng": rng_state(), "settings": settings, "seed": self.seed})
            self.log({"event": "checkpoint", "iter": it})

        # ---- training loop ----
        if ckpt is None:
            val_loss = evaluate(0)
        t_start = time.time()
        status, it = "finished", start_iter
        model.train()
        while it < args.max_iters:
            t0 = time.time()
            lr = lr_at(it, args)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # forward and backward over the micro-batches; DDP syncs gradients on the last one only
            chunks = sampler.next_step()
            loss_sum = torch.zeros((), device=device)
            for j in range(micro_steps):
                x, y = train_data.windows(chunks[j * self.world + self.rank], config.block_size)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = self.world == 1 or j == micro_steps - 1
                with (model.no_sync() if not sync else nullcontext()), autocast:
                    _, loss = model(x, y)
                    loss = loss / micro_steps
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
            if self.world > 1:
                dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            train_loss = loss_sum.item()

            # clip, then step; a non-finite loss or gradient ends the run before it touches the weights
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                raw_model.parameters(), args.grad_clip if args.grad_clip > 0 else float("inf")).item()
            if not math.isfinite(train_loss) or (not scaler.is_enabled() and not math.isfinite(grad_norm)):
                status = "diverged"
                self.log({"event": "train", "iter": it + 1, "loss": train_loss, "lr": lr,
                          "grad_norm": grad_norm, "tokens": (it + 1) * tokens_per_step, "ms": 0.0})
                kept = f"the last good checkpoint is kept in {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written"
                self.print(f"iter={it + 1} status=diverged loss={train_loss} grad_norm={grad_norm} "
                           f"message=\"non-finite loss; {kept}\"")
                break
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            it += 1

            # log, detect spikes, evaluate and checkpoint
            ms = (time.time() - t0) * 1000
            self.log({"event": "train", "iter": it, "loss": train_loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens": it * tokens_per_step, "ms": ms})
            reference = spikes.update(train_loss)
            if reference is not None:
                self.log({"event": "spike", "iter": it, "loss": train_loss, "reference": reference})
                self.print(f"iter={it} spike loss={train_loss:.4f} reference={reference:.4f}")
            if it % args.log_interval == 0:
                self.print(f"iter={it} loss={train_loss:.4f} lr={lr:.2e} grad_norm={grad_norm:.3f} ms={ms:.1f}")
            if it % args.eval_interval == 0 or it == args.max_iters:
                val_loss = evaluate(it)
                checkpoint(it, val_loss, wall_before + time.time() - t_start)

        wall = wall_before + time.time() - t_start
        if ckpt is not None and start_iter >= args.max_iters:
            # killed after the last checkpoint, before the summary (or resumed with a lower --max_iters)
            val_loss = ckpt["val_loss"]
        if status == "diverged":
            val_loss = float("nan")

        # ---- after training: long-context evaluation and a sample ----
        long_context = self.evaluate_long_context(raw_model, val_data, config, autocast) if status == "finished" else {}
        sample = self.sample(raw_model, config) if status == "finished" else ""

        summary = {"run_name": self.name, "group": run_group(args, self.fraction), "rope_fraction": self.fraction,
                   "rope_dims": r, "head_dim": hs, "n_head": config.n_head, "n_layer": config.n_layer,
                   "n_embd": config.n_embd, "block_size": config.block_size, "qk_norm": config.qk_norm,
                   "parallel_residual": config.parallel_residual, "arch": config.arch, "pos_emb": config.pos_emb,
                   "seed": self.seed, "dataset": self.meta.get("dataset"), "final_val_loss": val_loss,
                   "best_val_loss": best_val, "rope_cache_bytes": rope_bytes, "full_rope_cache_bytes": full_bytes,
                   "cache_bytes_per_value": 4, "iters": it, "tokens": it * tokens_per_step,
                   "wall_seconds": round(wall, 2), "status": status, "spikes": spikes.count,
                   "long_context": long_context, "sample": sample, "num_params": raw_model.num_params()}
        if self.master:
            write_json_atomic(summary_path, summary)
            self.log({"event": "end", "status": status, "iter": it, "wall_seconds": round(wall, 2)})
        self.print(f"status={status} iters={it} final_val_loss={val_loss:.4f} best_val_loss={best_val:.4f} "
                   f"spikes={spikes.count} wall_seconds={wall:.1f}")
        return status

    def probe_compile(self, model: torch.nn.Module, config: GPTConfig, device: str) -> None:
        """Compile with one forward and backward on a dummy batch, so a failure stops the run before training."""
        x = torch.zeros((self.args.batch_size, config.block_size), dtype=torch.long, device=device)
        rng = rng_state()  # dropout in the probe must not shift the run's random stream
        try:
            _, loss = model(x, x)
            loss.backward()
        except Exception as e:  # torch.compile raises many backend-specific error types
            raise RunError(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                           f"pass --no-compile to train without it") from None
        set_rng_state(rng)
        model.zero_grad(set_to_none=True)

    def evaluate_long_context(self, model: GPT, val_data: TokenFile, config: GPTConfig, autocast) -> dict:
        """Val loss at each --eval_block_sizes length; same token budget per length as the regular eval."""
        results = {}
        for length in self.args.eval_block_sizes:
            if config.pos_emb == "learned" and length > config.block_size:
                self.print(f"long_context={length} skipped message=\"learned position embeddings cannot "
                           f"extrapolate past block_size={config.block_size}\"")
                results[str(length)] = None
                continue
            if val_data.num_tokens < length + 1:
                self.print(f"long_context={length} skipped message=\"val split has {val_data.num_tokens} tokens\"")
                results[str(length)] = None
                continue
            count = max(8, self.args.eval_iters * self.args.batch_size * config.block_size // length)
            starts = fixed_windows(val_data.num_tokens, length, count)
            batch = max(1, self.args.batch_size * config.block_size // length)
            loss = estimate_loss(model, val_data, starts, length, batch, self.device, autocast)
            results[str(length)] = loss
            self.log({"event": "long_context", "block_size": length, "val_loss": loss, "windows": count})
            self.print(f"long_context={length} val_loss={loss:.4f} windows={count}")
        return results

    def sample(self, model: GPT, config: GPTConfig) -> str:
        if self.args.sample_tokens <= 0 or not self.master:
            return ""
        decode = decoder_from_meta(self.meta)
        start = self.meta.get("eot_token")
        if start is None:  # character vocabularies start from a newline when they have one
            vocab = self.meta.get("vocab") or []
            start = vocab.index("\n") if "\n" in vocab else 0
        g_state = torch.get_rng_state()
        torch.manual_seed(self.seed)
        idx = torch.tensor([[start]], dtype=torch.long, device=self.device)
        model.eval()
        out = model.generate(idx, self.args.sample_tokens, temperature=0.8, top_k=200)[0, 1:].tolist()
        torch.set_rng_state(g_state)
        text = decode(out)
        self.log({"event": "sample", "text": text})
        self.print("sample=" + json.dumps(text))
        return text


# -----------------------------------------------------------------------------
# Sweep

def setup_distributed(args: argparse.Namespace) -> dict:
    """Return device, dtype, rank and world size; joins the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(args.device)
    if world > 1:
        if args.grad_accum % world:
            raise RunError(f"--grad_accum {args.grad_accum} is not divisible by the {world} processes; "
                           f"use a multiple of {world}")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = pick_dtype(args.dtype, device_type)
    if args.compile is None:
        args.compile = device_type == "cuda"
    return {"device": device, "dtype": dtype, "rank": rank, "world": world}


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = parse_args(argv)
        meta = load_meta(args.data_dir)
        if args.out_dir is None:
            args.out_dir = str(Path("out") / meta.get("dataset", Path(args.data_dir).name))
        if args.sample_tokens > 0:
            try:  # load the tokenizer now, so a missing vocabulary fails before training, not after
                decoder_from_meta(meta)
            except RuntimeError as e:
                raise RunError(f"{e} (or pass --sample_tokens 0 to skip the end-of-run sample)") from None
        ctx = setup_distributed(args)
    except (RunError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    if ctx["rank"] == 0:
        print(f"sweep fractions={args.rope_fraction} seeds={args.seed} preset={args.preset} "
              f"device={ctx['device']} dtype={ctx['dtype']} compile={args.compile} world_size={ctx['world']} "
              f"torch={torch.__version__} out_dir={args.out_dir}", flush=True)
    statuses = {}
    try:
        for seed in args.seed:
            for fraction in args.rope_fraction:
                run = Run(args, fraction, seed, meta, ctx)
                statuses[run.name] = run.execute()
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; each run keeps its last checkpoint (every --eval_interval steps): rerun the "
              "same command with --resume to continue", file=sys.stderr)
        return 130
    except OSError as e:  # an unwritable --out_dir, a full disk, a directory where a file belongs
        print(f"error: {e.strerror or e} ({e.filename}); check --out_dir and --data_dir", file=sys.stderr)
        return 1
    finally:
        if ctx["world"] > 1 and dist.is_initialized():
            dist.destroy_process_group()

    diverged = [name for name, status in statuses.items() if status == "diverged"]
    if ctx["rank"] == 0:
        print(f"sweep_done runs={len(statuses)} diverged={diverged}", flush=True)
    return 3 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
