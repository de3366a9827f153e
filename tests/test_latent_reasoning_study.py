"""The latent-reasoning study (tokdyn.studies.latent_reasoning): a micro run's tables are its kept answers
scored against the test letters (accuracy per family, the chance level from the training pool; in the full tier
two recipes' paired t-test is SciPy's), each seed's tested organism is a checkpoint that tokdyn reads back and that gives the kept answers
(its latent mode written where the recipe feeds latents back), a rerun trains nothing, and bad options exit 2
before any work. The full tier opens a saved organism in transformers
(test_organism_training.test_transformers_runs_a_trained_organism_in_latent_mode_as_tokdyn_does runs the same
loop on an organism saved by organism.training.save, which the study calls)."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
from scipy import stats as sps

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from tokdyn import cli, io  # noqa: E402
from tokdyn.models import qwen2_5_vl  # noqa: E402
from tokdyn.data import grid_tasks  # noqa: E402
from tokdyn.models.organism import tasks as organism_tasks  # noqa: E402
from tokdyn.models.organism import training as organism  # noqa: E402
from tokdyn.studies import latent_reasoning as lo  # noqa: E402
from tokdyn.train import optim, store  # noqa: E402

MICRO = lo.Config(
    variants=("latent", "coconut"),  # coconut: 2 calls, its caption stage then its last (latents) stage
    patience=0.5,
    min_fraction=0.5,
    min_delta=0.5,
    loss_delta=0.0,
    training=organism.Config(
        tasks=organism_tasks.Config(task=grid_tasks.Config(grid_size=4, n_colours=4, families=("read", "gravity"))),
        hidden_size=32,
        heads=2,
        kv_heads=1,
        intermediate_size=48,
        vision_depth=1,
        vision_width=16,
        n_latents=2,
        curriculum_stages=1,
        train=optim.Config(steps=4, steps_per_call=2, warmup=0, decay="constant", clip_norm=1.0),
        batch_size=4,
        n_train=16,
        n_val=8,
        n_test=8,
        seeds=2,
    ),
)


# The micro run trains two Qwen2.5-VL recipes (about 50 s of compiles on the 2-core VM), so it runs in the full
# tier; the default tier covers its parts: the answers it tables (test_organism_training's
# test_answers_are_the_teacher_forced_letters_scored_per_family), the training pass and its losses
# (test_vlm_training), the tables, stop rule and paired tests over a store (experiment.variants: its own tests),
# and this study's refusals and quick preset (below).
@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("organisms") / "out")
    assert lo.main(MICRO, out, quiet=True, plots=False)
    return out


@pytest.mark.full
def test_a_micro_run_tables_its_kept_answers_and_saves_each_organism(micro):
    out = micro
    data = organism.splits(MICRO.training)
    letter, family = np.asarray(data.test.letter), np.asarray(data.test.family)
    acc = io.read_csv(f"{out}/accuracy.csv")
    correct = {}
    for name in MICRO.variants:
        answers = store.read_answers(out, name)
        assert answers.shape == (2, 8) and set(np.unique(answers)) <= set(range(-1, 4))
        correct[name] = answers == letter[None]
        for fam in ("read", "gravity", "all"):
            sel = np.ones(8, bool) if fam == "all" else family == grid_tasks.FAMILIES.index(fam)
            rows = (acc["variant"] == name) & (acc["family"] == fam)
            np.testing.assert_allclose(acc["accuracy"][rows], correct[name][:, sel].mean(1))
    # the chance level: each family's most frequent training letter, on the test set
    for fam in ("read", "gravity"):
        i = grid_tasks.FAMILIES.index(fam)
        top = np.bincount(np.asarray(data.train.letter)[np.asarray(data.train.family) == i]).argmax()
        want = np.mean(letter[family == i] == top)
        assert np.all(acc["chance"][acc["family"] == fam] == want)
    # each seed's tested state saved as a checkpoint; latents written only by the recipe that feeds them back
    res = store.read_result(store.paths(out, "latent")["result"])
    record = json.loads(open(f"{out}/config.json").read())
    assert record["organisms"]["latent"] == [lo.organism_dir(out, "latent", s) for s in range(2)]
    # the saved organisms, read back, give the kept answers (the same program on the same weights)
    models = [qwen2_5_vl.load(lo.organism_dir(out, "latent", s), dtype="float32").params for s in range(2)]
    stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), *models)
    np.testing.assert_array_equal(
        organism.answers(MICRO.training, "latent", stacked, data.test), store.read_answers(out, "latent")
    )
    assert int(res["tested_step"][0]) > 0
    # the result commits each organism's files as saved (what latent-diagnostics checks before reading them)
    assert res["organisms_sha256"] == [lo.organism_digests(lo.organism_dir(out, "latent", s)) for s in range(2)]
    assert set(res["organisms_sha256"][0]) >= {"config.json", "model.safetensors", "latent_mode.json"}
    mode = json.loads(open(f"{lo.organism_dir(out, 'latent', 0)}/latent_mode.json").read())
    assert mode["size"] == MICRO.training.n_latents
    # a curriculum's curve: the start marker's loss, logged once latents come in, NaN on the caption stage's rows
    curve = io.read_csv(f"{out}/curves/coconut.csv")
    assert list(curve["step"]) == [2, 2, 4, 4], curve["step"]
    assert np.isnan(curve["start_ce"][:2]).all() and np.isfinite(curve["start_ce"][2:]).all(), curve["start_ce"]


@pytest.mark.full
def test_the_recipes_are_tested_against_direct_as_scipy_tests_them(tmp_path):
    """Two recipes: tests.csv's paired t-test of latent against direct on the per-instance accuracy (the mean
    over seeds) is SciPy's; direct, which feeds no latents back, is saved without a latent mode. The default
    tier's micro run trains latent and coconut (the tables of kept answers, the checkpoints, a curriculum's curve)."""
    cfg = dataclasses.replace(MICRO, variants=("direct", "latent"))
    out = str(tmp_path / "out")
    assert lo.main(cfg, out, quiet=True, plots=False)
    letter = np.asarray(organism.splits(cfg.training).test.letter)
    a, b = ((store.read_answers(out, n) == letter[None]).mean(0) for n in ("latent", "direct"))
    tests = io.read_csv(f"{out}/tests.csv")
    row = (tests["variant"] == "latent") & (tests["against"] == "direct") & (tests["family"] == "all")
    assert tests["mean_diff"][row][0] == pytest.approx(np.mean(a - b))
    if np.any(a != b) and bool(tests["tested"][row][0]):
        assert tests["p"][row][0] == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-9)
    assert not os.path.exists(lo.organism_dir(out, "direct", 0) + "/latent_mode.json")
    assert os.path.exists(lo.organism_dir(out, "direct", 1) + "/config.json")


@pytest.mark.full
def test_an_organism_changed_after_saving_is_refused_and_saved_again_from_its_checkpoint(micro, tmp_path):
    """What the refusal of a changed organism advises works: without its result the recipe is tested again from
    its training checkpoint (no step trained) and its organisms saved again, as they were."""
    import shutil

    out = str(tmp_path / "copy")
    shutil.copytree(micro, out)
    where = lo.organism_dir(out, "latent", 0)
    with open(f"{where}/model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(lo.study_dir.Refused, match="'latent' seed 0"):
        lo.verify_organisms(out, ["latent"])
    os.remove(store.paths(out, "latent")["result"])
    assert lo.main(MICRO, out, quiet=True, plots=False)
    lo.verify_organisms(out, ["latent"])
    assert (
        open(f"{where}/model.safetensors", "rb").read()
        == open(lo.organism_dir(micro, "latent", 0) + "/model.safetensors", "rb").read()
    )


@pytest.mark.full
def test_a_rerun_trains_nothing_and_reports_the_same(micro, monkeypatch):
    before = open(f"{micro}/accuracy.csv").read()
    monkeypatch.setattr(organism, "train_models", lambda *a, **k: pytest.fail("a finished recipe trained again"))
    assert lo.main(MICRO, micro, quiet=True, plots=False)
    assert open(f"{micro}/accuracy.csv").read() == before


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--variants", "direct,dreaming"], "recipe"),
        (["--variants", "direct,direct"], "more than once"),
        (["--tested", "worst"], "tested"),
        (["--n-options", "9"], "n_options"),
        (["--hidden-size", "30"], "hidden_size"),
    ],
)
def test_bad_options_exit_2_before_any_work(argv, words, tmp_path, capsys):
    code = cli.main(["study", "latent-reasoning", *argv, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_quick_preset_says_so_and_validates():
    q = lo.Config.quick().validate()
    assert q.preset == "quick" and q.training.train.steps < lo.Config().training.train.steps
    assert dataclasses.replace(lo.Config(), variants=tuple(organism.VARIANTS)).validate()


def test_the_estimate_prices_every_recipe_by_its_measured_step():
    """Every recipe has its step's cost (a new recipe without one fails here, not in a user's estimate), and the
    estimate's training work is direct's times the recipes' summed costs."""
    assert set(lo.RECIPE_COST) == set(organism.VARIANTS)
    one = lo.Config(variants=("direct",)).estimate().work["training"]
    four = lo.Config(variants=("direct", "text", "latent", "pause")).estimate().work["training"]
    assert four == pytest.approx(one * sum(lo.RECIPE_COST[n] for n in ("direct", "text", "latent", "pause")))
