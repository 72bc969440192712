"""One run on many processes: torchrun's environment, the process group, each rank's rows of a batch,
the reductions, rank-0-only writes and errors that end every rank instead of hanging one.

`torchrun --nproc_per_node=W -m fastgrok train …` starts W processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `launched()` joins them into a process group (NCCL for CUDA tensors, gloo for CPU
ones) and every trainer piece takes a `Dist` (one process: `SINGLE`, where every helper is the
identity). The W ranks train the run one process would: rank r of W takes rows r·B/W … (r+1)·B/W − 1
of exactly the global batch a single process draws (batches are a pure function of (seed, step),
data.py), its loss is the mean over those rows, and DDP averages the gradients, so the update is
the one-process update (up to float rounding: sums in another order).

Errors: an exception that is a user error (ValueError, TypeError, a training stop) is raised on
every rank alike (the trainer's checks are pure functions of what rank 0 shares), so the ranks agree
on it through torchrun's key-value store (each failing rank posts a key; no collective is left
pending when a peer never comes) and rank 0 alone prints it; a rank whose peers do not post within
a short timeout prints its own error. Any other exception leaves its rank at once; torchrun then
ends the other ranks (its monitor polls every 0.1 s), and a rank blocked in a collective with a
rank that died fails on the closed connection. A rank stuck without dying fails its peers' next
collective after TIMEOUT.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import Tensor

from .config import FieldError
from .envinfo import resolve_device

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun (and by torch.distributed.run)
BACKENDS = ("auto", "nccl", "gloo")
TIMEOUT = timedelta(minutes=10)        # a collective waiting this long fails (a rank stuck, not dead)
ERROR_TIMEOUT = timedelta(seconds=15)  # how long failing ranks wait to agree on one error to print
T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run; every method is the identity (or a no-op) in one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1             # the ranks on this node (torchrun's LOCAL_WORLD_SIZE)
    backend: str = "none"                 # "none" (one process), "gloo", "nccl" or "cpu:gloo,cuda:nccl"
    requested: str = "auto"               # the backend asked for (--dist-backend)
    groups: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # gloo side groups
    store: Any = field(default=None, compare=False, repr=False)  # torchrun's key-value store, this run's keys
    error_timeout: timedelta = ERROR_TIMEOUT
    _reports: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)  # errors agreed so far

    @property
    def enabled(self) -> bool:
        """Launched by torchrun (a 1-rank torchrun run counts: it runs DDP)."""
        return self.backend != "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What env.json records."""
        return {"world_size": self.world_size, "dist_backend": self.backend}

    # ---- devices and rows --------------------------------------------------------------------
    def device(self, name: str) -> torch.device:
        """The device of this rank for a config's `device` ("auto"/"cuda" → cuda:LOCAL_RANK under torchrun)."""
        if not self.enabled:
            return resolve_device(name)
        if name in ("auto", "cuda"):
            dev = torch.device(f"cuda:{self.local_rank}") if (name == "cuda" or torch.cuda.is_available()) \
                else torch.device("cpu")
        else:
            dev = torch.device(name)
            if dev.type == "cuda" and dev.index is not None and dev.index != self.local_rank:
                raise ValueError(f"device={name!r} pins every rank to one GPU; under torchrun use device='cuda' "
                                 f"or 'auto' (rank r takes cuda:LOCAL_RANK, here cuda:{self.local_rank})")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but CUDA is not available here; use device='cpu' or 'auto'")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={self.local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                             "start at most that many processes per node (--nproc_per_node)")
        if self.requested == "nccl" and dev.type != "cuda":
            raise ValueError(f"dist_backend='nccl' needs CUDA devices, but device={name!r} resolves to {dev}; "
                             "use --dist-backend gloo (or auto) on the CPU")
        if self.requested == "nccl" and not _nccl_available():
            raise FieldError("dist_backend", "dist_backend='nccl' but this torch build has no NCCL; use 'gloo' or 'auto'")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return dev

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(f"batch_size={batch_size} does not divide over {self.world_size} ranks (WORLD_SIZE): "
                             f"the global batch is split evenly, so use a multiple of {self.world_size}")

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of n rows: r·n/W … (r+1)·n/W − 1."""
        self.check_batch(n)
        b = n // self.world_size
        return slice(self.rank * b, (self.rank + 1) * b)

    def batch(self, batchgen: Callable, src: Any, step: Any) -> Tensor:
        """This rank's rows of batch `step` of `src` (the global batch), exactly as one process draws them.

        Row r of batch k has sequence number k·B + r, and every counter of the iid and distinct draws is
        a function of that number; rank q's rows of the global batch k are therefore batch k·W + q of
        the same source with B/W rows, generated alone (reference or kernel). The "paper" draw also
        uses the row's slot r // n_tasks within the global batch, so there the global batch is drawn
        and sliced."""
        if not self.enabled:
            return batchgen(src, step)
        rows = self.rows(src.batch_size)
        if src.sampling == "paper":
            return batchgen(src, step)[rows]
        local = dataclasses.replace(src, batch_size=rows.stop - rows.start)
        return batchgen(local, step * self.world_size + self.rank)

    def shard(self, t: Tensor) -> Tensor:
        """This rank's rows of a per-row tensor of the global batch."""
        return t[self.rows(t.shape[0])] if self.enabled else t

    # ---- the model -----------------------------------------------------------------------------
    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel around the (already compiled) model: compile, then wrap, as nanoGPT and
        torch's "Where to apply torch.compile?" do. Gradients are averaged over the ranks."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    # ---- collectives ---------------------------------------------------------------------------
    def all_reduce_sum_(self, *tensors: Tensor) -> None:
        """Sum each tensor over the ranks, in place."""
        if self.enabled:
            import torch.distributed as dist
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def mean(self, t: Tensor) -> Tensor:
        """The mean of t over the ranks (a new tensor)."""
        if not self.enabled:
            return t
        t = t.clone()
        self.all_reduce_sum_(t)
        return t / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether flag is true on any rank (every rank gets the answer; a CPU collective, no GPU sync)."""
        if not self.enabled:
            return flag
        import torch.distributed as dist
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.groups.get("objects"))
        return bool(t.item())

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() on rank 0 alone (a write, a read to share); every rank gets its result, or raises its error."""
        if not self.enabled:
            return fn()
        import torch.distributed as dist
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as e:  # shared with the ranks, raised below on rank 0 itself
                box[0] = ("error", e)
        dist.broadcast_object_list(box, src=0, group=self.groups.get("objects"))
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's obj, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.groups.get("objects"))
        return out

    def report(self, error: BaseException, say: Callable[[str], None] | None = None) -> str | None:
        """The line this rank prints for a user error: rank 0 prints the error every failing rank agrees on;
        a rank whose peers do not join within `error_timeout` (they did not fail) prints its own. With `say`,
        the line is said here and the other ranks return only after rank 0 spoke, so torchrun cannot end
        rank 0 (when another rank exits with the error) before the line is out."""
        if not self.enabled:
            line: str | None = str(error)
        elif not self._agree():
            line = f"rank {self.rank}: {error}" if self.rank else str(error)
        else:
            key = f"error/{self._reports[0]}"
            self._reports[0] += 1
            line = str(error) if self.is_main else None
            if say is not None:
                if line is not None:
                    say(line)
                    self.store.set(f"{key}/said", "1")
                else:
                    self._wait([f"{key}/said"])
                return line
        if say is not None:
            say(line)
        return line

    def _agree(self) -> bool:
        """Every rank reports the same error (the k-th agreed one of each rank): each posts its key and waits
        for the others' keys. A rank that times out takes its key back, so its next report is again the k-th
        and the counts stay equal on every rank. Store requests are answered one by one: nothing is left
        pending in a process group (a collective that a peer never joined would be, up to the exit — where
        gloo finishing it during interpreter shutdown aborts the process)."""
        key = f"error/{self._reports[0]}"
        mine = f"{key}/{self.rank}"
        self.store.set(mine, "1")
        if self._wait([f"{key}/{q}" for q in range(self.world_size)]):
            return True
        self.store.delete_key(mine)
        return False

    def _wait(self, keys: list[str]) -> bool:
        """Whether all keys are in the store within error_timeout (polled: no request outlives the wait)."""
        deadline = time.monotonic() + self.error_timeout.total_seconds()
        while not self.store.check(keys):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


SINGLE = Dist()


def torchrun_env() -> dict[str, int] | None:
    """RANK, WORLD_SIZE and LOCAL_RANK when launched by torchrun, else None."""
    if not all(v in os.environ for v in ENV_VARS):
        return None
    try:
        env = {v: int(os.environ[v]) for v in ENV_VARS}
    except ValueError:
        raise ValueError(f"torchrun's {', '.join(ENV_VARS)} must be integers, got "
                         f"{', '.join(f'{v}={os.environ[v]!r}' for v in ENV_VARS)}") from None
    if not 0 <= env["RANK"] < env["WORLD_SIZE"]:
        raise ValueError(f"RANK={env['RANK']} is not in [0, WORLD_SIZE={env['WORLD_SIZE']})")
    return env


def _int_env(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def _nccl_available() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_nccl_available() and torch.cuda.is_available()


_CURRENT: list[Dist] = []  # the Dist of the enclosing launched() (mirrors torch.distributed's own global state)


def current() -> Dist:
    """The Dist of the enclosing `launched()`; SINGLE outside torchrun."""
    if _CURRENT:
        return _CURRENT[-1]
    env = torchrun_env()
    if env is not None:
        raise ValueError(f"this process runs under torchrun (WORLD_SIZE={env['WORLD_SIZE']}): train inside "
                         "`with fastgrok.distributed.launched():`, or launch `torchrun … -m fastgrok train`")
    return SINGLE


@contextmanager
def launched(backend: str = "auto", *, error_timeout: timedelta = ERROR_TIMEOUT) -> Iterator[Dist]:
    """Join torchrun's process group for the body (nothing to do in one process); leave it after.

    backend "auto": NCCL for CUDA tensors and gloo for CPU ones when this torch has NCCL and a GPU,
    else gloo. A backend that cannot work here (NCCL without CUDA) is reported when the trainer
    resolves its device, inside the group, so every rank can agree on the error."""
    if backend not in BACKENDS:
        raise ValueError(f"dist_backend={backend!r} is not one of {', '.join(map(repr, BACKENDS))}")
    env = torchrun_env()
    if env is None:
        if backend != "auto":
            raise ValueError(f"dist_backend={backend!r} is for runs launched with torchrun "
                             "(torchrun --nproc_per_node=N -m fastgrok train …)")
        yield SINGLE
        return
    if _CURRENT:
        raise ValueError("fastgrok.distributed.launched() is already active in this process")
    import torch.distributed as dist
    if backend == "nccl" and _nccl_available():
        pg = "cpu:gloo,cuda:nccl"  # NCCL for the model; gloo still moves CPU objects
    elif backend == "auto" and _nccl_available():
        pg = "cpu:gloo,cuda:nccl"
    else:
        pg = "gloo"  # also when NCCL was asked for but is missing: Dist.device reports it inside the group
    dist.init_process_group(backend=pg, timeout=TIMEOUT, rank=env["RANK"], world_size=env["WORLD_SIZE"])
    ok, groups = False, {}
    try:
        groups["objects"] = dist.new_group(backend="gloo", timeout=TIMEOUT)
        d = Dist(rank=env["RANK"], world_size=env["WORLD_SIZE"], local_rank=env["LOCAL_RANK"], backend=pg,
                 local_world_size=_int_env("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]),
                 requested=backend, groups=groups, store=_run_store(), error_timeout=error_timeout)
        _CURRENT.append(d)
        yield d
        ok = True
    finally:
        if _CURRENT:
            _CURRENT.pop()
        _teardown(ok, pg, groups)


_SESSIONS = [0]  # launched() bodies entered in this process (the same count on every rank)


def _run_store() -> Any:
    """A client of the key-value store torchrun's processes met at (MASTER_ADDR:MASTER_PORT, which env://
    initialisation needs), with this run's keys under their own prefix: the torchrun run id, its restart
    and the launched() body, so nothing from an earlier attempt is read as this one's."""
    import torch.distributed as dist
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=TIMEOUT)
    _SESSIONS[0] += 1
    prefix = (f"fastgrok/{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}/"
              f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{_SESSIONS[0]}")
    return dist.PrefixStore(prefix, store)


def _teardown(ok: bool, backend: str, groups: dict[str, Any]) -> None:
    """Leave the process group: cleanly after success; after a failure without waiting on any peer.

    The groups are destroyed here, not at interpreter exit: gloo's worker threads drop a finished
    collective's work (and the tensors it holds) just after the caller got its result; a drop that
    comes while the interpreter shuts down takes the GIL of a finalizing interpreter and aborts the
    process ("terminate called without an active exception"). Destroying a gloo group joins its
    threads (torch releases the GIL for it), so nothing of theirs outlives this call."""
    import torch.distributed as dist
    if not dist.is_initialized():
        groups.clear()
        return
    if ok or "nccl" not in backend:
        dist.destroy_process_group()  # gloo's teardown talks to nobody
        groups.clear()  # the last references (the Dist keeps the side groups): their threads are joined now
        gc.collect()    # and those a reference cycle may still hold
        return
    try:  # NCCL: abort, so a collective left pending by the failure cannot block the exit
        from torch.distributed.distributed_c10d import _abort_process_group
        _abort_process_group()
    except Exception:
        pass
