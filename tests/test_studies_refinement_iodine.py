"""The variational-refinement rule and the learned IODINE in the studies: refinement as a method
name of the token-dynamics study (paired with the baseline, outside the default four) and as a
fixed method of the scenes study (its prior chosen on the validation split, its FG-ARI checked
against scikit-learn on a direct run of the rule); IODINE as a learned model of the scenes study,
reported in the same tables."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import adjusted_rand_score

from tokdyn import dynamics, io, refinement, train
from tokdyn.data import scenes
from tokdyn.studies import object_discovery
from tokdyn.studies import token_dynamics as td


# ---------------------------------------------------------------------------------------------- token dynamics


@pytest.mark.full
def test_refinement_is_a_method_of_the_token_dynamics_study_paired_with_the_baseline():
    assert "refinement" not in td.Config().methods  # the published four-method family stays as it is
    cfg = td.Config(seeds=5, noise=(0.6,), n_clusters=(3,), methods=("baseline", "refinement"))
    tasks = cfg.tasks()
    assert [idx for _, idx in tasks] == [(0,), (1,)] and tasks[1][0].rule is refinement.REFINEMENT
    runs = td.simulate(cfg)
    alone = td.simulate(dataclasses.replace(cfg, methods=("baseline",)))
    base, mine = runs["method"] == "baseline", runs["method"] == "refinement"
    np.testing.assert_array_equal(runs["seed"][mine], np.arange(5))
    # common random numbers: the baseline's runs are those of a study without refinement
    np.testing.assert_allclose(runs["ari"][base], alone["ari"], rtol=1e-6, atol=1e-6)
    # the refinement rows are the rule's own runs on each seed's key (the baseline's data and tokens)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(cfg.root_seed), s))(jnp.arange(5))
    direct = jax.jit(jax.vmap(lambda k: tasks[1][0](k, method=0, n_clusters=3, noise=np.float32(0.6))))(keys)
    np.testing.assert_allclose(direct["sse"], runs["sse"][mine], rtol=1e-4)
    assert np.all(runs["steps"][mine] >= 1) and np.all((runs["ari"][mine] > -0.5) & (runs["ari"][mine] <= 1))
    # paired against the baseline by seed, as SciPy's paired t-test
    (t,) = td.stat_tests(runs, cfg)
    a, b = runs["ari"][mine].astype(np.float64), runs["ari"][base].astype(np.float64)
    assert t["method"] == "refinement" and t["n"] == 5 and t["mean_diff"] == pytest.approx(np.mean(a - b))
    ref = sps.ttest_rel(a, b)
    if np.isfinite(ref.pvalue):
        assert t["p"] == pytest.approx(float(ref.pvalue), rel=1e-6)


def test_a_users_rule_may_not_take_the_packages_name_and_joins_beside_it():
    with pytest.raises(ValueError, match="'refinement' is the name of one of the package's rules"):
        td.check_rules({"refinement": dynamics.BUILTIN})
    merged = td.check_rules({"mine": dataclasses.replace(refinement.REFINEMENT, hparams=refinement.Hparams(0.5))})
    assert set(merged) == {"refinement", "mine"}
    cfg = td.Config(seeds=2, noise=(0.3,), n_clusters=(3,), methods=("baseline", "refinement", "mine"))
    assert [idx for _, idx in cfg.tasks(merged)] == [(0,), (1, 2)]  # one rule, two settings: one run function
    with pytest.raises(ValueError, match="methods must be one of"):
        td.Config(methods=("baseline", "nope")).validate()


# ---------------------------------------------------------------------------------------------- scenes

CFG = object_discovery.Config(
    size=12,
    max_objects=2,
    scale=(0.3, 0.5),
    n_train=64,
    n_val=6,
    n_test=6,  # as many as n_val: the validation and test splits share their compiled programs
    methods=("baseline", "refinement"),
    temperatures=(0.1,),
    position_scales=(0.5, 1.0),
    refinement_log_scales=(-1.0, -0.5),
    refinement_strengths=(100.0,),
    dyn_steps=30,
    kmeans=False,
    learned=("iodine",),
    seeds=2,
    train_steps=2,
    batch_size=2,
    decoder_hidden=4,
    eval_every=2,
    n_curve=2,
    n_examples=2,
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sc") / "done")
    assert object_discovery.main(CFG, out, quiet=True, plots=False)
    return out


def _direct_fg_ari(cfg, split, seed, hp, position_scale):
    """Per scene: scikit-learn's ARI over the foreground pixels of a direct run of the refinement
    rule from the study's initial tokens."""
    data = object_discovery.split(cfg, split)
    key = object_discovery.method_key(cfg, seed)
    out = []
    for i in range(data.images.shape[0]):
        x = scenes.pixel_features(data.images[i : i + 1], position_scale=position_scale)[0]
        tokens = dynamics.init_tokens(jax.random.fold_in(key, i), cfg.n_slots, x.shape[-1], method="data", x=x)
        labels = np.asarray(
            dynamics.run(x, tokens, hp, rule=refinement.REFINEMENT, n_steps=cfg.dyn_steps, tol=cfg.tol).labels
        )
        mask = np.asarray(data.masks[i]).ravel()
        out.append(adjusted_rand_score(mask[mask > 0], labels[mask > 0]))
    return np.asarray(out)


@pytest.mark.full
def test_refinement_is_a_fixed_method_of_the_scenes_study(finished):
    table = io.read_csv(os.path.join(finished, "results.csv"))
    assert list(table["method"]) == [m for m in ("baseline", "refinement", "iodine") for _ in (0, 1)]
    res = object_discovery.run_fixed(
        CFG, "refinement", object_discovery.split(CFG, "val"), object_discovery.split(CFG, "test"), _no_study()
    )
    # its knobs: the best of the validation sweep, recomputed with scikit-learn on direct runs
    settings = object_discovery.refinement_settings(CFG)
    assert [(float(h.prior_log_scale), float(h.prior_strength)) for h in settings] == [(-1.0, 100.0), (-0.5, 100.0)]
    sweep = np.asarray(
        [[np.mean(_direct_fg_ari(CFG, "val", 0, h, ps)) for ps in CFG.position_scales] for h in settings]
    )
    # (a run that ends at dyn_steps unconverged may end elsewhere in another float32 program: one
    # scene of the six may differ)
    assert np.max(np.abs(res["sweep"] - sweep)) <= 1.0 / CFG.n_val + 1e-4
    i, j = np.unravel_index(np.argmax(res["sweep"]), res["sweep"].shape)
    assert (res["prior_log_scale"], res["prior_strength"]) == (
        float(settings[i].prior_log_scale),
        float(settings[i].prior_strength),
    )
    assert res["position_scale"] == CFG.position_scales[j] and np.isnan(res["temperature"])
    # the reported test FG-ARI of seed 1: scikit-learn on the direct runs at the chosen knobs
    fg = _direct_fg_ari(CFG, "test", 1, settings[i], CFG.position_scales[j])
    assert np.sum(np.abs(res["fg_ari"][1] - fg) < 1e-4) >= CFG.n_test - 1
    rows = table["method"] == "refinement"
    np.testing.assert_allclose(table["fg_ari"][rows], np.mean(res["fg_ari"], axis=1), atol=1e-6)
    assert (
        np.isnan(table["temperature"][rows]).all() and (table["position_scale"][rows] == CFG.position_scales[j]).all()
    )
    summary = open(os.path.join(finished, "summary.md")).read()
    assert (
        f"prior_log_scale s0 = {res['prior_log_scale']:g}, prior_strength kappa = {res['prior_strength']:g}" in summary
    )


class _no_study:
    """A stand-in for a Study that computes every part afresh."""

    def part(self, name, compute, key=None):
        return compute()


@pytest.mark.full
def test_iodine_is_a_learned_model_of_the_scenes_study(finished):
    assert "iodine" not in object_discovery.Config().learned  # opt-in
    table = io.read_csv(os.path.join(finished, "results.csv"))
    rows = table["method"] == "iodine"
    assert rows.sum() == CFG.seeds
    for col in ("fg_ari", "miou", "collapsed", "duplicates", "unused"):
        assert np.all(np.isfinite(table[col][rows])), col
    assert np.all((table["fg_ari"][rows] >= -0.5) & (table["fg_ari"][rows] <= 1))
    assert np.all((table["unused"][rows] >= 0) & (table["unused"][rows] < CFG.n_slots))
    curve = io.read_csv(os.path.join(finished, "learning_curve.csv"))
    assert list(curve["method"]) == ["iodine"] * 2 and list(curve["step"]) == [2, 2]
    assert np.all(np.isfinite(curve["loss"])) and np.all(np.isfinite(curve["val_fg_ari"]))
    record = json.loads(open(os.path.join(finished, "config.json")).read())
    assert record["timings"]["training_s"]["iodine"] > 0
    summary = open(os.path.join(finished, "summary.md")).read()
    assert "**iodine**: 2 steps x 2 seeds trained together" in summary
    # its configuration: the study's sizes and schedule
    icfg = CFG.model_config("iodine")
    assert (icfg.size, icfg.slots, icfg.train.steps, icfg.train.steps_per_call, icfg.seeds, icfg.decoder_hidden) == (
        12,
        3,
        2,
        2,
        2,
        4,
    )
    assert icfg.train == CFG.slot_config("slot_attention").train == train.Config(steps=2, steps_per_call=2, warmup=1)
    assert CFG.model_config("slot_attention") == CFG.slot_config("slot_attention")


def test_the_estimate_counts_refinements_settings_and_iodines_rate():
    base = object_discovery.Config(learned=())
    with_iodine = dataclasses.replace(base, learned=("iodine",))
    extra = with_iodine.estimate().work["training"] - base.estimate().work["training"]
    assert extra == pytest.approx(base.seeds * base.train_steps / object_discovery.IODINE_RATE, rel=1e-9)
    host = with_iodine.estimate().work["host"] - base.estimate().work["host"]
    assert host == pytest.approx(object_discovery.LEARNED_COMPILE)  # its compiles
    no_ref = dataclasses.replace(base, methods=tuple(m for m in base.methods if m != "refinement"))
    one = dataclasses.replace(no_ref, methods=no_ref.methods + ("refinement",))
    per_setting = one.estimate().models - no_ref.estimate().models
    assert per_setting == 3 * 2 * len(base.position_scales) + base.seeds


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(refinement_strengths=(-1.0,)), "refinement_strengths"),
        (dict(refinement_log_scales=(30.0,)), "refinement_log_scales"),
        (dict(refinement_strengths=()), "refinement_log_scales and refinement_strengths must each hold"),
        (dict(refinement_log_scales=(-1.0, -1.0)), "refinement_log_scales"),
        (dict(learned=("iodine", "nope")), "learned"),
    ],
)
def test_bad_refinement_or_model_fields_are_refused_naming_the_field(change, words):
    with pytest.raises((ValueError, TypeError), match=words):
        dataclasses.replace(CFG, **change).validate()
