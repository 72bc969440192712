"""Configuration: frozen, validated dataclasses (tasks, model, training) and named presets.

Field names are flat and unique across sections (SPEC "Config field names"), so an override
names a field without its section: `Config.preset("paper", n_pl=16, alpha=0.5, depth=4)`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

SELECTIONS = ("parallelogram", "random")
SAMPLINGS = ("iid", "distinct", "paper")
MLPS = ("relu", "gelu", "swiglu")
BACKENDS = ("reference", "fused")
TRACKERS = ("tensorboard", "wandb")      # experiment trackers of the `log` field (fastgrok/tracking.py)
DEVICES_HINT = "'auto', 'cpu', 'cuda' or 'cuda:N'"
DEFAULT_PRESET = "quick"                 # what `fastgrok train` or `sweep` alone, or a TOML without `preset`, starts from
MAX_SEED = 2**60                         # seeds key Philox streams: seed·8 + stream must fit 63 bits
MAX_EXACT_FLOAT = 2**53                  # an int written as a float ("2e5") is exact only up to here
INT64_MAX = 2**63 - 1                    # input points and Philox counters are int64


class FieldError(ValueError):
    """A bad or missing value of one named field (of a config, a sweep's options, …). The message names the
    field as Python sees it; the CLI adds the flag that sets it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}={value!r} must be > 0")


def _finite(obj: Any) -> None:
    """Every float field is a finite number (a nan compares false with every bound, so check first)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name}={value} must be a finite number")


def _seed(name: str, value: int) -> None:
    if not 0 <= value < MAX_SEED:
        raise ValueError(f"{name}={value} must lie in [0, 2^60)")


@dataclass(frozen=True, slots=True)
class TaskConfig:
    p: int = 29                          # modulus; tokens are 0 … p-1
    n_var: int = 2                       # task vector length n: z = (w · x) mod p
    n_pl: int | None = None              # parallelogram seeds (n_id = 4·n_pl); default 128 → n_id 512
    n_id: int | None = None              # pre-training tasks for selection="random" (or 4·n_pl)
    n_rd: int = 0                        # extra purely random pre-training tasks
    selection: str = "parallelogram"     # "parallelogram" | "random"
    max_ood: int = 256                   # o.o.d. tasks evaluated (the paper's cap)
    alpha: float = 0.8                   # fraction of the p^n input points that are train inputs
    data_seed: int = 0                   # tasks and split are pure functions of this
    n_shots: int = 32                    # examples per sequence
    sampling: str = "iid"                # "iid" | "distinct" (no replacement) | "paper" (shared inputs)

    def __post_init__(self) -> None:
        _finite(self)
        if self.p < 2:
            raise ValueError(f"p={self.p} must be ≥ 2")
        if self.n_var < 1:
            raise ValueError(f"n_var={self.n_var} must be ≥ 1")
        _choice("selection", self.selection, SELECTIONS)
        _choice("sampling", self.sampling, SAMPLINGS)
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha} must lie strictly between 0 and 1")
        if self.n_rd < 0:
            raise ValueError(f"n_rd={self.n_rd} must be ≥ 0")
        if self.max_ood < 1:
            raise ValueError(f"max_ood={self.max_ood} must be ≥ 1")
        if self.n_shots < 1:
            raise ValueError(f"n_shots={self.n_shots} must be ≥ 1")
        _seed("data_seed", self.data_seed)
        if self.selection == "parallelogram":
            self._resolve_parallelogram()
        else:
            if self.n_pl is not None:
                raise ValueError("n_pl is for selection='parallelogram'; with selection='random' set n_id")
            if self.n_id is None:
                object.__setattr__(self, "n_id", 512)
            if self.n_id < 1:
                raise ValueError(f"n_id={self.n_id} must be ≥ 1")
        if self.n_var * math.log2(self.p) > 64 or self.p**self.n_var > INT64_MAX:  # log first: p**n_var may be vast
            raise ValueError(f"p={self.p}, n_var={self.n_var}: the p^n_var input points are indexed in int64, "
                             "so p^n_var must be < 2^63; use a smaller p or n_var")
        n_points = self.p**self.n_var
        if self.n_pretrain > n_points - 1:
            raise ValueError(
                f"{self.n_pretrain} pre-training tasks leave no o.o.d. task: p^n_var = {n_points} tasks in all; "
                f"use at most {n_points - 1} (fewer n_pl/n_id/n_rd, or a larger p)")
        n_train = round(self.alpha * n_points)
        if not 1 <= n_train <= n_points - 1:
            raise ValueError(
                f"alpha={self.alpha} puts {n_train} of the {n_points} input points in the train split; "
                "both splits need at least one point")
        if self.sampling == "distinct" and self.n_shots > min(n_train, n_points - n_train):
            raise ValueError(
                f"sampling='distinct' needs n_shots ≤ the smaller input split "
                f"({min(n_train, n_points - n_train)} points at alpha={self.alpha}), got n_shots={self.n_shots}")

    def _resolve_parallelogram(self) -> None:
        if self.n_var != 2:
            raise ValueError(f"selection='parallelogram' needs n_var=2 (got {self.n_var}); use selection='random'")
        if self.p < 4:
            raise ValueError(f"selection='parallelogram' needs p ≥ 4 (got p={self.p}); use selection='random'")
        n_pl, n_id = self.n_pl, self.n_id
        if n_pl is None:
            if n_id is None:
                n_pl = 128
            elif n_id % 4:
                raise ValueError(f"n_id={n_id} is not a multiple of 4 (parallelogram selection gives n_id = 4·n_pl)")
            else:
                n_pl = n_id // 4
        if n_pl < 1:
            raise ValueError(f"n_pl={n_pl} must be ≥ 1")
        if n_id is not None and n_id != 4 * n_pl:
            raise ValueError(f"n_id={n_id} disagrees with n_pl={n_pl} (parallelogram gives n_id = 4·n_pl = {4 * n_pl})")
        object.__setattr__(self, "n_pl", n_pl)
        object.__setattr__(self, "n_id", 4 * n_pl)

    @property
    def n_pretrain(self) -> int:
        """Number of pre-training tasks: n_id plus the n_rd random extras."""
        return self.n_id + self.n_rd

    @property
    def seq_len(self) -> int:
        """Tokens in a full sequence: (n_var + 1) per example."""
        return (self.n_var + 1) * self.n_shots


@dataclass(frozen=True, slots=True)
class ModelConfig:
    depth: int = 2                       # transformer blocks
    n_embd: int = 512                    # residual width
    n_head: int = 4                      # heads; head_dim = n_embd / n_head
    mlp: str = "relu"                    # "relu" | "gelu" (tanh) | "swiglu"
    widen: int = 4                       # MLP hidden = widen · n_embd
    vocab_size: int | None = None        # ≥ p; None → p (the paper's checkpoints use 47)
    rope_theta: float = 10000.0          # RoPE base
    backend: str = "reference"           # "reference" | "fused": every op at once
    attention: str | None = None         # per-op backend override (None → backend)
    embedding: str | None = None         # per-op backend override
    batchgen: str | None = None          # per-op backend override

    def __post_init__(self) -> None:
        _finite(self)
        for name in ("depth", "n_embd", "n_head", "widen"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be ≥ 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"head_dim = n_embd/n_head = {self.n_embd // self.n_head} must be even for RoPE")
        _choice("mlp", self.mlp, MLPS)
        _choice("backend", self.backend, BACKENDS)
        for op in ("attention", "embedding", "batchgen"):
            if getattr(self, op) is not None:
                _choice(op, getattr(self, op), BACKENDS)
        if self.vocab_size is not None and self.vocab_size < 2:
            raise ValueError(f"vocab_size={self.vocab_size} must be ≥ 2")
        _positive("rope_theta", self.rope_theta)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True, slots=True)
class TrainConfig:
    batch_size: int = 1024               # sequences per step, balanced over pre-training tasks
    steps: int = 200_000                 # optimiser steps
    warmup: int = 10_000                 # linear warm-up steps
    lr: float = 1.5e-4                   # peak learning rate
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 2.0            # on every ≥2-D parameter; 0 on LayerNorm
    init_lr_ratio: float = 0.01          # warm-up starts at init_lr_ratio · lr
    min_lr_ratio: float = 0.1            # cosine ends at min_lr_ratio · lr
    grad_clip: float = 0.0               # 0 = no clipping (the paper's)
    eval_every: int = 1000               # steps between evaluations (and checkpoints)
    eval_batches: int = 1                # batches of batch_size sequences per evaluation set
    phase_threshold: float = 0.9         # last-shot accuracy that counts a set as solved
    seed: int = 1                        # model init and training batches
    device: str = "auto"                 # 'auto' → cuda if available else cpu
    dtype: str = "auto"                  # 'auto' → bf16 autocast on CUDA, fp32 on CPU; or fp32/bf16/fp16
    compile: str = "auto"                # 'auto' → on for CUDA, off for CPU; 'on' | 'off'
    out_dir: str = "runs"                # runs are written to out_dir/run_name
    run_name: str = ""                   # '' → derived from the config and the time
    log: str = ""                        # experiment trackers, comma-separated: "tensorboard", "wandb" ('' → none)

    def __post_init__(self) -> None:
        _finite(self)
        for name in ("batch_size", "steps", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be ≥ 1")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup} must be ≥ 0")
        _positive("lr", self.lr)
        _positive("eps", self.eps)
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1)")
        for name in ("weight_decay", "grad_clip", "init_lr_ratio", "min_lr_ratio"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be ≥ 0")
        if not 0.0 < self.phase_threshold <= 1.0:
            raise ValueError(f"phase_threshold={self.phase_threshold} must lie in (0, 1]")
        _seed("seed", self.seed)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device):
            raise ValueError(f"device={self.device!r} is not one of {DEVICES_HINT} (N a GPU index: 0, 1, …)")
        _choice("dtype", self.dtype, ("auto", "fp32", "bf16", "fp16"))
        _choice("compile", self.compile, ("auto", "on", "off"))
        for name in ("out_dir", "run_name"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str (a folder name), got {type(getattr(self, name)).__name__} "
                                f"{getattr(self, name)!r:.60}")
        name = self.run_name
        if name and (name in (".", "..") or "/" in name or "\\" in name or "\0" in name):
            raise ValueError(f"run_name={name!r} must be one folder name inside out_dir (no '/', '\\', '.' or '..')")
        if not self.out_dir or "\0" in self.out_dir:
            raise ValueError(f"out_dir={self.out_dir!r} must name a folder")
        self._resolve_log()

    def _resolve_log(self) -> None:
        """'wandb, tensorboard' → 'wandb,tensorboard': known trackers, each once."""
        if not isinstance(self.log, str):
            raise TypeError(f"log={self.log!r} must be a string: comma-separated trackers of {', '.join(TRACKERS)}")
        names = [t.strip().lower() for t in self.log.split(",") if t.strip()]
        for name in names:
            if name not in TRACKERS:
                raise ValueError(f"log={self.log!r}: {name!r} is not a tracker; use {', '.join(TRACKERS)} "
                                 "(comma-separated, or '' for none)")
        if len(set(names)) < len(names):
            raise ValueError(f"log={self.log!r} names a tracker twice")
        object.__setattr__(self, "log", ",".join(names))


SECTIONS: dict[str, type] = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig}
FIELD_SECTION: dict[str, str] = {f.name: s for s, cls in SECTIONS.items() for f in fields(cls)}

# Presets: flat field overrides on top of the dataclass defaults (SPEC defaults).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's headline depth-2 run: n_id = 512 (n_pl = 128), α = 0.6.
    "paper": dict(n_pl=128, alpha=0.6, depth=2),
    "paper-d4": dict(n_pl=128, alpha=0.6, depth=4),
    "paper-d6": dict(n_pl=128, alpha=0.6, depth=6),
    # ≈ 2.6 min on 2 CPU cores (50 ms/step): train accuracy 0.35 → 0.95 all-shot, 1.00 last-shot
    # (chance 1/7); i.d. test and o.o.d. stay near chance at this scale, as expected.
    "quick": dict(p=7, n_pl=4, alpha=0.8, depth=2, n_embd=64, n_head=4, batch_size=64, steps=3000,
                  warmup=200, lr=3e-3, weight_decay=1.0, eval_every=500, eval_batches=1, max_ood=64),
    # In-context learning on 2 CPU cores (issue 14; benchmarks/cpu_phenomenon.py): 20 of the 25 tasks
    # at p = 5, 10 shots drawn without replacement (no query is in its own context), weight decay 2.
    # ≈ 3 min (≈ 22 ms/step): training tasks solved from context; at the last shot i.d. test 0.29–0.44
    # (chance 0.2); new tasks on training inputs 0.67 in one draw of four, 0.13–0.16 in the others (README).
    "demo": dict(p=5, selection="random", n_id=20, alpha=0.6, n_shots=10, sampling="distinct", depth=2,
                 n_embd=64, n_head=4, batch_size=64, steps=8000, warmup=200, lr=3e-3, weight_decay=2.0,
                 eval_every=500, eval_batches=4, max_ood=256),
    # For tests: seconds on a CPU.
    "tiny": dict(p=5, n_pl=2, alpha=0.6, n_shots=6, depth=1, n_embd=32, n_head=2, batch_size=16,
                 steps=20, warmup=5, lr=1e-3, eval_every=10, eval_batches=1, max_ood=8),
}


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Convert a CLI/TOML value to the field's type, or raise naming the field."""
    origin = get_origin(typ)
    if origin is Union or (origin is not None and type(None) in get_args(typ)):
        args = [a for a in get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        typ = args[0]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise TypeError(f"{name}={value!r} is not a boolean")
    if typ is int:
        if isinstance(value, bool):
            raise TypeError(f"{name}={value!r} is not an integer")
        if isinstance(value, int):
            return value
        number = value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""), 0)
            except ValueError:
                try:  # "2e5" → 200000, but not "2.5"
                    number = float(value)
                except ValueError:
                    pass
        if isinstance(number, float) and number.is_integer():
            if abs(number) >= MAX_EXACT_FLOAT:  # 1e23 is 99999999999999991611392: not the number written
                raise ValueError(f"{name}={value!r} is a float of 2^53 or more, which stands for more than one "
                                 "integer; write the integer's digits")
            return int(number)
        raise TypeError(f"{name}={value!r} is not an integer")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"{name}={value!r} is not a number")
    if typ is str:
        if not isinstance(value, str):
            raise TypeError(f"{name}={value!r} is not a string")
        return value
    return value


def _unknown_field(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(FIELD_SECTION), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known fields: {', '.join(sorted(FIELD_SECTION))}"
    return ValueError(f"unknown config field {name!r}{hint}")


@dataclass(frozen=True, slots=True)
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.vocab_size is None:
            object.__setattr__(self, "model", replace(self.model, vocab_size=self.task.p))
        elif self.model.vocab_size < self.task.p:
            raise ValueError(f"vocab_size={self.model.vocab_size} is smaller than p={self.task.p}: "
                             "every number 0 … p-1 needs a token")
        if self.task.n_pretrain > self.train.batch_size:
            raise ValueError(
                f"batch_size={self.train.batch_size} cannot cover the {self.task.n_pretrain} pre-training tasks: "
                f"every batch holds each task at least once, so batch_size must be ≥ {self.task.n_pretrain}")
        self._check_batch_numbers()

    def _check_batch_numbers(self) -> None:
        """Batch k draws from Philox counters up to (k+1)·batch_size·n_shots (data.check_step): every batch
        number a run uses must keep them in int64."""
        t, n_points = self.task, self.task.p**self.task.n_var
        n_train = round(t.alpha * n_points)
        for name, rows in (("steps", n_train), ("eval_batches", max(n_train, n_points - n_train))):
            per_batch = self.train.batch_size * max(t.n_shots, rows if t.sampling == "distinct" else 0)
            top = INT64_MAX // per_batch
            if getattr(self.train, name) > top:
                raise ValueError(f"{name}={getattr(self.train, name)} is too many: batch numbers past {top} overflow "
                                 f"the int64 Philox counters at batch_size={self.train.batch_size}, "
                                 f"n_shots={t.n_shots}; use at most {top}")

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> "Config":
        """A named preset with flat field overrides, e.g. `Config.preset("paper", n_pl=16, depth=4)`."""
        if not isinstance(name, str):
            raise TypeError(f"preset name must be a string (one of {', '.join(PRESETS)}), got {name!r}")
        if name not in PRESETS:
            close = difflib.get_close_matches(name, list(PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown preset {name!r}{hint}; presets: {', '.join(PRESETS)}")
        return cls.from_flat(_merge(PRESETS[name], overrides))

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "Config":
        """Build from flat `field: value` pairs on top of the defaults; values are type-checked."""
        if not isinstance(values, dict):
            raise TypeError(f"config values must be a dict of field: value, got {type(values).__name__}")
        parts: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for name, value in values.items():
            if name not in FIELD_SECTION:
                raise _unknown_field(name)
            section = FIELD_SECTION[name]
            hints = get_type_hints(SECTIONS[section])
            parts[section][name] = _coerce(name, value, hints[name])
        return cls(**{s: SECTIONS[s](**kw) for s, kw in parts.items()})

    def override(self, **values: Any) -> "Config":
        """A copy with flat field overrides applied (and validated again)."""
        flat = self.to_flat()
        if "n_pl" in values or "n_id" in values:  # one of the pair is derived from the other
            flat["n_pl"] = flat["n_id"] = None
        flat.update(values)
        return Config.from_flat(flat)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """From `{"task": {...}, "model": {...}, "train": {...}}` (as saved) or flat pairs."""
        if not isinstance(d, dict):
            raise TypeError(f"Config.from_dict takes a dict, got {type(d).__name__}")
        flat: dict[str, Any] = {}
        for key, value in d.items():
            if key in SECTIONS and isinstance(value, dict):
                for name, v in value.items():
                    if name in FIELD_SECTION and FIELD_SECTION[name] != key:
                        raise ValueError(f"field {name!r} belongs in [{FIELD_SECTION[name]}], not [{key}]")
                    flat[name] = v
            else:
                flat[key] = value
        return cls.from_flat(flat)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "Config":
        """From a TOML file: optional `preset = "name"` (default: DEFAULT_PRESET, as for `fastgrok train`
        alone), then flat keys or [task]/[model]/[train] tables; `overrides` last. A [grid] table is a
        sweep's (config_and_grid_from_toml) and is refused here."""
        cfg, grid = config_and_grid_from_toml(path, overrides)
        if grid:
            raise ValueError(f"{path}: a [grid] table belongs to a sweep (fastgrok.sweep; `fastgrok sweep --config`), "
                             "not to one run")
        return cfg

    # ---- export ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}

    def to_flat(self) -> dict[str, Any]:
        return {k: v for part in self.to_dict().values() for k, v in part.items()}


def config_and_grid_from_toml(path: str | Path, overrides: dict[str, Any] | None = None
                              ) -> tuple[Config, dict[str, Any]]:
    """The one TOML reader, for a run and a sweep: optional `preset` (default DEFAULT_PRESET), fixed fields
    (flat or in [task]/[model]/[train]), then `overrides`; and the [grid] table (empty without one)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    if isinstance(path, str) and not path:
        raise ValueError("config file '' names no file: give the TOML file's path")
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {str(path)!r} is a folder, not a TOML file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}): not a TOML file") from None
    except OSError as e:
        raise ValueError(f"config file {str(path)!r} cannot be read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    grid = data.pop("grid", {})
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: grid must be a table ([grid] with field = [values] or 'start:stop:step')")
    preset = data.pop("preset", DEFAULT_PRESET)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"{path}: unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    flat = Config.from_dict(data).to_flat() if data else {}  # checks section placement and field names
    explicit = {k: flat[k] for k in _flatten_keys(data)}
    both = [k for k in grid if k.replace("-", "_") in explicit or (k == "seeds" and "seed" in explicit)]
    if both:
        raise ValueError(f"{path}: {', '.join(both)} {'is' if len(both) == 1 else 'are'} both fixed and in [grid]: "
                         "give each field once")
    return Config.from_flat(_merge(_merge(PRESETS[preset], explicit), overrides or {})), grid


def nearest_preset(cfg: Config) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """The preset cfg differs least from, and its differences: field → (cfg's value, the preset's).
    Where a run is written (out_dir, run_name) is not compared."""
    flat = cfg.to_flat()
    best: tuple[str, dict[str, tuple[Any, Any]]] | None = None
    for name in PRESETS:  # in order: a tie goes to the first
        base = Config.preset(name).to_flat()
        diff = {k: (v, base[k]) for k, v in flat.items() if v != base[k] and k not in ("out_dir", "run_name")}
        if best is None or len(diff) < len(best[1]):
            best = (name, diff)
    assert best is not None
    return best


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """base updated by over, where setting n_id or selection drops a base n_pl (it would conflict)."""
    base = dict(base)
    if ("n_id" in over or "selection" in over) and "n_pl" not in over:
        base.pop("n_pl", None)
    if "n_pl" in over and "n_id" not in over:
        base.pop("n_id", None)
    return {**base, **over}


def _flatten_keys(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            out.update(value)
        else:
            out[key] = value
    return out
