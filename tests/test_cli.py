"""The command line is generated from the configuration dataclasses: every field an option with its
docstring's help, values back into the config, real exit codes."""

import argparse
import dataclasses
import re

import pytest

from tokdyn import cli


@dataclasses.dataclass(frozen=True)
class Inner:
    """A nested config.

    Attributes:
      grid_size: cells per side.
      colours: colours per cell, a comma list.
    """

    grid_size: int = 6
    colours: tuple = (2, 3)


@dataclasses.dataclass(frozen=True)
class Toy:
    """A toy config.

    Attributes:
      name: a name.
      rate: a rate; its help text goes on
        over two lines.
      flag: a switch.
      grids: N x C pairs.
      inner: nested settings.
    """

    name: str = "a"
    rate: float = 0.5
    flag: bool = False
    grids: tuple = ((5, 3), (7, 3))
    inner: Inner = Inner()

    @classmethod
    def quick(cls):
        return cls(name="quick", rate=0.1)

    def validate(self):
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        return self


def _parse(argv, cls=Toy, base=None):
    p = argparse.ArgumentParser()
    cli.add_config_args(p, cls)
    return cli.config_from_args(cls, p.parse_args(argv), base)


def test_help_text_comes_from_the_docstring():
    assert cli.config_help(Toy)["rate"] == "a rate; its help text goes on over two lines."
    p = argparse.ArgumentParser()
    cli.add_config_args(p, Toy)
    text = p.format_help()
    for option in ("--name", "--rate", "--flag", "--no-flag", "--grids", "--grid-size", "--colours"):
        assert option in text
    assert "(default: 5x3,7x3)" in text and "(default: 2,3)" in text


def test_options_build_the_config():
    assert _parse([]) == Toy()
    got = _parse(["--rate", "2", "--flag", "--grids", "4x2,6x5", "--grid-size", "9", "--colours", "4"])
    assert got == Toy(rate=2.0, flag=True, grids=((4, 2), (6, 5)), inner=Inner(grid_size=9, colours=(4,)))
    assert _parse(["--name", "b"], base=Toy.quick()) == Toy(name="b", rate=0.1)  # a preset, options on top
    with pytest.raises(ValueError, match="rate must be > 0"):
        _parse(["--rate", "-1"])


@dataclasses.dataclass(frozen=True)
class Outer:
    """A config whose nested default is not the nested class's own.

    Attributes:
      inner: nested settings, 4 cells per side.
    """

    inner: Inner = Inner(grid_size=4)


def test_a_nested_option_shows_and_keeps_its_enclosing_default():
    p = argparse.ArgumentParser()
    cli.add_config_args(p, Outer)
    text = " ".join(p.format_help().split())
    assert "cells per side (default: 4)" in text and "(default: 6)" not in text
    assert cli.field_default(Outer, ("inner", "grid_size")) == 4
    assert cli.field_default(Toy, ("inner", "grid_size")) == 6 and cli.field_default(Toy, ("rate",)) == 0.5
    assert _parse([], Outer) == Outer() and _parse(["--colours", "5"], Outer) == Outer(Inner(grid_size=4, colours=(5,)))
    assert _parse(["--grid-size", "7"], Outer) == Outer(Inner(grid_size=7))


def test_latent_reasoning_nested_options_keep_their_spelling_and_defaults(capsys):
    """The organisms' training (the study's nested ``training: organism.Config``, which nests its schedule
    ``train`` and its ``tasks``, which nest the grid ``task``) is flattened to plain options at every depth:
    --steps, --warmup, --layers, --n-latents, --order, --grid-size, ..., each with the study's default, not the
    nested class's own; given values land at their depth, the rest keep the study's (or the preset's) defaults;
    the study's own --train/--no-train stays a bool beside the nested ``train``."""
    from tokdyn.models.organism import training as organism
    from tokdyn.studies import latent_reasoning
    from tokdyn.train import optim

    study = latent_reasoning.Config().training
    own = organism.Config()  # the nested class's defaults, which the study's replace
    assert (study.train.steps, study.layers, study.batch_size) != (own.train.steps, own.layers, own.batch_size)
    assert study.tasks.order != own.tasks.order
    argv = ["study", "latent-reasoning"]
    parser = cli.build_parser(argv)
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (
        ("--steps", study.train.steps),
        ("--steps-per-call", study.train.steps_per_call),
        ("--warmup", study.train.warmup),
        ("--decay", study.train.decay),
        ("--final-fraction", study.train.final_fraction),
        ("--clip-norm", study.train.clip_norm),
        ("--layers", study.layers),
        ("--batch-size", study.batch_size),
        ("--n-latents", study.n_latents),
        ("--n-options", study.tasks.n_options),
        ("--order", study.tasks.order),
        ("--grid-size", study.tasks.task.grid_size),
    ):
        pattern = rf"{option} [A-Z]+ [^(]*(\([^d][^)]*\)[^(]*)*\(default: {re.escape(str(default))}\)"
        assert re.search(pattern, text), option
    assert "--train, --no-train" in text
    args = parser.parse_args(
        argv
        + ["--steps", "60", "--steps-per-call", "20", "--warmup", "0", "--decay", "constant", "--clip-norm", "0.5"]
        + ["--n-latents", "2", "--grid-size", "3", "--n-colours", "3", "--order", "shuffled", "--n-options", "3"]
    )
    cfg = cli.config_from_args(latent_reasoning.Config, args)
    assert cfg.training.train == optim.Config(
        steps=60,
        steps_per_call=20,
        warmup=0,
        decay="constant",
        final_fraction=study.train.final_fraction,
        clip_norm=0.5,
    )
    assert cfg.training.n_latents == 2 and cfg.training.tasks.n_options == 3 and cfg.training.tasks.order == "shuffled"
    assert cfg.training.tasks.task == dataclasses.replace(study.tasks.task, grid_size=3, n_colours=3)
    assert cfg.train is True and cfg.training.layers == study.layers and cfg.training.n_train == study.n_train
    off = cli.config_from_args(latent_reasoning.Config, parser.parse_args(argv + ["--no-train"]))
    assert off.train is False and off.training == study
    quick = cli.config_from_args(
        latent_reasoning.Config, parser.parse_args(argv + ["--warmup", "7"]), latent_reasoning.Config.quick()
    )
    preset = latent_reasoning.Config.quick().training
    assert quick.training == dataclasses.replace(preset, train=dataclasses.replace(preset.train, warmup=7))
    with pytest.raises(ValueError, match="train.steps must be a multiple of steps_per_call=20"):
        cli.config_from_args(
            latent_reasoning.Config, parser.parse_args(argv + ["--steps", "50", "--steps-per-call", "20"])
        )


def test_undocumented_fields_are_refused():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        """No attributes section."""

        x: int = 1

    with pytest.raises(TypeError, match="no help text"):
        cli.add_config_args(argparse.ArgumentParser(), Bad)


@pytest.mark.parametrize("key", list(cli.COMMANDS), ids=" ".join)
def test_every_command_is_generated_from_its_config(key, capsys):
    assert cli.main([*key, "--help"]) == 0
    text = capsys.readouterr().out
    _, cls = (
        cli._config_class(key)
        if False
        else (None, getattr(__import__(cli.COMMANDS[key][0], fromlist=["x"]), cli.CONFIG_CLASSES.get(key, "Config")))
    )
    fixed = {path[-1] for path in getattr(cls, "FIXED_OPTIONS", ())}  # set by the study itself: no option
    for _path, field, _ in cli._fields(cls) if False else _flat(cls):
        if field.default is not dataclasses.MISSING and field.name not in fixed:
            assert "--" + field.name.replace("_", "-") in text, field.name
    for name in fixed - {"seeds", "root_seed"}:  # the sweep's own --seeds and --root-seed key its models
        assert "--" + name.replace("_", "-") not in text, name
    cfg = cls() if all(f.default is not dataclasses.MISSING for f in dataclasses.fields(cls)) else None
    if cfg is not None:
        cfg.validate()  # the defaults are valid


def _flat(cls):
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            yield from _flat(type(f.default))
        else:
            yield (f.name,), f, cls


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for group, name in cli.COMMANDS:
        assert f"tokdyn {group} {name}" in text


def test_exit_codes(tmp_path, capsys, monkeypatch):
    assert cli.main(["study", "token-dynamics", "--no-such-option"]) == 2
    assert cli.main(["study", "token-dynamics", "--seeds", "0"]) == 2
    assert "seeds" in capsys.readouterr().err
    from tokdyn.studies import token_dynamics

    def boom(cfg, out, *, quiet, plots):
        raise RuntimeError("the run broke")

    monkeypatch.setattr(token_dynamics, "main", boom)
    assert cli.main(["study", "token-dynamics", "--out", str(tmp_path), "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: the run broke" in err and "usage" not in err  # a failure, not a usage error


def test_matmul_precision_is_checked_and_reaches_every_study(tmp_path, capsys, monkeypatch):
    import jax

    from tokdyn.experiment import study
    from tokdyn.studies import token_dynamics

    assert cli.main(["study", "token-dynamics", "--matmul-precision", "fast", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--matmul-precision" in err and "'fast'" in err and "'highest', 'high', 'default'" in err.replace('"', "'")
    assert not (tmp_path / "x").exists()  # refused before anything ran
    with pytest.raises(ValueError, match="matmul_precision.*'fast'"):  # the Python entry point: checked first
        from tokdyn import reproduce

        reproduce.main(reproduce.Config(), str(tmp_path / "y"), matmul_precision="fast")
    assert not (tmp_path / "y").exists()

    seen, before = [], jax.config.jax_default_matmul_precision
    monkeypatch.setattr(
        token_dynamics, "main", lambda cfg, out, *, quiet, plots: seen.append(jax.config.jax_default_matmul_precision)
    )
    assert cli.main(["study", "token-dynamics", "--out", str(tmp_path / "a"), "--no-cache"]) == 0
    assert (
        cli.main(
            ["study", "token-dynamics", "--out", str(tmp_path / "b"), "--no-cache", "--matmul-precision", "default"]
        )
        == 0
    )
    assert seen == ["highest", "default"]
    assert jax.config.jax_default_matmul_precision == before  # only for the run
    out = str(tmp_path / "r")
    assert (
        cli.main(
            [
                "reproduce",
                "--studies",
                "token-dynamics",
                "--out",
                out,
                "--no-cache",
                "--quiet",
                "--no-plots",
                "--matmul-precision",
                "high",
            ]
        )
        == 0
    )  # passed on to every study
    assert seen[2:] == ["high"]
    assert study.read_stamp(out)["matmul_precision"] == "high" and study.read_record(out)["matmul_precision"] == "high"


def test_a_default_run_stamps_no_precision_and_another_is_refused(tmp_path, capsys):
    from tokdyn.experiment import study

    out = str(tmp_path / "td")
    tiny = [
        "--seeds",
        "2",
        "--dim",
        "2",
        "--points-per-cluster",
        "8",
        "--noise",
        "0.3",
        "--n-clusters",
        "3",
        "--no-cache",
        "--quiet",
        "--no-plots",
        "--out",
        out,
    ]
    assert cli.main(["study", "token-dynamics", *tiny]) == 0
    stamp, record = study.read_stamp(out), study.read_record(out)
    assert set(stamp) == {"study", "tokdyn", "code", "config", "sources"}  # no precision: as before the option existed
    assert "matmul_precision" not in record
    assert cli.main(["study", "token-dynamics", *tiny, "--matmul-precision", "highest"]) == 0  # the same run
    assert study.read_stamp(out) == stamp
    assert cli.main(["study", "token-dynamics", *tiny, "--matmul-precision", "high"]) == 2
    assert "matmul_precision: highest there, high now" in capsys.readouterr().err


def test_the_command_makes_a_host_device_of_each_core_it_may_run_on(monkeypatch):
    """A process confined to some of the machine's cores (taskset, a cluster job's cgroup) splits its work over
    those: one host device a core of its affinity mask; without a mask, one a core of the machine; a device count
    the user set is kept."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5}, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")
    cli._host_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=false --xla_force_host_platform_device_count=2"

    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.delenv("XLA_FLAGS")
    cli._host_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    cli._host_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
