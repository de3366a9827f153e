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
  1 x 10 + 100 = 110; its rerun compiles nothing (0 measured)."""

import collections
import os
import sys

import jax
import pytest

from tokdyn import cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import counting  # noqa: E402

pytestmark = pytest.mark.fast_compile

TRAINING = ("per_device", "scan", "step")  # the names of train_many's programs


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
    assert not [n for n in again.names if any(t in n for t in TRAINING)], again.names


def test_visual_token_study_compiles_per_training_and_its_rerun_nothing_of_it(tmp_path):
    from test_vtae_study import TINY
    from tokdyn.studies import visual_tokens

    cfg = cli.config_from_args(visual_tokens.Config, cli.build_parser(TINY).parse_args(TINY))
    _check("visual-tokens", visual_tokens, cfg, str(tmp_path / "vt"), 3, 5, 10, 2)


@pytest.mark.slow
def test_video_study_compiles_a_bounded_number_and_its_rerun_nothing(tmp_path):
    from test_video_learned import TINY
    from tokdyn.studies import video

    _check("video", video, TINY, str(tmp_path / "video"), 1, 10, 100, 0)
