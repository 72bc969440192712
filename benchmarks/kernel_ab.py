"""A/B timing of the attention kernels' launch candidates (kernels/rope_attention.py CANDIDATES, issue #29)
against today's kernel ("v2") and the reference providers, in one GPU call of under 5 minutes.

    python benchmarks/kernel_ab.py [--budget 270] [--out bench_results] [--candidates v2,split-w4,...]
    python benchmarks/kernel_ab.py --dry-run      # the whole flow on the CPU, tiny shapes, Triton's interpreter

In this order, each part skipped (and said so) when the budget left is below its estimate:
1. attention at the paper's shape (B 1024, H 4, T 95, D 128, bf16): `reference`, `reference-compiled`,
   `sdpa-<backend>` (PyTorch's causal SDPA alone, held to one backend — cudnn, flash, efficient; math in a
   dry run — on q, k as they come, no RoPE: the library's attention core, a floor for any RoPE + SDPA route)
   and `fused-<candidate>` for each candidate, modes forward / backward / full (fastgrok.bench.kernels'
   inputs, timing and rows: ms, GB/s, TFLOP/s);
   each candidate also checked there (mode `check`, unit `err / allowed`): its output and dqkv against the
   reference in fp32, allowed twice the error of the reference in the working dtype plus a floor (the tests'
   2× rule), so a candidate that is fast but wrong in real bf16 math is named and never a finalist;
   then the finalists: v2, the default and the `--finalists` fastest others by their full (forward +
   backward) median there, among those whose check passed — the tile sweep's candidates earn the train
   step only by this measurement;
2. the depth-4 paper train step (`paper-d4`, fused, compiled once: the attention ops are opaque custom
   ops that read the active candidate when they run), `fused-compiled-<candidate>` per finalist, the
   first timed again last (mode `repeat`: the drift between two timings of one kernel);
3. the elementwise share's next step, measured before it is built: the MLP (c_fc → ReLU → c_proj at the
   paper's size, 1024 · 95 tokens, C 512, bf16) compiled as the model runs it (`mlp-compiled`: inductor
   saves the pre-activation and recomputes the ReLU in the backward) against c_fc + ReLU as one cuBLASLt GEMM
   with a ReLU epilogue (`mlp-epilogue-compiled`: torch._addmm_activation, h saved, the backward masks dh with
   it), modes forward / backward / full, and checked against fp32 like the attention candidates;
4. a T / head_dim sweep (T 32, 64, 128, 256 at D 128; D 32, 64 at T 95; B 1024) of the finalists and
   the eager reference (about 4 s per provider and point);
5. the reference-compiled train step at depth 4 (the figure the fused step must beat; gpu_check.sh's
   stage 3 measures it in the same lease), with what is left.
Rows append to OUT/kernels.csv and OUT/train.csv (the project's long format, the candidate named in
`provider`); `fastgrok bench merge --from OUT` brings them into bench_results/. A summary table ends
the output. `--dry-run` times nothing real: the interpreter's timings mean nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from pathlib import Path

PAPER = dict(B=1024, H=4, T=95, D=128)
SWEEP = [("T", t, dict(PAPER, T=t)) for t in (32, 64, 128, 256)] + [
    ("head_dim", d, dict(PAPER, D=d)) for d in (32, 64)]
TINY = dict(B=1, H=2, T=17, D=32)  # --dry-run: the interpreter's cost is per program and per op
TINY_SWEEP = [("T", 9, dict(TINY, T=9))]
TINY_TRAIN = dict(depth=1, n_shots=4)  # --dry-run: overrides of fastgrok.bench.core.TOY
# Seconds each part is expected to take on an H200 (compiles included), for the budget; generous.
SDPA_BACKENDS = ("cudnn", "flash", "efficient")  # `sdpa-<name>` providers on CUDA (`sdpa-math` in a dry run)
SDPA_MEMBERS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                "math": "MATH"}  # torch.nn.attention.SDPBackend's names
ESTIMATE = {"attention": 8.0, "attention-compiled": 40.0, "train-compile": 60.0, "train-candidate": 10.0,
            "sweep-point": 4.0, "train-reference": 75.0, "mlp": 30.0}


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget {text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--budget {text!r} must be a positive, finite number of seconds")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--finalists {text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--finalists {text!r} must be 0 or more")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/kernel_ab.py", description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=_budget, default=270.0, help="seconds for the whole run (default 270)")
    ap.add_argument("--out", type=Path, default=Path("bench_results"),
                    help="folder of kernels.csv / train.csv to append to (default bench_results)")
    ap.add_argument("--candidates", default=None,
                    help="comma-separated candidate names (default: all, today's v2 first)")
    ap.add_argument("--finalists", type=_count, default=2,
                    help="besides v2 and the default, how many of the fastest candidates at the paper's shape go on "
                         "to the train step and the sweep (default 2)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny shapes, Triton's interpreter, aot_eager: the flow in seconds, timings meaningless")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.dry_run:  # before anything imports triton (TRITON_ON_CPU.md)
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from fastgrok.kernels.rope_attention import CANDIDATES

    names = list(CANDIDATES) if args.candidates is None else [c.strip() for c in args.candidates.split(",")]
    unknown = [c for c in names if c not in CANDIDATES]
    if unknown or not names:
        print(f"kernel_ab: --candidates {args.candidates!r}: {', '.join(unknown) or 'none given'} not among "
              f"{', '.join(CANDIDATES)}", file=sys.stderr)
        return 2
    if "v2" in names:  # today's kernel first: every other candidate is read against it
        names.remove("v2")
        names.insert(0, "v2")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("kernels.csv", "train.csv"):
            with open(args.out / name, "a"):
                pass
    except OSError as e:
        print(f"kernel_ab: --out {str(args.out)!r} is not a writable folder: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.dry_run:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("kernel_ab: no CUDA device; the A/B times GPU kernels (use --dry-run to rehearse on a CPU)",
              file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    return run(names, device, args.out, args.budget, args.dry_run, args.finalists)


class Clock:
    """The budget: what is left, and whether a part expected to take `cost` seconds still fits."""

    def __init__(self, budget: float, dry: bool) -> None:
        self.end = time.monotonic() + budget
        self.dry = dry

    def left(self) -> float:
        return self.end - time.monotonic()

    def fits(self, part: str, n: int = 1) -> bool:
        """A dry run's parts take seconds whatever the estimate: they fit while any budget is left."""
        return self.left() > 0 if self.dry else self.left() >= ESTIMATE[part] * n


def run(names: list[str], device, out: Path, budget: float, dry: bool, finalists: int = 2) -> int:
    import torch

    from fastgrok.bench import kernels as bk
    from fastgrok.bench.core import Recorder, env
    from fastgrok.kernels.rope_attention import DEFAULT_CANDIDATE

    clock = Clock(budget, dry)
    krec, trec = Recorder(out / "kernels.csv"), Recorder(out / "train.csv")
    dev, torch_v, triton_v, sha = env(device)
    krec.log(f"kernel_ab | {dev} | torch {torch_v} | triton {triton_v} | git {sha} | candidates {', '.join(names)} "
             f"(default {DEFAULT_CANDIDATE}) | budget {budget:.0f} s" + (" | DRY RUN: timings mean nothing" if dry else ""))
    backend = "aot_eager" if dry else "inductor"
    main_dims, sweep = (TINY, TINY_SWEEP) if dry else (PAPER, SWEEP)
    sdpa = ["sdpa-math"] if dry else [f"sdpa-{b}" for b in SDPA_BACKENDS]
    providers = ["reference", "reference-compiled", *sdpa, *(f"fused-{c}" for c in names)]

    # 1. attention at the paper's shape
    case = bk.Case("attention", tuple(main_dims.items()), (("shape", bk.shape_label("attention", main_dims)),))
    for p in providers:
        if not clock.fits("attention-compiled" if p == "reference-compiled" else "attention"):
            krec.note(f"kernel_ab: skipped attention {p} at {case.labels[0][1]}: {clock.left():.0f} s left")
            continue
        _attention(krec, case, p, device, dry, backend)
        if p.startswith("fused-"):
            _check(krec, case, p, device)

    final = shortlist(krec.rows, names, DEFAULT_CANDIDATE, finalists)
    krec.log(f"kernel_ab: finalists {', '.join(final)} (v2, the default, and the {finalists} fastest others by "
             "their full median at the paper's shape)")

    # 2. the depth-4 train step per finalist, one compiled model
    if clock.fits("train-compile") and clock.fits("train-candidate", len(final) + 1):
        _train(trec, final, device, dry, backend)
    else:
        trec.note(f"kernel_ab: skipped the train-step A/B: {clock.left():.0f} s left")

    # 3. the MLP's ReLU in the up-projection's GEMM epilogue, against the compiled model's MLP
    if clock.fits("mlp"):
        mlp_ab(krec, device, dry, backend)
    else:
        krec.note(f"kernel_ab: skipped the MLP epilogue A/B: {clock.left():.0f} s left")

    # 4. the T / head_dim sweep: finalists and the eager reference
    for x_name, x, dims in sweep:
        c = bk.Case("attention", tuple(dims.items()), ((x_name, x),))
        for p in ["reference", *(f"fused-{n}" for n in final)]:
            if not clock.fits("sweep-point"):
                krec.note(f"kernel_ab: skipped attention {p} at {x_name}={x}: {clock.left():.0f} s left")
                continue
            _attention(krec, c, p, device, dry, backend)

    # 5. the reference-compiled step beside the candidates'
    if clock.fits("train-reference"):
        from fastgrok.bench.train import Provider, bench_step
        cfg = _train_config(device, dry)
        try:
            trec.add(bench_step(cfg, _train_name(dry), Provider("reference-compiled", "reference", True, False),
                                device, dry, backend))
        except Exception as e:  # a failing reference must not lose the rows above
            trec.note(f"kernel_ab: reference-compiled train step failed: {type(e).__name__}: {e}")
    else:
        trec.note(f"kernel_ab: skipped the reference-compiled train step (gpu_check.sh's stage 3 times it): "
                  f"{clock.left():.0f} s left")

    if device.type == "cuda":
        torch.cuda.empty_cache()
    summary(krec.rows, trec.rows, names, main_dims)
    for note in krec.notes + trec.notes:
        print(f"note: {note}")
    print(f"kernel_ab: {len(krec.rows)} kernel rows → {out / 'kernels.csv'}, {len(trec.rows)} train rows → "
          f"{out / 'train.csv'}; {max(0.0, budget - clock.left()):.0f} s of {budget:.0f}")
    return 0


def shortlist(rows: list[dict], names: list[str], default: str, n: int) -> list[str]:
    """v2 and `default` (where asked for), then the `n` others with the smallest full (forward + backward)
    median at the paper's shape in `rows` whose check there passed (a `check` row ≤ 1); a candidate with no such
    rows (failed, skipped) is not a finalist."""
    def at_shape(mode: str, unit: str) -> dict[str, float]:
        return {r["provider"].removeprefix("fused-"): float(r["p50"]) for r in rows if r["mode"] == mode
                and r["unit"] == unit and r["x_name"] == "shape" and r["provider"].startswith("fused-")}
    full, check = at_shape("full", "ms"), at_shape("check", CHECK_UNIT)
    keep = [c for c in names if c in ("v2", default)]
    others = sorted((c for c in names if c not in keep and c in full and check.get(c, 2.0) <= 1.0),
                    key=lambda c: full[c])
    return keep + others[:n]


CHECK_UNIT = "err / allowed"
CHECK_FLOOR = {"torch.bfloat16": 1e-3, "torch.float16": 1e-4, "torch.float32": 1e-5}  # the tests' FLOOR; fp32: dry run


def _err_ratio(triples, floor: float) -> float:
    """max over (candidate, reference in the working dtype, fp32 judge) of err(candidate) / (2 · err(reference) + floor):
    the tests' 2× rule as one number (≤ 1 passes)."""
    return max(float((f.float() - j).abs().max()) / (2 * float((r.float() - j).abs().max()) + floor)
               for f, r, j in triples)


def _record_check(rec, benchmark: str, provider: str, x_name: str, x: str, ratio: float, device) -> None:
    """A `check` row (unit err / allowed) and its log line; a note when the check failed."""
    from fastgrok.bench.core import Timing, row
    rec.add([row(benchmark, provider, "check", x_name, x, Timing(ratio, ratio, ratio), CHECK_UNIT, device)], log=False)
    rec.log(f"  check          {provider:22s} {x}: error {ratio:.3g} of allowed "
            f"({'ok' if ratio <= 1 else 'WRONG: not a finalist'})")
    if ratio > 1:
        rec.note(f"kernel_ab: {provider} errs {ratio:.3g}× the allowed at {x}")


def _check(rec, case, provider: str, device) -> None:
    """One `check` row for a fused candidate at `case`: max over out and dqkv of err(fused) / (2 · err(reference in
    the working dtype) + floor), errors taken against the reference in fp32 on the same inputs (≤ 1 passes)."""
    import torch

    from fastgrok.backends import attention_reference, get_op
    from fastgrok.bench import kernels as bk
    dims = case.dims
    B, H, T, D = dims["B"], dims["H"], dims["T"], dims["D"]
    dt = bk.dtype_for("attention", device)
    try:
        gen = torch.Generator(device="cpu").manual_seed(1)
        qkv = torch.randn(B, T, 3 * H * D, generator=gen).to(device, dt).requires_grad_()  # (B, T, 3C)
        dout = torch.randn(B, T, H * D, generator=gen).to(device, dt)  # (B, T, C)
        with _candidate(provider):
            out = get_op("attention", "fused")(qkv, H, bk.THETA)
            (g,) = torch.autograd.grad(out, qkv, dout)
        ref = attention_reference(qkv, H, bk.THETA)
        (g_ref,) = torch.autograd.grad(ref, qkv, dout)
        qkv32 = qkv.detach().float().requires_grad_()
        ref32 = attention_reference(qkv32, H, bk.THETA)
        (g32,) = torch.autograd.grad(ref32, qkv32, dout.float())
        ratio = _err_ratio(((out, ref, ref32), (g, g_ref, g32)), CHECK_FLOOR[str(dt)])
    except Exception as e:
        rec.note(f"kernel_ab: check of {provider} at {bk.shape_label('attention', dims)} failed: {type(e).__name__}: "
                 f"{str(e).splitlines()[0] if str(e) else ''}")
        return
    _record_check(rec, "attention", provider, *case.labels[0], ratio, device)


def _candidate(provider: str):
    """The attention_candidate context of a `fused-<name>` provider; for `sdpa-<backend>`, PyTorch's SDPA held
    to that backend (torch.nn.attention.sdpa_kernel); a null context for the references."""
    from fastgrok.kernels.rope_attention import attention_candidate

    if provider.startswith("fused-"):
        return attention_candidate(provider.removeprefix("fused-"))
    if provider.startswith("sdpa-"):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(getattr(SDPBackend, SDPA_MEMBERS[provider.removeprefix("sdpa-")]))
    return contextlib.nullcontext()


def _kind(provider: str) -> str:
    """fastgrok.bench.kernels' provider behind an A/B provider name (its bytes model: the kernel's traffic for
    fused, the ideal 4n / 8n for the others)."""
    if provider.startswith("fused-"):
        return "fused"
    return "reference" if provider.startswith("sdpa-") else provider


def sdpa_core(qkv, n_head: int, theta: float, q_slice=None):
    """Causal SDPA on the fused projection's q, k, v as they are (no RoPE): (B, T, 3C) → (B, T, C). The
    attention core a RoPE + SDPA route would call; `theta` is ignored. Every position (no q_slice)."""
    import torch.nn.functional as F

    from fastgrok.backends import split_qkv
    if q_slice is not None:
        raise ValueError("sdpa_core times every position")
    B, T, C3 = qkv.shape
    q, k, v = split_qkv(qkv, n_head)  # (B, H, T, D) strided views
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(B, T, C3 // 3)  # (B, T, C)


def _attention(rec, case, provider: str, device, dry: bool, backend: str) -> None:
    """Forward, backward and full of one provider at one shape: rows as fastgrok bench kernels writes them."""
    import torch

    from fastgrok.bench import kernels as bk
    kind = _kind(provider)
    try:
        with _candidate(provider):
            impl = sdpa_core if provider.startswith("sdpa-") else bk.implementation("attention", kind, backend)
            works = bk.setup("attention", case.dims, impl, device, kind)
            for mode, work in works.items():
                rec.add(bk.rows_for(case, provider, mode, work, _measure(work.fn, device, dry), device))
    except Exception as e:  # one failing candidate (a compile error, out of memory) must not end the A/B
        rec.note(f"kernel_ab: attention {provider} {bk.shape_label('attention', case.dims)} failed: "
                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


@functools.cache
def fc_relu_epilogue():
    """relu(x Wᵀ) as one cuBLASLt GEMM with a ReLU epilogue (torch._addmm_activation, a zero bias), h saved for
    the backward, which masks dh with h > 0: the apply of an autograd.Function, made on first use (torch is
    imported lazily here)."""
    import torch

    class FcRelu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, zero):  # x (N, C), w (4C, C), zero (4C,)
            h = torch._addmm_activation(zero, x, w.t())  # (N, 4C) = relu(x wᵀ)
            ctx.save_for_backward(x, w, h)
            return h

        @staticmethod
        def backward(ctx, dh):
            x, w, h = ctx.saved_tensors
            dpre = dh * (h > 0)  # (N, 4C): threshold_backward on the saved output
            return dpre @ w, dpre.t() @ x, None

    return FcRelu.apply


def mlp_ab(rec, device, dry: bool, backend: str) -> None:
    """`mlp-compiled` vs `mlp-epilogue-compiled` (see the module's part 3): forward, backward, full rows (ms) and a
    check row each (err / allowed against fp32, as _check)."""
    import torch
    import torch.nn.functional as F

    from fastgrok.bench.core import row
    N, C = (64, 32) if dry else (1024 * 95, 512)
    dt = torch.float32 if dry else torch.bfloat16
    gen = torch.Generator(device="cpu").manual_seed(2)
    x = torch.randn(N, C, generator=gen).to(device, dt).requires_grad_()  # (N, C): ln_2's output, flattened
    w1 = (0.02 * torch.randn(4 * C, C, generator=gen)).to(device, dt).requires_grad_()  # c_fc.weight
    w2 = (0.02 * torch.randn(C, 4 * C, generator=gen)).to(device, dt).requires_grad_()  # c_proj.weight
    zero = torch.zeros(4 * C, device=device, dtype=dt)
    dy = torch.randn(N, C, generator=gen).to(device, dt)
    plain = lambda x, w1, w2: F.linear(F.relu(F.linear(x, w1)), w2)  # noqa: E731  the model's MLP
    fused = lambda x, w1, w2: F.linear(fc_relu_epilogue()(x, w1, zero), w2)  # noqa: E731
    exact = [t.detach().float().requires_grad_() for t in (x, w1, w2)]
    y32 = plain(*exact)
    judge = (y32, *torch.autograd.grad(y32, exact, dy.float()))
    first = None
    for provider, fn in (("mlp-compiled", plain), ("mlp-epilogue-compiled", fused)):
        try:
            torch._dynamo.reset()
            f = torch.compile(fn, backend=backend, dynamic=False)
            y = f(x, w1, w2)
            got = (y, *torch.autograd.grad(y, (x, w1, w2), dy, retain_graph=True))
            works = {"forward": lambda: f(x, w1, w2),
                     "backward": lambda: torch.autograd.grad(y, (x, w1, w2), dy, retain_graph=True),
                     "full": lambda: torch.autograd.grad(f(x, w1, w2), (x, w1, w2), dy)}
            for mode, work in works.items():
                rec.add([row("mlp", provider, mode, "shape", f"N{N} C{C}", _measure(work, device, dry), "ms", device,
                             1e3)])
        except Exception as e:  # the epilogue path may be missing on a build: the other rows still count
            rec.note(f"kernel_ab: MLP {provider} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if first is None:
            first = got
            continue
        # the epilogue path against fp32, allowed twice the model's own MLP's error
        _record_check(rec, "mlp", provider, "shape", f"N{N} C{C}", _err_ratio(zip(got, first, judge),
                                                                                CHECK_FLOOR[str(dt)]), device)
    torch._dynamo.reset()


def _measure(fn, device, dry: bool):
    """fastgrok.bench.core.measure (do_bench on CUDA); one wall-clock call after a warm-up in a dry run."""
    from fastgrok.bench.core import Timing, measure

    if not dry:
        return measure(fn, device)
    fn()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return Timing(dt, dt, dt)


def _train_name(dry: bool) -> str:
    return "toy" if dry else "paper-d4"


def _train_config(device, dry: bool):
    from fastgrok.bench.core import TOY
    from fastgrok.config import Config

    if dry:
        return Config.preset("tiny", **(TOY | TINY_TRAIN), device=str(device))
    return Config.preset("paper-d4", device=str(device))


def _train(rec, names: list[str], device, dry: bool, backend: str) -> None:
    """`fused-compiled-<candidate>` train-step rows (ms, steps/s, MFU %, peak MiB), one compiled model for all."""
    import torch

    from fastgrok.bench.core import Timing, row, time_windows
    from fastgrok.envinfo import peak_flops
    from fastgrok.kernels.rope_attention import attention_candidate
    from fastgrok.trainer import build, train_flops_per_step, train_step

    cfg = _train_config(device, dry).override(backend="fused", compile="off")
    name = _train_name(dry)
    try:
        sess = build(cfg)
        torch._dynamo.reset()
        sess.fwd = torch.compile(sess.model, backend=backend)
    except Exception as e:
        rec.note(f"kernel_ab: the fused train step did not build: {type(e).__name__}: {e}")
        return
    warmup, windows, per_window = (1, 1, 1) if dry else (10, 5, 10)
    flops, peak = train_flops_per_step(cfg), peak_flops(device)
    for i, cand in enumerate([*names, names[0]]):
        mode = "repeat" if i == len(names) else "step"
        provider = f"fused-compiled-{cand}"
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with attention_candidate(cand):  # the first steps of a candidate compile its Triton kernels
                first = warmup if i or dry else warmup + 5  # the first also waits for torch.compile
                t = Timing.of(time_windows(lambda s: train_step(sess, s), device, warmup=first, windows=windows,
                                           per_window=per_window))
        except Exception as e:
            rec.note(f"kernel_ab: train step {provider} failed: {type(e).__name__}: {e}")
            continue
        r = lambda value, unit, scale=1.0: row("train_step", provider, mode, "config", name, value, unit,  # noqa: E731
                                               device, scale)
        rows = [r(t, "ms", 1e3), r(t.rate(1.0), "steps/s")]
        if peak:
            rows.append(r(t.rate(100 * flops / peak), "MFU %"))
        if device.type == "cuda":
            mib = torch.cuda.max_memory_allocated(device) / 2**20
            rows.append(r(Timing(mib, mib, mib), "peak MiB"))
        rec.add(rows)


def summary(krows: list[dict], trows: list[dict], names: list[str], main_dims: dict) -> None:
    """The medians side by side: attention at the paper's shape per provider and mode, with the speed-up over
    today's kernel, then the train step per candidate."""
    ms = {(r["provider"], r["mode"], r["x_name"], str(r["x"])): float(r["p50"]) for r in krows if r["unit"] == "ms"}
    base = f"fused-{names[0]}"
    print(f"\nattention, ms (p50); × = {base} / this")
    points = [("shape", "paper" if main_dims == PAPER else " ".join(f"{k}{v}" for k, v in main_dims.items()))]
    points += sorted({(k[2], k[3]) for k in ms if k[2] != "shape"})
    provs = [p for p in dict.fromkeys(r["provider"] for r in krows) if not p.startswith("fused-")] + \
        [f"fused-{n}" for n in names]  # the references and SDPA backends as they ran, then the candidates
    print(f"{'point':14s} {'provider':26s} {'forward':>16s} {'backward':>16s} {'full':>16s}")
    for x_name, x in points:
        for p in provs:
            cells = []
            for mode in ("forward", "backward", "full"):
                v, b = ms.get((p, mode, x_name, x)), ms.get((base, mode, x_name, x))
                cells.append("—" if v is None else f"{v:.4g}" + (f" ({b / v:.2f}×)" if b else ""))
            if any(c != "—" for c in cells):
                print(f"{x_name + '=' + x:14s} {p:26s} {cells[0]:>16s} {cells[1]:>16s} {cells[2]:>16s}")
    mlp = [(r["provider"], r["mode"], float(r["p50"])) for r in krows if r["benchmark"] == "mlp" and r["unit"] == "ms"]
    if mlp:
        print("\nMLP (c_fc → ReLU → c_proj), ms (p50)")
        for p, mode, v in mlp:
            print(f"  {p:34s} {mode:9s} {v:.4g}")
    steps = [(r["provider"], r["mode"], float(r["p50"])) for r in trows if r["unit"] == "ms"]
    if steps:
        print("\ntrain step, ms (p50)")
        for p, mode, v in steps:
            print(f"  {p:34s} {mode:7s} {v:.4g}")


if __name__ == "__main__":
    sys.exit(main())
