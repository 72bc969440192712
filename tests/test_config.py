import pytest

from fastgrok.config import PRESETS, Config, nearest_preset


def test_presets_resolve_and_paper_defaults():
    for name in PRESETS:
        Config.preset(name)
    cfg = Config.preset("paper")
    assert (cfg.task.p, cfg.task.n_id, cfg.task.n_pl, cfg.model.depth, cfg.model.n_embd) == (29, 512, 128, 2, 512)
    assert cfg.model.vocab_size == 29
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.warmup, cfg.train.steps) == (1.5e-4, 2.0, 10_000, 200_000)
    assert Config.preset("paper-d4").model.depth == 4 and Config.preset("paper-d6").model.depth == 6


def test_overrides_by_field_name_and_coercion():
    cfg = Config.preset("paper", n_pl=16, alpha="0.5", data_seed=3, depth="4", steps="2e3")
    assert (cfg.task.n_id, cfg.task.alpha, cfg.task.data_seed, cfg.model.depth, cfg.train.steps) == (64, 0.5, 3, 4, 2000)
    assert Config.preset("paper", n_id=64).task.n_pl == 16
    assert Config.preset("paper", selection="random", n_id=100).task.n_id == 100
    assert Config.preset("quick").override(n_pl=2).task.n_id == 8


@pytest.mark.parametrize("kw, match", [
    (dict(alpha=1.0), "alpha"),
    (dict(alpha=0.0), "alpha"),
    (dict(n_embd=100, n_head=3), "divisible"),
    (dict(n_pl=300), "o.o.d."),
    (dict(p=3), "p ≥ 4"),
    (dict(n_var=3), "n_var=2"),
    (dict(n_id=10), "multiple of 4"),
    (dict(batch_size=100), "cannot cover"),
    (dict(vocab_size=20), "smaller than p"),
    (dict(sampling="nope"), "sampling"),
    (dict(backend="cuda"), "backend"),
    (dict(device="tpu"), "device"),
    (dict(sampling="distinct", alpha=0.99), "distinct"),
])
def test_bad_values_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        Config.preset("paper", **kw)


def test_unknown_field_and_preset_suggest():
    with pytest.raises(ValueError, match="did you mean alpha"):
        Config.preset("paper", alpah=0.3)
    with pytest.raises(ValueError, match="did you mean 'quick'"):
        Config.preset("quik")
    with pytest.raises(TypeError, match="depth"):
        Config.preset("paper", depth="two")


def test_toml_and_dict_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "quick"\nalpha = 0.5\n[model]\ndepth = 3\n')
    cfg = Config.from_toml(path, seed=7)
    assert (cfg.task.alpha, cfg.model.depth, cfg.train.seed, cfg.task.p) == (0.5, 3, 7, 7)
    assert Config.from_dict(cfg.to_dict()) == cfg
    path.write_text("[model]\nalpha = 0.5\n")
    with pytest.raises(ValueError, match="belongs in"):
        Config.from_toml(path)
    path.write_text("alpha = = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        Config.from_toml(path)
    with pytest.raises(ValueError, match="does not exist"):
        Config.from_toml(tmp_path / "missing.toml")


# ---- issue 9 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["alpha", "rope_theta", "lr", "beta1", "beta2", "eps", "weight_decay",
                                   "init_lr_ratio", "min_lr_ratio", "grad_clip", "phase_threshold"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan")])
def test_every_float_field_rejects_non_finite(field, value):
    with pytest.raises(ValueError, match=f"{field}=.* must be a finite number"):
        Config.preset("tiny", **{field: value})


@pytest.mark.parametrize("name", ["../x", "../../x", "/abs/path", "a/b", "..", ".", "a\\b"])
def test_run_name_is_one_path_component(name):
    with pytest.raises(ValueError, match="run_name=.* must be one folder name"):
        Config.preset("tiny", run_name=name)
    assert Config.preset("tiny", run_name="ok.name-1").train.run_name == "ok.name-1"


def test_seeds_name_their_field():
    with pytest.raises(ValueError, match=r"data_seed=99999999999999999999 must lie in \[0, 2\^60\)"):
        Config.preset("tiny", data_seed=99999999999999999999)
    with pytest.raises(ValueError, match=r"^seed=-1"):
        Config.preset("tiny", seed=-1)


def test_one_toml_reader_for_a_run_and_a_sweep(tmp_path):
    from fastgrok.config import DEFAULT_PRESET, config_and_grid_from_toml
    path = tmp_path / "f.toml"
    path.write_text('n_pl = 2\n[model]\ndepth = 3\n')
    cfg, grid = config_and_grid_from_toml(path, {"n_id": 12})  # a flag's n_id replaces the file's n_pl
    assert cfg == Config.from_toml(path, n_id=12) == Config.preset(DEFAULT_PRESET, depth=3, n_id=12) and grid == {}
    path.write_text('preset = "tiny"\n[grid]\nseed = [1, 2]\n')
    assert config_and_grid_from_toml(path) == (Config.preset("tiny"), {"seed": [1, 2]})
    with pytest.raises(ValueError, match=r"\[grid\] table belongs to a sweep"):
        Config.from_toml(path)


def test_empty_toml_is_the_default_preset_and_read_errors_name_the_file(tmp_path):
    from fastgrok.config import DEFAULT_PRESET
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert Config.from_toml(path) == Config.preset(DEFAULT_PRESET)
    path.write_text("# only a comment\n")
    assert Config.from_toml(path, seed=3) == Config.preset(DEFAULT_PRESET, seed=3)
    path.write_text("seed = 3\n")  # fields without a preset: on the default preset, as for a sweep (#20)
    assert Config.from_toml(path) == Config.preset(DEFAULT_PRESET, seed=3)
    path.write_bytes(b"seed = 3 # \xff\xfe\n")
    with pytest.raises(ValueError, match="empty.toml' is not UTF-8"):
        Config.from_toml(path)
    with pytest.raises(ValueError, match="is a folder"):
        Config.from_toml(tmp_path)
    path.write_text("preset = [1]\n")
    with pytest.raises(ValueError, match="unknown preset"):
        Config.from_toml(path)


def test_nearest_preset_names_the_differences():
    assert nearest_preset(Config.preset("demo", steps=4000, out_dir="elsewhere")) == ("demo", {"steps": (4000, 8000)})
    assert nearest_preset(Config.preset("paper-d4")) == ("paper-d4", {})
    name, diff = nearest_preset(Config.preset("tiny", depth=3, lr=2e-3))
    assert name == "tiny" and diff == {"depth": (3, 1), "lr": (2e-3, 1e-3)}


# ---- issue 21: a new user's battery --------------------------------------------------------------
@pytest.mark.parametrize("value", ["1e23", 1e23, "9007199254740993.0", 2.0**60, "-1e30"])
def test_int_fields_refuse_floats_past_exact_integers(value):
    with pytest.raises(ValueError, match=r"^steps=.* a float of 2\^53 or more") as e:
        Config.preset("tiny", steps=value)
    assert "\n" not in str(e.value)
    assert Config.preset("tiny", steps="2e5").train.steps == 200_000
    assert Config.preset("tiny", steps=3e3).train.steps == 3000


def test_steps_past_the_philox_counters_are_refused():
    with pytest.raises(ValueError, match=r"^steps=10{23} is too many: .* use at most \d+$"):
        Config.preset("tiny", steps=10**23)
    with pytest.raises(ValueError, match=r"^eval_batches=10{20} is too many"):
        Config.preset("tiny", eval_batches=10**20)
    cap = (2**63 - 1) // (16 * 6)  # tiny: batch_size 16, n_shots 6
    assert Config.preset("tiny", steps=cap).train.steps == cap
    with pytest.raises(ValueError, match="steps="):
        Config.preset("tiny", steps=cap + 1)


def test_input_points_past_int64_are_refused_at_once():
    with pytest.raises(ValueError, match=r"^p=7, n_var=1000: the p\^n_var input points"):  # was an OverflowError
        Config.preset("quick", selection="random", n_id=8, n_var=1000)
    with pytest.raises(ValueError, match=r"^p=7, n_var=1000000000: the p\^n_var input points are indexed in int64"):
        Config.preset("quick", selection="random", n_id=8, n_var=10**9)  # refused without computing 7**1e9
    with pytest.raises(ValueError, match=r"^p=10{30}, n_var=2"):
        Config.preset("quick", p=10**30)


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:", "cuda:-1", "cuda:1.5", "cuda: 0", "cpu:0", "CUDA", "cuda:0 "])
def test_device_is_auto_cpu_cuda_or_cuda_index(device):
    with pytest.raises(ValueError, match=rf"^device={device!r} is not one of 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        Config.preset("tiny", device=device)
    assert Config.preset("tiny", device="cuda:12").train.device == "cuda:12"


def test_device_of_another_type_names_the_field():
    from fastgrok.config import TrainConfig
    with pytest.raises(ValueError, match="^device=0 is not one of"):
        TrainConfig(device=0)


def test_empty_preset_and_config_path_are_errors():
    with pytest.raises(ValueError, match="^unknown preset ''; presets: "):
        Config.preset("")
    with pytest.raises(ValueError, match="^config file '' names no file"):
        Config.from_toml("")
