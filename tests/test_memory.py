"""The memory estimate: computed from the config alone, refuses what cannot fit, quickly."""
import time

import pytest

from fastgrok import Config
from fastgrok.memory import available, check_fits, estimate, human_bytes, num_params
from fastgrok.model import GPT


@pytest.mark.parametrize("preset, kw", [("tiny", {}), ("quick", {}), ("paper", {}), ("paper-d6", dict(mlp="swiglu")),
                                        ("quick", dict(mlp="gelu", widen=2, vocab_size=11))])
def test_parameter_count_matches_the_model(preset, kw):
    cfg = Config.preset(preset, **kw)
    assert num_params(cfg) == GPT(cfg.model).num_params()


def test_estimate_parts_and_human_units():
    e = estimate(Config.preset("quick"))
    assert set(e) == {"tasks", "batches", "params", "activations", "runtime", "total"}
    assert e["total"] == sum(v for k, v in e.items() if k != "total")
    assert 100 * 2**20 < e["total"] < 1 * 2**30  # measured ≈ 260 MiB peak growth on a CPU
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(74.5 * 2**30) == "74.5 GiB" and human_bytes(10) == "10 B"
    assert human_bytes(10**200).endswith("PiB")


@pytest.mark.parametrize("kw, part", [
    (dict(p=100003), "tasks"),
    (dict(n_shots=100000), "activations"),
    (dict(batch_size=100000000), "activations"),
    (dict(depth=100000), "activations"),
    (dict(n_embd=65536, n_head=4), "params"),
])
def test_impossible_sizes_are_refused_fast(kw, part):
    cfg = Config.preset("quick", **kw)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"needs about .* (GiB|TiB|PiB)") as e:
        check_fits(cfg, "cpu")
    assert time.perf_counter() - t < 1.0
    assert f"{part} " in str(e.value) and "available" in str(e.value)
    big = max((k for k in estimate(cfg) if k != "total"), key=estimate(cfg).__getitem__)
    assert big == part


def test_budget_is_explicit_or_measured():
    cfg = Config.preset("quick")
    need = estimate(cfg)["total"]
    check_fits(cfg, "cpu", budget=need)
    with pytest.raises(ValueError, match="but only 1.0 KiB of RAM is available"):
        check_fits(cfg, "cpu", budget=1024)
    got = available("cpu")
    assert got is None or got > 0


def test_ddp_rank_holds_its_share_of_the_batch():
    """Under DDP a rank holds batch_size / world_size rows; ranks on one host share its RAM."""
    cfg = Config.preset("quick", batch_size=4096)
    one, four = estimate(cfg), estimate(cfg, world_size=4)
    assert four["activations"] < one["activations"] / 3 and four["batches"] < one["batches"] / 3
    assert four["params"] == one["params"] and four["tasks"] == one["tasks"]
    check_fits(cfg, "cpu", budget=four["total"], world_size=4)  # fits one GPU-sized share
    with pytest.raises(ValueError, match="this config needs"):
        check_fits(cfg, "cpu", budget=four["total"], world_size=4, sharing=2)  # two ranks on this host
