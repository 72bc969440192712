"""Training-step benchmark: steps/s, tokens/s, TFLOP/s, MFU and peak memory of `train_step` per
backend, eager and compiled, beside the host-pipeline baseline; rows go to train.csv.

Configs: A on CPU (p = 29, n_id 64, depth 2, n_embd 128, 4 heads, batch 64), the paper's sizes on
CUDA (n_id 512, n_embd 512, batch 1024, depth 2 / 4 / 6). Providers: "reference", "fused" (CUDA
only), each also "-compiled", and "host-pipeline" (the reference model fed by fastgrok.bench.hostpipe:
batches materialised on the host, a DataLoader, a copy and a sync every step). The fused providers
run what the registry routes for the device (backends.ROUTES: on CUDA the reference embedding) and
their rows name the routed ops ("fused-compiled (embedding: reference)"); "fused-kernels-compiled"
asks for every kernel by name, so nothing is routed (the A/B that keeps a route honest). A step is timed
the way the trainer runs it: windows of consecutive steps with one device sync per window (the
host pipeline syncs every step by construction). FLOPs per step: those a step executes
(fastgrok.trainer.train_flops_per_step, the last block at the loss positions only) for TFLOP/s and MFU %;
"MFU % (full model)" counts every position of every block (full_model_flops_per_step), as nanoGPT would.

Under torchrun (`torchrun --nproc_per_node=W -m fastgrok bench train`) every rank runs the steps as
DDP with the config's batch as the global batch; rank 0 times them and records the rows, under the
provider names with "-ddpW" appended (tokens/s and TFLOP/s count all ranks, MFU is of W GPUs). With
one rank (`--nproc_per_node=1`) each provider is also timed plain just before, in the same process:
`reference-ddp1` against `reference` is DDP's own cost.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed
from ..backends import kernels_run_on
from ..config import Config
from ..envinfo import peak_flops
from ..trainer import build, full_model_flops_per_step, train_flops_per_step, train_step
from .core import TOY, Recorder, Timing, row, time_windows
from .hostpipe import HostPipeline, attach, host_train_step

CONFIG_A = dict(p=29, n_pl=16, depth=2, n_embd=128, n_head=4, batch_size=64, n_shots=32)
GPU_CONFIGS = {"paper-d2": "paper", "paper-d4": "paper-d4", "paper-d6": "paper-d6"}


@dataclass(frozen=True)
class Provider:
    name: str
    backend: str      # "reference" | "fused"
    compiled: bool
    host: bool        # batches from the host pipeline
    kernels: bool = False  # every fused op as its kernel: per-op "fused", so nothing is routed (backends.ROUTES)


PROVIDERS = (Provider("reference", "reference", False, False), Provider("reference-compiled", "reference", True, False),
             Provider("fused", "fused", False, False), Provider("fused-compiled", "fused", True, False),
             Provider("host-pipeline", "reference", False, True),
             Provider("host-pipeline-compiled", "reference", True, True),
             Provider("fused-kernels-compiled", "fused", True, False, kernels=True))


def provider_config(cfg: Config, prov: Provider) -> Config:
    """The config a provider trains: its backend (every op named "fused" for `kernels`), compiled by bench_step."""
    over = dict(attention="fused", embedding="fused", batchgen="fused") if prov.kernels else {}
    return cfg.override(backend=prov.backend, compile="off", **over)


def provider_label(name: str, routed: tuple[tuple[str, str], ...]) -> str:
    """The provider a row records: the name, plus the ops the registry routed off their kernel, so a table
    says which path ran ("fused-compiled (embedding: reference)")."""
    return f"{name} ({', '.join(f'{op}: reference' for op, _ in routed)})" if routed else name


def train_configs(device: torch.device, quick: bool, names: tuple[str, ...] | None = None,
            batch_sizes: tuple[int, ...] | None = None, toy: bool = False) -> dict[str, Config]:
    """Config A on CPU; the paper's depth 2 / 4 / 6 on CUDA (depth 2 only with quick), or those `names`;
    each at its batch (1024) or at every one of `batch_sizes` (named "<config> B<batch>" off 1024).
    toy: the toy model on any device (the gpu_check rehearsal; names are ignored and batch sizes scaled
    by TOY's batch / 1024). The first is the main one."""
    if toy:
        base = {"toy": Config.preset("tiny", **TOY, device=str(device))}
    elif device.type != "cuda":
        base = {"A": Config.preset("paper", **CONFIG_A, device=str(device))}
    else:
        chosen = names or (("paper-d2",) if quick else tuple(GPU_CONFIGS))
        for n in chosen:
            if n not in GPU_CONFIGS:
                raise ValueError(f"train config {n!r} is not one of {', '.join(GPU_CONFIGS)}")
        base = {n: Config.preset(GPU_CONFIGS[n], device=str(device)) for n in chosen}
    if not batch_sizes:
        return base
    out = {}
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"batch size {b!r} must be a positive int")
        for n, cfg in base.items():
            if toy:  # the paper's batches scaled to the toy's: 1024 → TOY's batch
                b = max(1, b * TOY["batch_size"] // 1024)
            out[n if b == cfg.train.batch_size else f"{n} B{b}"] = cfg.override(batch_size=b)
    return out


def schedule(device: torch.device, quick: bool, compiled: bool) -> tuple[int, int, int]:
    """(warm-up steps, windows, steps per window); compiled runs warm up longer (compilation, autotuning)."""
    if quick:
        return (3 if compiled else 1), 2, 1
    if device.type == "cuda":
        return (10 if compiled else 5), 5, 10
    return (6 if compiled else 3), 5, 6


def bench_step(cfg: Config, name: str, prov: Provider, device: torch.device, quick: bool,
               compile_backend: str = "inductor", dist: distributed.Dist = distributed.SINGLE) -> list[dict]:
    """Rows of one (config, provider): ms, steps/s, tokens/s, TFLOP/s, MFU % (known GPU peak), peak MiB (CUDA).

    Compiled providers compile the model as the trainer does (`torch.compile(model)`), with `compile_backend`;
    under DDP (`dist`) the model, compiled or not, is then wrapped, as the trainer does."""
    cfg = provider_config(cfg, prov)
    sess = build(cfg)
    if prov.compiled:
        torch._dynamo.reset()  # a fresh cache per model: no recompile limit reached, no silent eager fallback
        sess.fwd = torch.compile(sess.model, backend=compile_backend)
    if dist.enabled:  # DDP: compile, then wrap; this rank's rows of the global batch
        dist.check_batch(cfg.train.batch_size)
        sess.fwd, sess.dist = dist.wrap(sess.fwd, sess.device), dist
    if prov.host:
        sess = attach(sess, HostPipeline(cfg, sess.tasks, device))
        step = lambda i: host_train_step(sess, i)  # noqa: E731
    else:
        step = lambda i: train_step(sess, i)  # noqa: E731
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup, windows, per_window = schedule(device, quick, prov.compiled)
    t = Timing.of(time_windows(step, device, warmup=warmup, windows=windows, per_window=per_window))
    tokens = cfg.train.batch_size * (cfg.task.seq_len - 1)
    flops = train_flops_per_step(cfg)
    name_ = f"{prov.name}-ddp{dist.world_size}" if dist.enabled else prov.name
    provider = provider_label(name_, tuple((op, why) for op, why in sess.ops.routed))
    r = lambda value, unit, scale=1.0: row("train_step", provider, "step", "config", name, value, unit,  # noqa: E731
                                           device, scale)
    out = [r(t, "ms", 1e3), r(t.rate(1.0), "steps/s"), r(t.rate(tokens), "tokens/s"), r(t.rate(flops / 1e12), "TFLOP/s")]
    peak = (peak_flops(device) or 0) * dist.world_size or None  # DDP: W GPUs
    if peak:
        out.append(r(t.rate(100 * flops / peak), "MFU %"))
        out.append(r(t.rate(100 * full_model_flops_per_step(cfg) / peak), "MFU % (full model)"))
    if device.type == "cuda":
        mib = torch.cuda.max_memory_allocated(device) / 2**20
        out.append(r(Timing(mib, mib, mib), "peak MiB"))
    return out


def run(device: torch.device, rec: Recorder, *, quick: bool = False, compile: str = "main",
        providers: tuple[str, ...] | None = None, configs: tuple[str, ...] | None = None,
        batch_sizes: tuple[int, ...] | None = None, toy: bool = False, compile_backend: str = "inductor") -> None:
    """Every config × provider; compile: "all" configs, "main" (the first config) or "off".

    configs / batch_sizes pick the CUDA configs and batches (see `configs`); toy runs the toy model, and
    the fused providers too where Triton's interpreter is on (a rehearsal: the timings mean nothing)."""
    dist = distributed.current()  # under torchrun: DDP over every rank
    by_name = {p.name: p for p in PROVIDERS}
    if providers is not None and (unknown := set(providers) - set(by_name)):
        raise ValueError(f"unknown train provider(s) {', '.join(sorted(unknown))}; providers: {', '.join(by_name)}")
    chosen = list(PROVIDERS) if providers is None else [by_name[n] for n in providers]  # in the order given
    if dist.enabled and any(p.host for p in chosen):
        rec.note("train: skipped host-pipeline providers under torchrun: the host loader draws whole batches")
        chosen = [p for p in chosen if not p.host]
    fused_here = device.type == "cuda" or (toy and kernels_run_on(device))
    if not fused_here and any(p.backend == "fused" for p in chosen):
        rec.note("train: skipped fused providers: the fused kernels are benchmarked on CUDA only")
        chosen = [p for p in chosen if p.backend != "fused"]
    cfgs = train_configs(device, quick, configs, batch_sizes, toy)
    for name, cfg in cfgs.items():
        rec.log(f"train_step {name}: {train_flops_per_step(cfg) / 1e9:.1f} GFLOP/step")
    if dist.enabled:
        rec.log(f"train_step: DDP over {dist.world_size} ranks ({dist.backend}); the config's batch is the "
                "global batch")
    # a 1-rank torchrun run times plain steps right before the DDP ones: DDP's own cost, same process
    modes = [distributed.SINGLE, dist] if dist.enabled and dist.world_size == 1 else [dist]
    # eager everywhere first, compiled last: a run cut short (gpu_check's time limit) keeps the core rows
    plan = [(name, cfg, p, d) for p in chosen if not p.compiled for name, cfg in cfgs.items() for d in modes]
    if compile != "off":
        plan += [(name, cfg, p, d) for i, (name, cfg) in enumerate(cfgs.items()) if compile == "all" or i == 0
                 for p in chosen if p.compiled for d in modes]
    for name, cfg, prov, d in plan:
        try:
            rec.add(bench_step(cfg, name, prov, device, quick or toy, compile_backend, d))
        except Exception as e:  # a failing backend must not end the run
            if dist.enabled:  # … except under DDP, where the other ranks would wait for this one
                raise
            rec.note(f"train: {name} {prov.name} failed: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
