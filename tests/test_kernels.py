"""The public functions are the traced kernels: callable inside a user's jit / vmap / shard_map,
equal with and without jit, their checks never copying a device array to the host, and bad host
input refused before anything is traced."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from conftest import assert_same_floats, jax_compilations, without_host_reads
from tokdyn import _checks, analysis, data, dynamics, metrics


def _problem(seed=0):
    c = data.gaussian_clusters(jax.random.key(seed), 3, points_per_cluster=20, dim=3, noise=0.5, max_clusters=4)
    t0 = dynamics.forgy(c.x, c.init_noise, c.mask, 4)
    return c, t0


def test_device_arrays_are_never_copied_to_the_host():
    """Every check looks at shapes and host values only: the public functions trace on abstract
    arrays (``conftest.without_host_reads``), so none reads a device array's value."""
    # device arrays of a problem's shapes (their values are never read): 3 of 4 clusters of 20 points in 3-D
    x, t0 = jax.device_put(np.zeros((80, 3), np.float32)), jax.device_put(np.zeros((4, 3), np.float32))
    mask, labels = jax.device_put(np.arange(80) < 60), jax.device_put(np.zeros(80, np.int32))
    hp = dynamics.Hparams(temperature=jnp.float32(0.7), momentum=jnp.float32(0.5))
    without_host_reads(
        data.gaussian_clusters,
        jax.random.key(1),
        jnp.int32(3),
        points_per_cluster=20,
        dim=3,
        noise=jnp.float32(0.4),
        max_clusters=4,
    )
    without_host_reads(dynamics.run, x, t0, hp, mask=mask, n_steps=jnp.int32(30), tol=jnp.float32(1e-3))
    without_host_reads(dynamics.trajectory, x, t0, hp, mask=mask, n_steps=5)
    without_host_reads(dynamics.init_tokens, jax.random.key(2), 4, 3, x=x, mask=mask)
    without_host_reads(dynamics.token_groups, t0, jnp.float32(0.1))
    without_host_reads(dynamics.soft_assignment, x, t0, jnp.float32(1.0), mask)
    without_host_reads(metrics.ari, labels, labels, mask, n_true=4, n_pred=4)
    without_host_reads(metrics.nmi, labels, labels, mask)
    without_host_reads(metrics.sse, x, labels, t0, mask)
    without_host_reads(metrics.collapsed, labels, 4, jnp.int32(3), mask)
    without_host_reads(analysis.collapse_threshold, x, mask)
    without_host_reads(analysis.jacobian, x, t0, hp, mask=mask)
    without_host_reads(analysis.free_energy, x, t0, jnp.float32(1.0), mask)


@pytest.mark.full
def test_kernels_compose_inside_jit_vmap_and_shard_map():
    """A user's own per-run function built from the public kernels, vmapped and sharded over the
    local devices, equals calling them one by one."""

    def one(key):
        c = data.gaussian_clusters(key, 3, points_per_cluster=20, dim=3, noise=0.5, max_clusters=4)
        t0 = dynamics.init_tokens(jax.random.fold_in(key, 1), 4, 3, x=c.x, mask=c.mask)
        r = dynamics.run(c.x, t0, dynamics.METHODS["inertia"], mask=c.mask)
        return metrics.ari(c.labels, r.labels, c.mask), r.steps

    keys = jax.random.split(jax.random.key(5), 2 * len(jax.devices()))
    mesh = Mesh(np.array(jax.devices()), ("runs",))
    sharded = jax.jit(
        jax.shard_map(
            jax.vmap(one), mesh=mesh, in_specs=PartitionSpec("runs"), out_specs=PartitionSpec("runs"), check_vma=False
        )
    )
    ari, steps = sharded(keys)
    agree = 0
    for i, key in enumerate(keys):
        a, s = one(key)
        # the sharded vmap and the single call are two programs: the stopping step may differ by one
        # when a run's last change sits within rounding of tol; all but one run must agree exactly
        assert abs(int(s) - int(steps[i])) <= 1
        agree += float(a) == pytest.approx(float(ari[i]), abs=1e-6) and int(s) == int(steps[i])
    assert agree >= len(keys) - 1


class KernelVariants(chex.TestCase):
    """The same kernels under chex's with/without-jit variants give the same numbers."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_update_and_labels(self):
        c, t0 = _problem(3)
        hp = dynamics.METHODS["inertia+repulsion"]
        ref_t, ref_v = dynamics.update(c.x, t0, jnp.zeros_like(t0), hp, c.mask)

        @self.variant
        def step(x, t, mask):
            return dynamics.update(x, t, jnp.zeros_like(t), hp, mask)

        t, v = step(c.x, t0, c.mask)
        chex.assert_trees_all_close((t, v), (ref_t, ref_v), rtol=1e-5, atol=1e-5)  # float32, fused differently
        chex.assert_shape(t, (4, 3))

    @chex.variants(with_jit=True, without_jit=True)
    def test_metrics(self):
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, 4, 50), rng.integers(0, 3, 50)
        ari = self.variant(lambda p, q: metrics.ari(p, q, n_true=4, n_pred=3))(jnp.asarray(a), jnp.asarray(b))
        from sklearn.metrics import adjusted_rand_score

        assert float(ari) == pytest.approx(adjusted_rand_score(a, b), abs=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_collapse_threshold(self):
        x = np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32) * np.array([3.0, 1.0, 0.5], np.float32)
        tc = self.variant(analysis.collapse_threshold)(jnp.asarray(x))
        want = 2 * np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
        assert float(tc) == pytest.approx(want, rel=1e-5)


def test_point_cloud_shapes_and_statistics():
    for shape, (dim, _) in data.SHAPES.items():
        x = data.point_cloud(jax.random.key(0), shape, 120, 1.0)
        assert x.shape == (120, dim) and np.all(np.isfinite(np.asarray(x)))
    # aniso2: std (3, 1) along axes rotated by 30 degrees
    x = np.asarray(data.point_cloud(jax.random.key(1), "aniso2", 120_000, 0.5), np.float64)
    ev = np.sort(np.linalg.eigvalsh(np.cov(x.T)))
    np.testing.assert_allclose(ev, [0.25, 2.25], rtol=0.02)
    # cluster shapes are gaussian_clusters with equal clusters: the same points
    c = data.gaussian_clusters(jax.random.key(2), 3, points_per_cluster=40, dim=2, noise=0.7, center_box=3.0)
    # two programs (point_cloud compiles its own): equal up to float32 rounding, not bit for bit
    assert_same_floats(data.point_cloud(jax.random.key(2), "blobs2", 120, 0.7), c.x)
    with pytest.raises(ValueError, match="multiple of 4"):
        data.point_cloud(jax.random.key(0), "blobs8", 10)
    with pytest.raises(ValueError, match="shape must be one of"):
        data.point_cloud(jax.random.key(0), "torus", 12)


def test_bad_host_input_is_refused_before_tracing():
    x = np.zeros((5, 2), np.float32)
    cases = [
        (lambda: data.gaussian_clusters(jax.random.key(0), 3, noise=-1.0), "noise"),
        (lambda: data.gaussian_clusters(0, 3), "key must be a PRNG key"),
        (lambda: dynamics.init_tokens(jax.random.key(0), 2, 2, x=x, scale=-1.0), "scale"),
        (lambda: dynamics.token_groups(np.zeros(3), 0.1), r"\(\.\.\., T, D\)"),
        (lambda: dynamics.soft_assignment(x, x[:2], 0.0), "temperature"),
        (lambda: metrics.ari(np.array([0, 1, 5]), np.array([0, 1, 1]), n_true=3, n_pred=2), "labels_true"),
        (lambda: analysis.free_energy(x, x[:2], 1.0, repulsion=-1.0), "repulsion"),
    ]
    with jax_compilations() as compiled:
        for call, match in cases:
            with pytest.raises((ValueError, TypeError), match=match):
                call()
    assert compiled == []


def test_lists_are_taken_as_arrays():
    a = metrics.ari([0, 0, 1, 1], [1, 1, 0, 0])
    assert float(a) == 1.0
    r = dynamics.run([[0.0, 0.0], [1.0, 1.0]], [[0.1, 0.0]])
    assert r.tokens.shape == (1, 2)


def test_checked_jit_normalises_and_exposes_the_jitted_function():
    calls = []

    def check(x, n):
        calls.append(n)
        _checks.positive_int("n", n)
        return _checks.host_arrays(x=x)

    @_checks.checked_jit(check, static_argnames=("n",))
    def f(x, n=2):
        return x * n

    np.testing.assert_array_equal(np.asarray(f([1.0, 2.0])), [2.0, 4.0])
    assert calls == [2] and f.__name__ == "f" and callable(f.jitted)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        f(np.ones(2), n=0)
    assert float(jax.jit(lambda v: f(v, 3).sum())(jnp.ones(2))) == 6.0  # inside a user's jit
