"""Bad input to the kernels of metrics, assignment and diffusion.

* Host data (NumPy arrays, Python numbers) with a bad value are refused with a ValueError /
  TypeError that names the argument, before anything is traced or compiled.
* The same values held in JAX arrays (device arrays, or tracers inside a user's jit / vmap), which
  the checks never copy to the host, give NaN or the documented sentinel -- never a plausible number.
* Valid input gives the reference values (scikit-learn, SciPy, NumPy, closed forms), on the host
  and under jit alike.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from conftest import jax_compilations, without_host_reads
from tokdyn import assignment, metrics
from tokdyn import diffusion

KEY = jax.random.key(0)  # made here: creating a key may compile
GAUSS = diffusion.gaussian("linear", 10)
UNI = diffusion.discrete("uniform", 3, T=10)  # C = S = 3
ABS = diffusion.discrete("absorbing", 3, T=10)  # C = 3, S = 4 (state 3 is the mask)

# a labeling with one true label (2) outside [0, n_true) = [0, 2)
T_BAD = np.array([0, 0, 0, 1, 1, 1, 2, 2], np.int32)
P_OK = np.array([0, 0, 1, 1, 1, 0, 1, 1], np.int32)


def _refusals():
    x = np.zeros((8, 2), np.float32)
    centers = np.zeros((2, 2), np.float32)
    masks = np.array([0, 1, 1, 2, 2, 3], np.int32)  # 3: outside [0, n_true) = [0, 3)
    preds = np.array([0, 0, 1, 1, 2, 2], np.int32)
    nan_benefit = np.array([[0.1, np.nan, 0.3], [0.2, 0.5, 0.1]], np.float32)
    inf_benefit = np.array([[0.1, 0.2], [np.inf, 0.5]], np.float32)
    ints2 = np.array([0, 1], np.int32)
    logits = np.zeros((2, 3), np.float32)
    return {
        # metrics: labels outside their bounds
        "ari": (
            lambda: metrics.ari(T_BAD, P_OK, n_true=2, n_pred=2),
            r"labels_true must hold labels in \[0, n_true\) = \[0, 2\), got 2 at index 6",
        ),
        "ari_negative": (
            lambda: metrics.ari(P_OK, np.where(P_OK == 1, -1, 0), n_true=2, n_pred=2),
            r"labels_pred must hold labels in \[0, n_pred\) = \[0, 2\), got -1",
        ),
        "nmi": (lambda: metrics.nmi(T_BAD, P_OK, n_true=2, n_pred=2), r"labels_true must hold labels in \[0, n_true\)"),
        "nmi_lists": (lambda: metrics.nmi([0, 1], [0, 5], n_true=2, n_pred=2), r"labels_pred .* got 5 at index 1"),
        "contingency": (
            lambda: metrics.contingency(P_OK, T_BAD, n_true=2, n_pred=2),
            r"labels_pred must hold labels in \[0, n_pred\)",
        ),
        "sse": (lambda: metrics.sse(x, T_BAD, centers), r"labels must hold labels in \[0, K\) = \[0, 2\)"),
        "cluster_sizes": (lambda: metrics.cluster_sizes(T_BAD, 2), r"labels must hold labels in \[0, n_clusters\)"),
        "n_used": (lambda: metrics.n_used(T_BAD, 2), r"labels must hold labels in \[0, n_clusters\)"),
        "collapsed": (lambda: metrics.collapsed(T_BAD, 2, 2), r"labels must hold labels in \[0, n_clusters\)"),
        "fg_ari": (
            lambda: metrics.fg_ari(masks, preds, n_true=3, n_pred=3),
            r"masks_true must hold ids in \[0, n_true\) = \[0, 3\), got 3",
        ),
        "matched_iou": (
            lambda: metrics.matched_iou(preds, masks, n_true=3, n_pred=3),
            r"labels_pred must hold ids in \[0, n_pred\) = \[0, 3\), got 3",
        ),
        "matched_iou_host": (lambda: metrics.matched_iou_host(masks, preds, n_true=3, n_pred=3), r"masks_true"),
        # assignment: non-finite benefits
        "assignment_nan": (
            lambda: assignment.linear_assignment(nan_benefit),
            r"benefit must be finite: it holds 1 NaN or infinite",
        ),
        "assignment_inf": (lambda: assignment.linear_assignment(inf_benefit), r"benefit must be finite"),
        # diffusion: the reported cases
        "q_sample_discrete_t_99": (
            lambda: diffusion.q_sample_discrete(KEY, UNI, ints2, 99),
            r"t must be in 0\.\.10 \(T = 10\), got 99",
        ),
        "q_sample_discrete_t_-3": (
            lambda: diffusion.q_sample_discrete(KEY, UNI, ints2, -3),
            r"t must be in 0\.\.10 \(T = 10\), got -3",
        ),
        "q_sample_discrete_x0_7": (
            lambda: diffusion.q_sample_discrete(KEY, UNI, np.array([0, 7]), 3),
            r"x0 must hold classes in \[0, classes\) = \[0, 3\), got 7 at index \(1,\)",
        ),
        "q_sample_discrete_float_x0": (
            lambda: diffusion.q_sample_discrete(KEY, UNI, np.array([0.0, 1.0]), 3),
            r"x0 must hold integer classes .* got dtype float64",
        ),
        "q_sample_t_99": (
            lambda: diffusion.q_sample(KEY, GAUSS, np.zeros(3), 99),
            r"t must be in 0\.\.10 \(T = 10\), got 99",
        ),
        "q_sample_float_t": (
            lambda: diffusion.q_sample(KEY, GAUSS, np.zeros(3), 2.0),
            r"t must be an integer time step",
        ),
        "q_sample_vector_t": (
            lambda: diffusion.q_sample(KEY, GAUSS, np.zeros(3), np.array([1, 2])),
            r"t must be a scalar",
        ),
        "posterior_mean_var_t_0": (
            lambda: diffusion.posterior_mean_var(GAUSS, np.zeros(3), np.zeros(3), 0),
            r"t must be in 1\.\.10 \(T = 10\), got 0",
        ),
        "hybrid_loss_classes": (
            lambda: diffusion.hybrid_loss(UNI, ints2, ints2, 3, np.zeros((2, 4), np.float32)),
            r"x0_logits must have a last axis of 3 \(proc.classes\), got shape \(2, 4\)",
        ),
        # diffusion: the other functions
        "q_sample_wrong_process": (
            lambda: diffusion.q_sample(KEY, UNI, np.zeros(3), 1),
            r"proc must be a tokdyn.diffusion.Gaussian",
        ),
        "q_sample_bad_key": (lambda: diffusion.q_sample(0, GAUSS, np.zeros(3), 1), r"key must be a PRNG key"),
        "predict_x0_shapes": (
            lambda: diffusion.predict_x0(GAUSS, np.zeros(3), 2, np.zeros(4)),
            r"eps must have the shape of x_t",
        ),
        "predict_x0_t": (lambda: diffusion.predict_x0(GAUSS, np.zeros(3), 11, np.zeros(3)), r"t must be in 1\.\.10"),
        "ddpm_step_t": (lambda: diffusion.ddpm_step(KEY, GAUSS, np.zeros(3), 0, np.zeros(3)), r"t must be in 1\.\.10"),
        "ddpm_step_clip": (
            lambda: diffusion.ddpm_step(KEY, GAUSS, np.zeros(3), 2, np.zeros(3), clip=-1.0),
            r"clip must be in",
        ),
        "sample_shape": (
            lambda: diffusion.sample(KEY, GAUSS, lambda x, t: x, (2, -1)),
            r"shape must be a tuple of ints >= 0",
        ),
        "sample_fn": (lambda: diffusion.sample(KEY, GAUSS, None, (2,)), r"eps_fn must be a callable"),
        "ddim_eta": (
            lambda: diffusion.ddim_sample(KEY, GAUSS, lambda x, t: x, (2,), 3, eta=2.0),
            r"eta must be in \[0, 1\]",
        ),
        "ddim_steps": (lambda: diffusion.ddim_sample(KEY, GAUSS, lambda x, t: x, (2,), 11), r"steps must be <= T=10"),
        "transition_matrix_t": (lambda: diffusion.transition_matrix(UNI, 0), r"t must be in 1\.\.10"),
        "cumulative_matrix_t": (lambda: diffusion.cumulative_matrix(UNI, 11), r"t must be in 0\.\.10"),
        "marginal_axis": (
            lambda: diffusion.marginal(ABS, np.ones((2, 3), np.float32) / 3, 2),
            r"probs must have a last axis of 4 \(states\)",
        ),
        "step_likelihood_state": (
            lambda: diffusion.step_likelihood(ABS, np.array([0, 4]), 2),
            r"x_t must hold states in \[0, states\) = \[0, 4\), got 4",
        ),
        "posterior_logits_axis": (
            lambda: diffusion.posterior_logits(UNI, np.ones((2, 2), np.float32), ints2, 2),
            r"x0_probs must have a last axis of 3",
        ),
        "posterior_logits_cells": (
            lambda: diffusion.posterior_logits(UNI, np.ones((3, 3), np.float32), ints2, 2),
            r"x0_probs must have shape \(2, 3\)",
        ),
        "hybrid_loss_t": (lambda: diffusion.hybrid_loss(UNI, ints2, ints2, 0, logits), r"t must be in 1\.\.10"),
        "hybrid_loss_float_x0": (
            lambda: diffusion.hybrid_loss(UNI, np.zeros(2), ints2, 2, logits),
            r"x0 must hold integer",
        ),
        "hybrid_loss_state": (
            lambda: diffusion.hybrid_loss(ABS, ints2, np.array([4, 0]), 2, logits),
            r"x_t must hold states in \[0, states\) = \[0, 4\), got 4",
        ),
        "hybrid_loss_lam": (lambda: diffusion.hybrid_loss(UNI, ints2, ints2, 2, logits, lam=-1.0), r"lam must be in"),
        "prior_kl_class": (
            lambda: diffusion.prior_kl(ABS, np.array([3])),
            r"x0 must hold classes in \[0, classes\) = \[0, 3\)",
        ),
        "nll_bound_class": (
            lambda: diffusion.nll_bound(KEY, UNI, lambda x, t: x, np.array([0, 5])),
            r"x0 must hold classes",
        ),
        "published_classes": (lambda: diffusion.published_cumulative_matrix(0.5, 1), r"classes must be an int >= 2"),
        "published_alpha": (lambda: diffusion.published_cumulative_matrix(1.5, 3), r"alpha_bar_t must be in \[0, 1\]"),
        "ddim_times_T": (lambda: diffusion.ddim_times(0, 1), r"T must be an int >= 1"),
    }


REFUSALS = _refusals()


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_host_input_is_refused_before_tracing(case):
    call, match = REFUSALS[case]
    with jax_compilations() as compiled:
        with pytest.raises((ValueError, TypeError), match=match):
            call()
    assert compiled == []


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def _labelings(seed, n=60, k_true=4, k_pred=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, k_true, n).astype(np.int32), rng.integers(0, k_pred, n).astype(np.int32)


def test_valid_labels_match_sklearn_on_host_and_under_jit():
    t, p = _labelings(0)
    mask = np.random.default_rng(1).random(t.size) < 0.8
    for bounds in (dict(n_true=4, n_pred=3), {}):
        host = (metrics.ari(t, p, **bounds), metrics.nmi(t, p, **bounds), metrics.ari(t, p, mask, **bounds))
        jitted = jax.jit(
            lambda a, b, m: (metrics.ari(a, b, **bounds), metrics.nmi(a, b, **bounds), metrics.ari(a, b, m, **bounds))
        )(jnp.asarray(t), jnp.asarray(p), jnp.asarray(mask))
        want = (adjusted_rand_score(t, p), normalized_mutual_info_score(t, p), adjusted_rand_score(t[mask], p[mask]))
        np.testing.assert_allclose(np.asarray(host, np.float64), want, atol=1e-6)
        np.testing.assert_allclose(np.asarray(jitted, np.float64), want, atol=1e-6)
    np.testing.assert_array_equal(
        metrics.contingency(t, p, n_true=4, n_pred=3), np.bincount(t * 3 + p, minlength=12).reshape(4, 3)
    )
    np.testing.assert_array_equal(metrics.cluster_sizes(p, 3), np.bincount(p, minlength=3))
    x = np.random.default_rng(2).normal(size=(t.size, 2)).astype(np.float32)
    centers = np.random.default_rng(3).normal(size=(3, 2)).astype(np.float32)
    np.testing.assert_allclose(metrics.sse(x, p, centers), np.sum((x - centers[p]) ** 2), rtol=1e-5)
    traced = jax.jit(metrics.sse)(jnp.asarray(x), jnp.asarray(p), jnp.asarray(centers), jnp.asarray(mask))
    np.testing.assert_allclose(traced, np.sum(((x - centers[p]) ** 2)[mask]), rtol=1e-5)


def test_traced_labels_out_of_range_give_nan_or_a_sentinel():
    """The user's report: ARI with a label 2 for n_true = 2, held in JAX arrays."""
    t, p = jnp.asarray(T_BAD), jnp.asarray(P_OK)
    bounds = dict(n_true=2, n_pred=2)
    x, centers = jnp.ones((8, 2)), jnp.zeros((2, 2))

    def everything(t, p):
        return dict(
            ari=metrics.ari(t, p, **bounds),
            nmi=metrics.nmi(t, p, **bounds),
            ari_pred=metrics.ari(p, t, **bounds),
            contingency=metrics.contingency(t, p, **bounds),
            sse=metrics.sse(x, t, centers),
            sizes=metrics.cluster_sizes(t, 2),
            used=metrics.n_used(t, 2),
            collapsed=metrics.collapsed(t, 2, 2),
        )

    for out in (everything(t, p), jax.jit(everything)(t, p)):  # device arrays eagerly, and tracers
        for name in ("ari", "nmi", "ari_pred", "sse"):
            assert np.isnan(out[name]), name
        np.testing.assert_array_equal(out["contingency"], -np.ones((2, 2)))
        np.testing.assert_array_equal(out["sizes"], [-1, -1])
        assert int(out["used"]) == -1 and bool(out["collapsed"])
    # negative labels, a label of the predicted side, and a narrow dtype in which 250 < 300 wraps
    assert np.isnan(metrics.ari(jnp.asarray(P_OK), jnp.asarray(P_OK) - 1, **bounds))
    assert np.isnan(metrics.nmi(p, t, **bounds))
    assert np.isnan(metrics.ari(jnp.array([0, 1, 250], jnp.uint8), jnp.array([0, 1, 1], jnp.uint8), n_true=3, n_pred=2))
    assert np.isnan(metrics.sse(x[:3], jnp.array([0, 1, -1]), centers))


def test_only_unmasked_out_of_range_labels_count_and_only_their_run_is_nan():
    t, p = _labelings(4, n=40, k_true=3, k_pred=3)
    mask = np.ones(t.size, bool)
    mask[-5:] = False
    t_pad = np.where(mask, t, 7).astype(np.int32)  # out of range, masked out
    bad = t.copy()
    bad[3] = 3  # out of range, valid
    fn = jax.jit(
        jax.vmap(lambda a, b, m: (metrics.ari(a, b, m, n_true=3, n_pred=3), metrics.nmi(a, b, m, n_true=3, n_pred=3)))
    )
    ari, nmi = fn(
        jnp.asarray(np.stack([t_pad, bad])), jnp.asarray(np.stack([p, p])), jnp.asarray(np.stack([mask, mask]))
    )
    np.testing.assert_allclose(ari[0], adjusted_rand_score(t[mask], p[mask]), atol=1e-6)
    np.testing.assert_allclose(nmi[0], normalized_mutual_info_score(t[mask], p[mask]), atol=1e-6)
    assert np.isnan(ari[1]) and np.isnan(nmi[1])
    # the host path: masked-out garbage is allowed
    np.testing.assert_allclose(
        metrics.ari(t_pad, p, mask, n_true=3, n_pred=3), adjusted_rand_score(t[mask], p[mask]), atol=1e-6
    )


def test_segmentation_metrics_with_ids_out_of_range():
    masks = np.array([0, 0, 1, 1, 2, 2, 2, 0], np.int32)
    preds = np.array([0, 0, 1, 1, 1, 2, 2, 0], np.int32)
    kw = dict(n_true=3, n_pred=3)
    fg = masks > 0
    fns = jax.jit(lambda m, p: (metrics.fg_ari(m, p, **kw), metrics.matched_iou(m, p, **kw)))
    fg_ari, miou = fns(jnp.asarray(masks), jnp.asarray(preds))  # valid: the references
    np.testing.assert_allclose(fg_ari, adjusted_rand_score(masks[fg], preds[fg]), atol=1e-6)
    np.testing.assert_allclose(miou, metrics.matched_iou_host(masks, preds, **kw), atol=1e-6)
    for m, p in (
        (np.where(masks == 2, 3, masks), preds),  # an object id >= n_true
        (masks, np.where(preds == 2, 5, preds)),
    ):  # a segment id >= n_pred on the foreground
        out = fns(jnp.asarray(m), jnp.asarray(p))
        assert np.isnan(out[0]) and np.isnan(out[1])
    # a bad segment id on a background pixel: it is in a segment (IoU counts every pixel), not in FG-ARI
    p = preds.copy()
    p[0] = 5
    fg_ari, miou = fns(jnp.asarray(masks), jnp.asarray(p))
    np.testing.assert_allclose(fg_ari, adjusted_rand_score(masks[fg], preds[fg]), atol=1e-6)
    assert np.isnan(miou)
    # the scene without objects (n_true = 1) is checked too
    one = jax.jit(lambda m, p: metrics.matched_iou(m, p, n_true=1, n_pred=2))
    assert float(one(jnp.zeros(4, jnp.int32), jnp.array([0, 1, 1, 0]))) == 1.0
    assert np.isnan(one(jnp.zeros(4, jnp.int32), jnp.array([0, 1, 2, 0])))


# ---------------------------------------------------------------------------------------------
# assignment
# ---------------------------------------------------------------------------------------------


def test_traced_non_finite_benefits_give_minus_one_for_every_row():
    rng = np.random.default_rng(5)
    good = rng.random((4, 3, 5)).astype(np.float32)
    bad = good.copy()
    bad[1, 2, 3] = np.nan
    bad[2, 0, 0] = np.inf
    bad[3, 1, 4] = -np.inf
    cols = np.asarray(jax.jit(jax.vmap(assignment.linear_assignment))(jnp.asarray(bad)))
    rows, want = linear_sum_assignment(good[0], maximize=True)
    np.testing.assert_allclose(good[0][np.arange(3), cols[0]].sum(), good[0][rows, want].sum(), rtol=1e-6)
    np.testing.assert_array_equal(cols[1:], -np.ones((3, 3)))
    # eagerly on a device array, and the one-column case
    np.testing.assert_array_equal(assignment.linear_assignment(jnp.asarray(bad[1])), [-1, -1, -1])
    np.testing.assert_array_equal(assignment.linear_assignment(jnp.array([[jnp.nan]])), [-1])
    np.testing.assert_array_equal(assignment.linear_assignment(jnp.array([[0.5]])), [0])
    # large finite benefits are not mistaken for non-finite ones (their range overflows float32)
    np.testing.assert_array_equal(assignment.linear_assignment(jnp.array([[3e38, -3e38], [0.0, 1.0]])), [0, 1])


# ---------------------------------------------------------------------------------------------
# diffusion
# ---------------------------------------------------------------------------------------------


def _float_outputs(t):
    """Every float output of the diffusion kernels at time ``t`` (valid classes and states)."""
    x = jnp.linspace(-1.0, 1.0, 3)
    x0, xt = jnp.array([0, 2]), jnp.array([1, 2])
    logits = jnp.array([[1.0, 0.0, -1.0], [0.0, 0.5, 0.0]])
    mean, var = diffusion.posterior_mean_var(GAUSS, x, -x, t)
    return dict(
        q_sample=diffusion.q_sample(KEY, GAUSS, x, t)[0],
        predict_x0=diffusion.predict_x0(GAUSS, x, t, x),
        mean=mean,
        var=var,
        ddpm_step=diffusion.ddpm_step(KEY, GAUSS, x, t, x, clip=1.0),
        transition=diffusion.transition_matrix(UNI, t),
        cumulative=diffusion.cumulative_matrix(ABS, t),
        marginal=diffusion.marginal(ABS, jnp.full((2, 4), 0.25), t),
        step_likelihood=diffusion.step_likelihood(ABS, xt, t),
        posterior=diffusion.posterior_logits(ABS, jax.nn.softmax(logits), xt, t),
        hybrid=diffusion.hybrid_loss(UNI, x0, xt, t, logits, 0.1),
    )


def test_traced_time_outside_its_range_gives_nan_or_minus_one():
    outputs = jax.jit(_float_outputs)
    draws = jax.jit(lambda t, x0: diffusion.q_sample_discrete(KEY, ABS, x0, t))
    x0 = jnp.array([0, 1, 2])
    for t in (-3, 0, 11, 99):
        out = outputs(jnp.int32(t))
        for name, value in out.items():
            if t == 0 and name in ("q_sample", "cumulative", "marginal"):  # 0..T: x_0 itself
                assert np.all(np.isfinite(jax.tree_util.tree_leaves(value))), name
                continue
            for leaf in jax.tree_util.tree_leaves(value):
                assert np.all(np.isnan(leaf)), (t, name)
        want = np.asarray(x0) if t == 0 else -np.ones(3)
        np.testing.assert_array_equal(draws(jnp.int32(t), x0), want)
    # a device array, not traced, is not copied to the host either: NaN too
    assert np.all(np.isnan(diffusion.q_sample(KEY, GAUSS, jnp.ones(3), jnp.int32(99))[0]))
    np.testing.assert_array_equal(diffusion.q_sample_discrete(KEY, UNI, x0, jnp.int32(-3)), -np.ones(3))


def test_traced_classes_and_states_out_of_range_give_nan_or_minus_one_in_their_cells():
    x0 = jnp.array([0, 7, 2, -1])
    xt = jnp.array([0, 1, 9, 3])  # 9: outside [0, S) = [0, 4)
    logits = jnp.zeros((4, 3))

    @jax.jit
    def f(x0, xt):
        return (
            diffusion.q_sample_discrete(KEY, ABS, x0, 5),
            diffusion.hybrid_loss(ABS, x0, xt, 5, logits),
            diffusion.prior_kl(ABS, x0),
            diffusion.step_likelihood(ABS, xt, 5),
            diffusion.posterior_logits(ABS, jax.nn.one_hot(jnp.clip(x0, 0, 2), 3), xt, 5),
            diffusion.nll_bound(KEY, ABS, lambda x, t: jnp.zeros(x.shape + (3,)), x0),
        )

    draws, (loss, vb, ce), kl, lik, post, bound = f(x0, xt)
    np.testing.assert_array_equal(np.asarray(draws)[[1, 3]], [-1, -1])
    assert set(np.asarray(draws)[[0, 2]].tolist()) <= {0, 2, 3}
    bad_cells = np.array([False, True, True, True])  # class 7, state 9, class -1
    for v in (loss, vb, ce):
        np.testing.assert_array_equal(np.isnan(v), bad_cells)
    np.testing.assert_array_equal(np.isnan(kl), [False, True, False, True])
    np.testing.assert_array_equal(np.isnan(lik).any(-1), [False, False, True, False])
    np.testing.assert_array_equal(np.isnan(post).any(-1), [False, False, True, False])
    assert np.isnan(bound)


def test_valid_time_gives_the_same_values_traced_and_on_the_host():
    jitted = jax.jit(_float_outputs)
    # a static t is a Python int inside the trace: the kernels take their host-time path (as when
    # called eagerly), compiled as one program rather than an operation at a time
    on_host = jax.jit(_float_outputs, static_argnums=0)
    for t in (1, 2, 5, 10):
        host, traced = on_host(t), jitted(jnp.int32(t))
        for name in host:
            for u, v in zip(jax.tree_util.tree_leaves(host[name]), jax.tree_util.tree_leaves(traced[name])):
                assert np.all(np.isfinite(u)), (t, name)
                np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6, err_msg=name)


def test_checks_never_copy_device_arrays_to_the_host():
    x = jnp.ones(3)
    labels, mask = jnp.array([0, 1, 1, 0]), jnp.array([True, True, False, True])
    benefit = jnp.eye(3)
    t = jnp.int32(3)
    without_host_reads(diffusion.q_sample, KEY, GAUSS, x, t)
    without_host_reads(diffusion.posterior_mean_var, GAUSS, x, x, t)
    without_host_reads(diffusion.q_sample_discrete, KEY, UNI, labels, t)
    without_host_reads(diffusion.hybrid_loss, UNI, labels, labels, t, jnp.zeros((4, 3)))
    without_host_reads(metrics.ari, labels, labels, mask, n_true=2, n_pred=2)
    without_host_reads(metrics.cluster_sizes, labels, 2, mask)
    without_host_reads(metrics.sse, jnp.ones((4, 2)), labels, jnp.zeros((2, 2)), mask)
    without_host_reads(metrics.matched_iou, labels, labels, n_true=2, n_pred=2)
    without_host_reads(assignment.linear_assignment, benefit)
