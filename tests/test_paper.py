"""fastgrok.paper: the paper's command line, log and checkpoints on fastgrok's trainer."""
import json
import shlex

import pytest
import torch

import fastgrok
from fastgrok import Config, paper
from fastgrok.paper import MAPPED, NOTED, REFUSED, main, parse, to_config

# Every flag of the paper's parser (pre_training/icl_grokking.py), with its type and default there.
B = "str2bool"
PAPER_PARSER = {
    "model_name": (str, "rope_decoder"), "device": (str, "cuda"), "dtype": (str, "bfloat16"),
    "mixed_precision": (B, True), "num_workers": (int, 0), "seed": (int, 1), "tqdm_bar": (B, False),
    "dist_url": (str, "env://"), "dist_backend": (str, "nccl"),
    "n_layer": (int, 4), "dp": (float, 0.0), "if_ln": (B, True), "vocab_size": (int, -1), "n_embd": (int, 512),
    "n_head": (int, 4), "block_size": (int, 512), "act_name": (str, "relu"), "widen_factor": (int, 4),
    "mu": (float, 1.0), "weight_tying": (B, True), "dont_decay_embd": (B, False), "s": (float, 0.0),
    "n_tasks_pl": (int, 64), "n_tasks_rd": (int, 0), "parallelogram": (B, True), "n_var": (int, 2),
    "data_seed": (int, 0), "split_data": (B, True), "data_pct": (float, 80.0), "split_tasks": (B, False),
    "task_pct": (float, 50.0), "p": (int, 29), "base": (int, 29), "n_point_per_row": (int, 32),
    "encrypted": (B, True), "pos_hint": (B, False), "reverse_target": (B, False), "show_mod": (B, False),
    "show_seos": (B, False), "fake_restart_steps": (int, 5000), "n_val_step": (int, 16),
    "optim": (str, "adamw"), "bs": (int, 1024), "eval_bs": (int, 1024), "lr": (float, 1.5e-4),
    "n_cycles": (int, 1), "clip": (float, 0.0), "wd": (float, 2.0), "beta1": (float, 0.9), "beta2": (float, 0.98),
    "eps": (float, 1e-8), "steps": (int, 200000), "warmup_steps": (int, 10000), "lr_decay": (str, "cosine"),
    "reshuffle_step": (int, 1), "fake_epochs": (int, 1000000), "steps_per_record": (int, 1000), "n_ckpts": (int, 1),
}

# mapped: a value, and every fastgrok field it changes (against the paper's defaults)
MAPPED_CASES = {
    "device": ("cpu", dict(device="cpu")),
    "dtype": ("float32", None),  # with mixed precision (the default) only bfloat16; see test_value_checks
    "mixed_precision": ("False", dict(dtype="fp32")),
    "seed": ("7", dict(seed=7)),
    "n_layer": ("6", dict(depth=6)),
    "n_embd": ("256", dict(n_embd=256)),
    "n_head": ("8", dict(n_head=8)),
    "act_name": ("gelu", dict(mlp="gelu")),
    "widen_factor": ("2", dict(widen=2)),
    "n_tasks_pl": ("16", dict(n_pl=16, n_id=64)),
    "n_tasks_rd": ("5", dict(n_rd=5)),
    "parallelogram": ("False", dict(selection="random", n_pl=None, n_id=64)),
    "n_var": ("3", None),  # the parallelogram construction needs n_var = 2: refused by the Config
    "data_seed": ("3", dict(data_seed=3)),
    "data_pct": ("40.0", dict(alpha=0.4)),
    "p": ("31", None),  # --base must follow
    "base": ("31", None),
    "n_point_per_row": ("16", dict(n_shots=16)),
    "n_val_step": ("4", dict(eval_batches=4)),
    "bs": ("512", dict(batch_size=512, eval_batches=32)),
    "eval_bs": ("128", dict(eval_batches=2, max_ood=128)),
    "lr": ("3e-4", dict(lr=3e-4)),
    "clip": ("1.0", dict(grad_clip=1.0)),
    "wd": ("0.5", dict(weight_decay=0.5)),
    "beta1": ("0.8", dict(beta1=0.8)),
    "beta2": ("0.95", dict(beta2=0.95)),
    "steps": ("50000", dict(steps=50000)),
    "warmup_steps": ("500", dict(warmup=500)),
    "steps_per_record": ("250", dict(eval_every=250)),
    "n_ckpts": ("5", {}),  # checkpoint steps, not a Config field (tested below)
}
NOTED_CASES = {"num_workers": "8", "tqdm_bar": "True", "dist_url": "tcp://h:1", "dist_backend": "gloo",
               "vocab_size": "99", "block_size": "128", "task_pct": "30.0", "fake_restart_steps": "10",
               "eps": "1e-6", "reshuffle_step": "2", "fake_epochs": "3"}
REFUSED_CASES = {"model_name": "rope_encoder", "dp": "0.1", "if_ln": "False", "mu": "0.5", "weight_tying": "False",
                 "dont_decay_embd": "True", "s": "1.0", "split_data": "False", "split_tasks": "True",
                 "encrypted": "False", "pos_hint": "True", "reverse_target": "True", "show_mod": "True",
                 "show_seos": "True", "optim": "sgd", "n_cycles": "2", "lr_decay": "linear"}


def _cfg(*argv: str) -> Config:
    ns, _, _ = parse(list(argv))
    paper.check_flags(ns)
    return to_config(ns)


def test_every_paper_flag_has_its_type_default_and_one_disposition():
    assert set(paper.FLAGS) == set(PAPER_PARSER)
    cases = [set(MAPPED_CASES), set(NOTED_CASES), set(REFUSED_CASES)]
    assert set().union(*cases) == set(PAPER_PARSER) and sum(map(len, cases)) == len(PAPER_PARSER)
    for name, (typ, default) in PAPER_PARSER.items():
        f = paper.FLAGS[name]
        assert (f.type is paper.str2bool) if typ == B else (f.type is typ), name
        assert f.default == default and type(f.default) is type(default), name
        kind = MAPPED if name in MAPPED_CASES else NOTED if name in NOTED_CASES else REFUSED
        assert f.kind == kind, name
        assert f.default == parse([])[0].__dict__[name]


@pytest.mark.parametrize("name", sorted(MAPPED_CASES))
def test_mapped_flag_sets_its_fields(name):
    value, expect = MAPPED_CASES[name]
    base = _cfg().to_flat()
    if expect is None:
        with pytest.raises(ValueError):
            _cfg(f"--{name}={value}")
        return
    flat = _cfg(f"--{name}={value}").to_flat()
    changed = {k: v for k, v in flat.items() if v != base[k]}
    assert changed == expect


@pytest.mark.parametrize("name", sorted(NOTED_CASES))
def test_noted_flag_changes_nothing_and_is_said_once(name):
    ns, given, _ = parse([f"--{name}={NOTED_CASES[name]}"])
    assert to_config(ns) == _cfg()
    notes = paper._note(ns, given)
    assert len(notes) == 1 and f"--{name}=" in notes[0]
    assert paper._note(*parse([])[:2]) == []


@pytest.mark.parametrize("name", sorted(REFUSED_CASES))
def test_refused_flag_exits_2_naming_it(name, capsys, tmp_path):
    rc = main([f"--{name}={REFUSED_CASES[name]}", f"--out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"--{name}=" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written
    _cfg(f"--{name}={paper.FLAGS[name].default}")  # the paper's default is accepted


def test_value_checks_on_mapped_flags(capsys):
    for argv, needle in [(["--base=10"], "--base=10"), (["--dtype=float16"], "GradScaler"),
                         (["--act_name=tanh"], "--act_name=tanh"), (["--bs=64"], "--bs"),
                         (["--n_ckpts=-1"], "--n_ckpts")]:
        assert main(argv) == 2
        assert needle in capsys.readouterr().err
    assert _cfg("--mixed_precision=False", "--dtype=float16").train.dtype == "fp32"  # dtype unused in fp32
    assert _cfg("--act_name=SwiGLU").model.mlp == "swiglu"
    assert main(["--no_such_flag=1"]) == 2


RUN_ICL = """torchrun --nnodes=1 --nproc_per_node=1 --master_port=24353 \
icl_grokking_balanced_ddp.py --device='cuda' --mixed_precision=True --dtype='bfloat16' --num_workers=8 \
--n_tasks_rd=0 --n_tasks_pl=32 --parallelogram=True --n_var=2 --p=29 --base=29 --data_pct=60.0 --split_data=True \
--model='rope_decoder' --act_name='relu' --block_size=512 --n_embd=512 --n_layer=2 --n_head=4 \
--optim='adamw' --lr=1.5e-4 --wd=2.0 --dont_decay_embd=False --weight_tying=True --lr_decay='cosine' --clip=0.0 \
--steps=200000 --warmup_steps=10000 --steps_per_record=1000 --fake_restart_steps=5000 --n_point_per_row=32 \
--bs=1024 --eval_bs=1024 --seed=1 --data_seed=0 --reshuffle_step=1 \
--tqdm_bar=False --dist_backend='nccl' --n_ckpts=1 --n_val_step=16"""


def test_run_icl_command_line_parses_to_the_paper_config():
    argv = shlex.split(RUN_ICL)
    argv = argv[argv.index("icl_grokking_balanced_ddp.py") + 1:]
    ns, given, _ = parse(argv)
    paper.check_flags(ns)
    assert ns.model_name == "rope_decoder"  # `--model=` is an abbreviation of --model_name, as in argparse there
    expect = Config.from_flat(dict(
        p=29, n_var=2, n_pl=32, n_rd=0, selection="parallelogram", alpha=0.6, data_seed=0, n_shots=32,
        max_ood=256, sampling="paper", depth=2, n_embd=512, n_head=4, mlp="relu", widen=4, vocab_size=47,
        batch_size=1024, steps=200000, warmup=10000, lr=1.5e-4, beta1=0.9, beta2=0.98, eps=1e-8, weight_decay=2.0,
        grad_clip=0.0, eval_every=1000, eval_batches=16, seed=1, device="cuda", dtype="bf16"))
    assert to_config(ns) == expect
    notes = paper._note(ns, given)
    assert [n.split("=")[0].split("--")[1] for n in notes] == ["num_workers", "tqdm_bar", "dist_backend",
                                                              "block_size", "fake_restart_steps", "reshuffle_step"]
    head, tail = paper.run_stem(ns)
    assert head + tail + ".tab" == (
        "noembdFalse_paraleTrue_pltask128_rope_decoder_p29_base29_row32_ntask128_nvar2_dsplitTrue_dfrac60.0_relu"
        "_n512_h4_d2_lctx512_I1_dI0_adamw_bs1024_T200000_Tw10000_lr1.50e-04_wd2.00e+00.tab")
    out = paper.PaperOutputs(ns, paper.Path(".."))
    assert str(out.ckpt_path(200000)) == ("../ckpts/noembdFalse_paraleTrue_pltask128_rope_decoder_p29_base29_row32"
                                          "_ntask128_nvar2_dsplitTrue_dfrac60.0_relu_n512_h4_d2_lctx512_I1_dI0_adamw"
                                          "_bs1024_t200000_T200000_Tw10000_lr1.50e-04_wd2.00e+00.pth")
    assert str(out.tab_path).startswith("../data/")


def test_ckpt_steps_rule():
    assert paper.ckpt_steps(0, 10000, 200000) == []
    assert paper.ckpt_steps(1, 10000, 200000) == [200000]
    assert paper.ckpt_steps(5, 10000, 200000) == [10000, 21147, 44721, 94574, 200000]
    assert paper.ckpt_steps(3, 3, 12) == [3, 6, 12]
    assert paper.ckpt_steps(4, 0, 100) == [100]
    assert paper.ckpt_steps(4, 2, 4) == [2, 3, 4]  # duplicates dropped


def test_ood_task_count_follows_the_paper():
    ns = parse(["--p=7", "--base=7", "--n_tasks_pl=2"])[0]  # 49 - 8 = 41 unseen → 40
    assert paper.n_ood(ns) == 40
    assert paper.n_ood(parse(["--eval_bs=100"])[0]) == 96
    assert paper.n_ood(parse([])[0]) == 256


def test_refuses_several_processes(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main([]) == 2
    assert "one process" in capsys.readouterr().err


TINY = ["--device=cpu", "--mixed_precision=False", "--p=5", "--base=5", "--n_tasks_pl=2", "--data_pct=60",
        "--n_point_per_row=6", "--n_layer=1", "--n_embd=32", "--n_head=2", "--bs=16", "--eval_bs=16",
        "--n_val_step=1", "--steps=12", "--warmup_steps=3", "--steps_per_record=5", "--n_ckpts=3", "--lr=1e-3",
        "--num_workers=8"]


def test_tiny_run_writes_the_papers_log_and_checkpoints(tmp_path, capsys):
    assert main(TINY + [f"--out_dir={tmp_path}", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "--num_workers=8 accepted" in out
    ns = parse(TINY)[0]
    head, tail = paper.run_stem(ns)
    tab = tmp_path / "data" / f"{head}{tail}.tab"
    lines = tab.read_text().splitlines()
    assert lines[0].split("\t") == [""] + list(paper.TAB_COLUMNS)
    rows = [[float(x) for x in line.split("\t")] for line in lines[1:]]
    assert [r[0] for r in rows] == [0, 1, 2] and [r[1] for r in rows] == [1, 5, 10]

    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name == head + tail
    records = {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    assert sorted(records) == [5, 10, 12]
    cols = {c: i + 1 for i, c in enumerate(paper.TAB_COLUMNS)}
    for row in rows[1:]:
        s = records[int(row[cols["step"]])]["sets"]
        assert row[cols["tr_acc"]] == s["train"]["task_mean_acc"]
        assert row[cols["last_test_acc"]] == s["id_test"]["task_mean_acc_last"]
        assert row[cols["ood_train_loss"]] == s["ood_train"]["loss"]
        assert row[cols["ood_val_acc"]] == s["ood_test"]["task_mean_acc"]
        assert row[cols["ood_val_last_acc"]] == s["ood_test"]["task_mean_acc_last"]
    assert all(0.0 <= r[cols["test_acc"]] <= 1.0 for r in rows)

    # the same training as fastgrok without the paper's outputs: tr_loss is the loss of that very step
    cfg = to_config(ns, out_dir=str(tmp_path / "plain"), run_name="plain")
    plain = fastgrok.train(cfg, quiet=True)
    assert [r[cols["tr_loss"]] for r in rows] == [plain.losses[0], plain.losses[4], plain.losses[9]]
    assert plain.history[-1]["sets"] == records[12]["sets"]

    # checkpoints at the --n_ckpts steps (3 log-spaced from the warm-up's end), in the paper's state_dict layout
    names = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert names == sorted(f"{head}_t{s}{tail}.pth" for s in (3, 6, 12))
    sd = torch.load(tmp_path / "ckpts" / f"{head}_t12{tail}.pth", weights_only=True)
    assert "transformer.h.0.attn.rotary_emb.freqs" in sd and "lm_head.weight" in sd
    assert sd["transformer.wte.weight"].shape == (5 + 18, 32)  # the paper tokenizer's vocabulary
    loaded = fastgrok.load_reference_checkpoint(tmp_path / "ckpts" / f"{head}_t12{tail}.pth")
    final = fastgrok.GPT(cfg.model)
    final.load_state_dict(torch.load(run_dir / "last.pt", weights_only=True)["model"])
    idx = torch.randint(0, 5, (3, 17))
    torch.testing.assert_close(loaded(idx), final(idx), rtol=0, atol=0)


def test_rerun_keeps_the_earlier_fastgrok_run(tmp_path):
    argv = TINY + ["--steps=2", "--n_ckpts=0", f"--out_dir={tmp_path}", "--quiet"]
    assert main(argv) == 0 and main(argv) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2
    assert not (tmp_path / "ckpts").exists()
    tabs = sorted((tmp_path / "data").iterdir())
    assert len(tabs) == 2 and all(len(t.read_text().splitlines()) == 2 for t in tabs)  # header + step 1


def test_a_run_differing_only_in_beta1_overwrites_nothing(tmp_path, capsys):
    """The paper's names omit beta1: the second run's .tab, .pth and run folder take the run folder's suffix."""
    argv = TINY + ["--steps=4", "--warmup_steps=1", "--steps_per_record=2", "--n_ckpts=1", f"--out_dir={tmp_path}",
                   "--quiet"]
    assert main(argv) == 0
    head, tail = paper.run_stem(parse(argv)[0])
    first = {p: p.read_bytes() for p in (tmp_path / "data" / f"{head}{tail}.tab", tmp_path / "ckpts" /
                                          f"{head}_t4{tail}.pth")}
    capsys.readouterr()
    assert main(argv + ["--beta1=0.5"]) == 0
    assert "this run's end in -1, nothing is overwritten" in capsys.readouterr().out
    assert all(p.read_bytes() == b for p, b in first.items()), "the first run's files were overwritten"
    assert (tmp_path / "data" / f"{head}{tail}-1.tab").is_file()
    assert (tmp_path / "ckpts" / f"{head}_t4{tail}-1.pth").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [head + tail, head + tail + "-1"]
    run1 = json.loads((tmp_path / "runs" / f"{head}{tail}-1" / "config.json").read_text())
    assert run1["train"]["beta1"] == 0.5


def test_docs_flag_table_names_every_flag():
    from pathlib import Path
    text = Path(__file__).resolve().parent.parent.joinpath("docs", "paper.md").read_text()
    section = text.split("## Coming from the paper's code", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in PAPER_PARSER if f"`--{name}`" not in section]
    assert missing == []


# ---- issue 21: bad values of the paper's flags are one line, before anything is written -------------------
@pytest.mark.parametrize("argv, match", [
    (["--bs=0"], "--bs=0 must be ≥ 1"),  # was a ZeroDivisionError (eval_batches divides by --bs)
    (["--bs=-8"], "--bs=-8 must be ≥ 1"),
    (["--eval_bs=0"], "--eval_bs=0 must be ≥ 1"),
    (["--n_val_step=-1"], "--n_val_step=-1 must be ≥ 1"),
    (["--parallelogram=False", "--n_var=1000"], "p=5, n_var=1000: the p^n_var input points"),
    (["--p=1", "--base=1"], "p=1 must be ≥ 2"),
    (["--device=cuda:abc"], "device='cuda:abc' is not one of"),
    (["--if_ln=maybe"], "argument --if_ln: expected True or False, got 'maybe'"),
    (["--parallelogram=perhaps"], "argument --parallelogram: expected True or False"),
    (["--steps=1e5"], "argument --steps: invalid int value: '1e5'"),
    (["--out_dir="], "--out_dir='' names no folder"),  # was: trained into `..`
])
def test_bad_flag_values_are_one_line(argv, match, capsys, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # `..` is tmp_path
    assert main(TINY + argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert [p.name for p in tmp_path.iterdir()] == ["cwd"] and not any((tmp_path / "cwd").iterdir())


def test_an_output_folder_that_cannot_be_made_is_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "data").write_text("a file where the log's folder goes")
    assert main(TINY + [f"--out_dir={tmp_path}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fastgrok-paper: error: --out_dir: cannot create {tmp_path / 'data'}: {tmp_path / 'data'} "
                   "is a file, not a folder"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing trained, nothing written
    monkeypatch.setattr(paper.os, "access", lambda path, mode: False)  # a read-only folder (as root, chmod is moot)
    assert main(TINY + [f"--out_dir={tmp_path / 'ro'}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot create {tmp_path / 'ro' / 'data'}: {tmp_path} is not writable" in err[0], err
