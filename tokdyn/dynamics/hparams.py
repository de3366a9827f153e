"""The knobs of the built-in rule: :class:`Hparams` (every leaf traced, so a sweep over them never
recompiles), its named settings :data:`METHODS` and their field order :data:`FIELDS`. What each knob
does is on the concepts page, :ref:`dynamics-rule`; the rule itself is
:mod:`tokdyn.dynamics.builtin`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks


MAX_SINKHORN_ITERS = 100  # the most Sinkhorn rounds per step of the rule (Hparams.sinkhorn_iters)
KNOB_EDGE_TOL = 1e-3  # how far past a closed edge of its range a traced knob still runs (Hparams.in_range)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Sweepable knobs of the built-in rule (:data:`~tokdyn.dynamics.BUILTIN`); every leaf is
    traced, so runs and sweeps over them share one compilation. The defaults of the fields after
    ``repulsion`` switch their part of the rule off; the equations are on the concepts page,
    :ref:`dynamics-rule`.

    Every leaf is one value per run, a scalar (a per-step knob is refused, naming the field; scan
    :func:`~tokdyn.dynamics.update` yourself for per-step values); :meth:`stack` makes a leading
    axis for ``jax.vmap``. Host values out of range are refused (:meth:`validate`); a traced one
    gives NaN tokens or a documented clamp, never plausible numbers (:meth:`in_range`; the table is
    on the concepts page, :ref:`dynamics-knobs`).

    Attributes:
      temperature: softmax temperature tau > 0 (the final temperature when annealing).
      momentum: heavy-ball momentum beta in [0, 1).
      repulsion: Coulomb repulsion strength gamma >= 0.
      damping: step size alpha in (0, 1]: ``t <- (1 - alpha) t + alpha m`` without momentum and
        repulsion; it scales the whole force. 1 = the undamped rule.
      langevin: Langevin temperature T >= 0: a Gaussian kick of standard deviation
        ``sqrt(2 alpha T)`` per coordinate and step (Euler-Maruyama with step size alpha, see
        :mod:`tokdyn.analysis`). T > 0 needs a ``key``.
      sinkhorn_iters: Sinkhorn rounds K_S, a whole number in [0, MAX_SINKHORN_ITERS] = [0, 100]
        (stored as a float so that it stacks with the other leaves): 0 = softmax assignment, >= 1 =
        balanced assignment (:func:`~tokdyn.dynamics.sinkhorn`, which outside the rule takes any
        static count).
      slot_norm: sigma in [0, 1], where the 1e-8 of the weighted mean goes: 0 = on the token's
        mass, anchored at the token, 1 = on every attention weight before normalising over points,
        as in Slot Attention; values in between blend the two linearly.
      anneal_ratio: r >= 1: the schedule starts at ``r * temperature`` (a schedule never increases).
      anneal_steps: S >= 0 (integer-valued): steps over which the temperature falls geometrically
        to ``temperature``; the run cannot stop before the schedule reaches it. 0 = no annealing.

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> hp = dynamics.Hparams.stack([dynamics.Hparams(anneal_ratio=r, anneal_steps=2.0) for r in (1.0, 4.0)])
      >>> hp.anneal_ratio.shape   # a leading axis on every leaf: one compilation runs both
      (2,)
      >>> print(np.asarray(jax.vmap(lambda h: dynamics.temperature_schedule(h, 3))(hp)))
      [[1. 1. 1.]
       [4. 2. 1.]]
    """

    temperature: jax.Array | float = 1.0
    momentum: jax.Array | float = 0.0
    repulsion: jax.Array | float = 0.0
    damping: jax.Array | float = 1.0
    langevin: jax.Array | float = 0.0
    sinkhorn_iters: jax.Array | float = 0.0
    slot_norm: jax.Array | float = 0.0
    anneal_ratio: jax.Array | float = 1.0
    anneal_steps: jax.Array | float = 0.0

    def validate(self) -> "Hparams":
        """Check the fields that are host data; raises ``ValueError`` naming the field. Returns ``self``."""
        _checks.real("temperature", self.temperature, low=0.0, low_open=True)
        _checks.real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _checks.real("repulsion", self.repulsion, low=0.0)
        _checks.real("damping", self.damping, low=0.0, high=1.0, low_open=True)
        _checks.real("langevin", self.langevin, low=0.0)
        k = self.sinkhorn_iters
        if (
            k > MAX_SINKHORN_ITERS
            if isinstance(k, (int, float))
            else _checks.on_host(k) and np.any(np.asarray(k) > MAX_SINKHORN_ITERS)
        ):
            raise ValueError(
                f"sinkhorn_iters must be a whole number in [0, {MAX_SINKHORN_ITERS}] "
                f"(dynamics.MAX_SINKHORN_ITERS: the static length of the loop that "
                f"differentiates the Sinkhorn rounds), got {k!r}"
            )
        _checks.real("sinkhorn_iters", k, low=0.0)
        _checks.whole("sinkhorn_iters", self.sinkhorn_iters, "0 = softmax, >= 1 = Sinkhorn iterations")
        _checks.real("slot_norm", self.slot_norm, low=0.0, high=1.0)
        if _checks.on_host(self.anneal_ratio) and np.any(np.asarray(self.anneal_ratio) < 1.0):
            raise ValueError(
                f"anneal_ratio must be >= 1 (the schedule runs from anneal_ratio * temperature down "
                f"to temperature and may never increase), got {self.anneal_ratio!r}"
            )
        _checks.real("anneal_ratio", self.anneal_ratio, low=1.0)
        _checks.real("anneal_steps", self.anneal_steps, low=0.0)
        _checks.whole("anneal_steps", self.anneal_steps, "0 = constant temperature")
        return self

    def in_range(self) -> jax.Array:
        """Scalar bool (traceable, also for traced leaves): every knob is finite and in its valid
        range (the attributes above; a traced ``temperature`` of 0 counts as in range, the
        hard-assignment limit; a closed edge admits ``KNOB_EDGE_TOL`` past it). The built-in rule
        starts a run whose knobs are out of range at NaN tokens, so that such a run reports NaN, not
        plausible numbers."""
        t, m, g = self.temperature, self.momentum, self.repulsion
        a, lt, k = self.damping, self.langevin, self.sinkhorn_iters
        sig, r, n = self.slot_norm, self.anneal_ratio, self.anneal_steps
        e = KNOB_EDGE_TOL  # closed edges only: the formulas continue a little past them (concepts: dynamics-knobs)
        ok = (
            (t >= 0)
            & (m >= -e)
            & (m < 1)
            & (g >= -e)
            & (a > 0)
            & (a <= 1 + e)
            & (lt >= -e)
            & (k >= -e)
            & (sig >= -e)
            & (sig <= 1 + e)
            & (r >= 1 - e)
            & (n >= -e)
        )
        finite = [jnp.isfinite(v) for v in (t, g, lt, k, r, n)]  # the bounded ones are finite when in range
        for f in finite:
            ok = ok & f
        return jnp.asarray(ok)

    @property
    def stochastic(self) -> bool:
        """Whether the Langevin temperature is host data and positive, so a key is needed."""
        return _checks.on_host(self.langevin) and bool(np.any(np.asarray(self.langevin) > 0))

    def row(self) -> tuple:
        """The fields as a tuple of Python floats, in :data:`FIELDS` order (a row of a method
        table, see :class:`tokdyn.engine.runs.ClusterRun`)."""
        return tuple(float(getattr(self, f)) for f in FIELDS)

    @staticmethod
    def stack(items) -> "Hparams":
        """Stack a sequence of Hparams into one with a leading axis, for ``vmap``; its leaves in JAX's
        default float (float32, float64 under ``jax_enable_x64``, so a float64 run's knobs are not
        rounded to float32)."""
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        return jax.tree_util.tree_map(lambda *v: jnp.stack([jnp.asarray(a, dtype) for a in v]), *items)


METHODS: dict[str, Hparams] = {
    "baseline": Hparams(temperature=1.0, momentum=0.0, repulsion=0.0),
    "inertia": Hparams(temperature=1.0, momentum=0.5, repulsion=0.0),
    "repulsion": Hparams(temperature=1.0, momentum=0.0, repulsion=0.05),
    "inertia+repulsion": Hparams(temperature=1.0, momentum=0.5, repulsion=0.05),
    # deterministic annealing: tau from 100 down to 1 over 15 steps (above the collapse threshold
    # 2 lambda_max(Cov X) of the study's data, so tokens start merged and split on the way down)
    "annealing": Hparams(temperature=1.0, anneal_ratio=100.0, anneal_steps=15.0),
    "sinkhorn": Hparams(temperature=1.0, sinkhorn_iters=10.0),
    "slot-attention": Hparams(temperature=1.0, slot_norm=1.0),
    "damped": Hparams(temperature=1.0, damping=0.5),
    "langevin": Hparams(temperature=1.0, langevin=1e-3),
}
FIELDS = tuple(f.name for f in dataclasses.fields(Hparams))


def method(name: str) -> Hparams:
    """The :class:`Hparams` of a registered method; ``ValueError`` for an unknown name.

    Examples:
      >>> from tokdyn import dynamics
      >>> hp = dynamics.method("inertia+repulsion")
      >>> hp.momentum, hp.repulsion
      (0.5, 0.05)
    """
    _checks.choice("method", name, METHODS)
    return METHODS[name]
