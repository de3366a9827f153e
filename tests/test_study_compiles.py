"""Compiles per study: a learned study at its tests' tiny configuration, run afresh with JAX's
in-memory caches cleared, asks the backend for a bounded number of programs (``jax.monitoring``'s
``backend_compile_duration`` events, ``benchmarks/counting.py``'s ``Compiles``: one per program
JAX compiles or loads from the persistent compilation cache, so the count does not depend on that
cache), and a rerun on the same directory, which reads every finished part back, compiles nothing
of the training.

The bounds are (distinct trained programs) x (programs per training) + (the study's fixed
programs), from the programs named at the commit these tests were written at (figures off):

- visual-token study (``test_vtae_study.py``'s TINY: parts main and curriculum): 3 trainings (the
  main model; the curriculum part's all-types and curriculum runs: a trainer each), each 4
  programs (named ``<lambda>``, ``per_device``, ``scan`` and ``convert_element_type``), and 9
  fixed ones (``_threefry_seed``, ``_threefry_split``, ``_threefry_fold_in``, ``tile``,
  ``ravel``, ``reshape``, ``stage`` and two ``broadcast_in_dim``): 21 measured; the bound allows
  one more per training and one more fixed (3 x 5 + 10 = 25). Its rerun: 2 measured
  (``_threefry_seed`` and ``stage``), none of them a training's.
- video study (``test_video_learned.py``'s TINY, slow): 106 measured (one learned predictor's
  training; the rest, the fixed study's programs, mostly host-side indexing of per-video arrays,
  ``squeeze``, ``dynamic_slice``, ``stack`` and ``stage``: one program per distinct shape), bound
  1 x 5 + 105 = 110; its rerun compiles nothing (0 measured).
- scenes study (``test_scenes_study.py``'s CFG, slow): 129 measured (Slot Attention's training,
  ``step``; the token-dynamics methods and metrics, and the same host-side indexing), bound
  1 x 5 + 135 = 140. Its rerun: 49 measured, bound 55: it draws the three splits again
  (``sprite_scenes``) and stacks them (``stage``, ``stack``), none of it a training's.
- grid-diffusion study (``test_grid_diffusion_runner.py``'s CFG, slow): 94 measured (3 trainings:
  the autoencoder, ``train``, and the two sequence models, ``per_device``), bound 3 x 5 + 85 = 100.
  Its rerun: 44 measured, bound 50: the autoencoder's encoding is run again op by op (``matmul``,
  ``relu``, ``exp``, ``_argmax``: one program per operation), none of it a training's."""

import collections
import os
import sys

import jax
import pytest

from tokdyn import cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import counting  # noqa: E402


TRAINING = tuple(f"jit({n})" for n in ("per_device", "scan", "step", "train"))  # the trainings' programs


def _count(study, cfg, out):
    jax.clear_caches()
    with counting.Compiles() as c:
        study.main(cfg, out, quiet=True, plots=False)
    return c


def _check(name, study, cfg, out, trainings, per_training, fixed, rerun_at_most):
    fresh = _count(study, cfg, out)
    bound = trainings * per_training + fixed
    assert 0 < fresh.count <= bound, (
        f"{name}: {fresh.count} programs compiled by a fresh run, at most {trainings} trainings x "
        f"{per_training} + {fixed} = {bound} allowed: {collections.Counter(fresh.names).most_common()}"
    )
    again = _count(study, cfg, out)
    assert again.count <= rerun_at_most, (
        f"{name}: a rerun that reads everything back compiled {again.count} programs "
        f"(at most {rerun_at_most}): {collections.Counter(again.names).most_common()}"
    )
    assert not [n for n in again.names if n in TRAINING], again.names


@pytest.mark.full  # a study end to end and its rerun; the default run: tests/test_train_dispatch.py's compile counts
def test_visual_token_study_compiles_per_training_and_its_rerun_nothing_of_it(tmp_path):
    from test_vtae_study import TINY
    from tokdyn.studies import visual_tokens

    cfg = cli.config_from_args(visual_tokens.Config, cli.build_parser(TINY).parse_args(TINY))
    _check("visual-tokens", visual_tokens, cfg, str(tmp_path / "vt"), 3, 5, 10, 2)


@pytest.mark.slow
def test_video_study_compiles_a_bounded_number_and_its_rerun_nothing(tmp_path):
    from test_video_learned import TINY
    from tokdyn.studies import video

    _check("video", video, TINY, str(tmp_path / "video"), 1, 5, 105, 0)


@pytest.mark.slow
def test_scenes_study_compiles_a_bounded_number_and_its_rerun_no_training(tmp_path):
    from test_scenes_study import CFG
    from tokdyn.studies import object_discovery

    _check("scenes", object_discovery, CFG, str(tmp_path / "scenes"), 1, 5, 135, 55)


@pytest.mark.slow
def test_grid_diffusion_study_compiles_a_bounded_number_and_its_rerun_no_training(tmp_path):
    from test_grid_diffusion_runner import CFG
    from tokdyn.studies import grid_diffusion

    _check("grid-diffusion", grid_diffusion, CFG, str(tmp_path / "gd"), 3, 5, 85, 50)
