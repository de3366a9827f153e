"""The update-rule protocol: a rule is a value, :class:`Rule` (``init`` and ``step`` with optional
hooks and the defaults of its traced knobs), and :class:`Points`, the points of one run as a rule
sees them. The loop that runs any rule is :mod:`tokdyn.dynamics.loop`; the package's own rule is
:mod:`tokdyn.dynamics.builtin`. The protocol in full, with a worked example, is on the concepts
page: :ref:`dynamics-protocol`."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from tokdyn import _checks
from tokdyn.dynamics import equations
from tokdyn.dynamics._common import as_float, callable_name, point_weights, valid_rows

XLA_BACKEND = "tokdyn.dynamics.loop:run"  # the loop's own program, every rule's "xla" backend (by name, as the
# other backends are: the loop imports this module, never the other way round)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Points:
    """The points of one run as an update rule sees them (:class:`Rule`), built once per run
    outside the loop by :meth:`Points.of`.

    Attributes:
      x: (N, D) the points (a floating dtype; padded rows are zero in the caller's coordinates,
        whatever the caller put there, so an infinity or a NaN in padding never reaches the run).
      mask: (N,) bool, False on padded points (all True without a mask).
      weights: (N,) 1 on valid points, 0 on padded ones, in x's dtype: a rule must give padded
        points no weight.
      x_t: (D, N) ``x.T``.
      x1: (N, D + 1) ``[x, 1]``: ``a @ x1`` gives the weighted sums of the points of a (T, N)
        assignment ``a`` and its masses in one product.
      total: (D,) ``sum_i w_i x_i``.
      count: () ``sum_i w_i``, the number of valid points (x's dtype).
      origin: (D,) where the user's coordinate origin lies in these coordinates: zeros, or, for a
        rule the loop runs centred (``Rule.centred``), minus the masked mean of the user's
        points (which ``x`` is then centred on). A rule that refers to the origin (the published
        mass anchor, :data:`~tokdyn.dynamics.BUILTIN_ORIGIN`) uses it.
    """

    x: jax.Array
    mask: jax.Array
    weights: jax.Array
    x_t: jax.Array
    x1: jax.Array
    total: jax.Array
    count: jax.Array
    origin: jax.Array

    @staticmethod
    def of(x, mask=None, *, centred: bool = False) -> "Points":
        """The :class:`Points` of (N, D) ``x`` (cast to float32 unless floating) and an optional (N,)
        bool ``mask``; with ``centred`` (static) in coordinates centred on the masked mean of ``x``
        (``origin`` says where the user's origin went). A plain traceable function (the loop
        calls it once per run).

        Examples:
          >>> import numpy as np
          >>> from tokdyn import dynamics
          >>> x = np.array([[0, 0], [2, 4], [9, 9]], np.float32)
          >>> p = dynamics.Points.of(x, np.array([True, True, False]), centred=True)
          >>> print(np.asarray(p.origin), float(p.count), np.asarray(p.x[:2]))   # centred on (1, 2)
          [-1. -2.] 2.0 [[-1. -2.]
           [ 1.  2.]]
        """
        x = valid_rows(as_float(x), mask)  # padding never reaches a product (0 * inf is NaN)
        w = point_weights(x, mask)
        origin = jnp.zeros(x.shape[1:], x.dtype)
        if centred:
            origin = -equations.masked_mean(x, w)
            x = x + origin
        # the column of ones makes one product give a token's soft sum of points and its mass (about
        # 10% faster per step on XLA:CPU than a separate row sum, which it splits in two)
        x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
        valid = jnp.ones(x.shape[:1], bool) if mask is None else jnp.asarray(mask, bool)
        return Points(x=x, mask=valid, weights=w, x_t=x.T, x1=x1, total=w @ x, count=jnp.sum(w), origin=origin)


_SIGNATURES = {  # the arguments of each function of a Rule, for its checks and messages
    "init": ("points", "tokens", "hparams"),
    "step": ("state", "points", "hparams", "step", "key"),
    "movement": ("old", "new"),
    "may_stop": ("hparams", "step"),
    "temperature": ("hparams", "step"),
    "check": ("hparams", "key"),
}


@dataclasses.dataclass(frozen=True, repr=False)
class Rule:
    """An update rule as a value: what :func:`~tokdyn.dynamics.run`, :func:`~tokdyn.dynamics.run_fixed`,
    :func:`~tokdyn.dynamics.trajectory`, :class:`tokdyn.engine.runs.ClusterRun` and the sweeps take
    as ``rule=``. :data:`~tokdyn.dynamics.BUILTIN` is the package's own rule; the protocol, what the
    loop does with it and a worked example are on the concepts page, :ref:`dynamics-protocol`.

    Attributes:
      init: ``init(points, tokens, hparams) -> state``: the state before the first step, ``points`` a
        :class:`Points`, ``tokens`` (T, D). The state is the (T, D) tokens, or a pytree with a
        ``tokens`` attribute (and whatever else the rule carries).
      step: ``step(state, points, hparams, step, key) -> state``: one step; ``step`` the int32 index
        s, ``key`` the run's PRNG key or None (noise of step s: ``fold_in(key, step)``). Returns
        a state of the same structure, shapes and dtypes.
      hparams: the defaults of the rule's knobs, a pytree of numbers whose leaves are traced when
        the rule runs; hashable (a registered frozen dataclass or a NamedTuple of Python numbers;
        ``()``: no knobs). Their field names (:attr:`knobs`) are the conditions of the rule in
        :class:`~tokdyn.engine.runs.ClusterRun` and the axes of a sweep.
      name: a name, for messages and records.
      movement: optional (keyword-only, as are the hooks after it) ``movement(old, new) -> (T, D)``:
        the step's movement, whose largest absolute coordinate is compared with ``tol``; default:
        the change of the tokens.
      may_stop: optional ``may_stop(hparams, step) -> bool``: whether the run may stop after step
        ``step``; default: always.
      temperature: optional ``temperature(hparams, step) -> scalar``, recorded per step by
        :func:`~tokdyn.dynamics.trajectory`; default: NaN.
      check: optional ``check(hparams, key)``: checks run before anything is traced; it must
        look only at shapes and host data (see ``tokdyn._checks``) and raise ``ValueError``
        naming the knob.
      centred: whether the rule commutes with translations (its steps on points and tokens shifted
        together are its steps shifted), so that the loop may run it in coordinates centred on the
        run's masked data mean (:meth:`Points.of`), where float32 distances keep their precision
        wherever the data sit. The state's tokens are handed back in the user's coordinates (a
        state other than the tokens must then be a dataclass or NamedTuple with ``tokens``).
        Default False: the rule sees the user's coordinates.
      backends: other programs of the same run, as ``(name, "module:function")`` pairs: the
        function takes :func:`~tokdyn.dynamics.run`'s arguments and ``rule=`` (:meth:`backend`).
        The built-in rules have ``"pallas"`` (:mod:`tokdyn.dynamics.pallas`, one kernel per run).

    Frozen and hashable (a static argument: equal rules share one compilation, so build a rule
    once, not inside a loop); every field is checked here (``TypeError`` naming it).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> def init(points, tokens, hparams):   # the state is the tokens themselves
      ...     return tokens
      >>> def step(tokens, points, hparams, step, key):   # halfway to the mean of the nearest points
      ...     d2 = jnp.sum((points.x[:, None] - tokens[None]) ** 2, -1)   # (N, T)
      ...     a = jax.nn.one_hot(jnp.argmin(d2, 1), tokens.shape[0]) * points.weights[:, None]
      ...     means = (a.T @ points.x) / jnp.maximum(a.sum(0), 1.0)[:, None]
      ...     return tokens + 0.5 * (means - tokens)
      >>> halfway = dynamics.Rule(init=init, step=step, name="halfway")
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> r = dynamics.run(x, x[[0, 3]], rule=halfway, n_steps=50, tol=1e-4)
      >>> print(np.asarray(r.tokens).round(2))
      [[ 0.33  0.33]
       [10.33 10.33]]
      >>> bool(r.converged)
      True
    """

    init: Callable
    step: Callable
    hparams: Any = ()
    name: str = ""
    movement: Callable | None = dataclasses.field(default=None, kw_only=True)
    may_stop: Callable | None = dataclasses.field(default=None, kw_only=True)
    temperature: Callable | None = dataclasses.field(default=None, kw_only=True)
    check: Callable | None = dataclasses.field(default=None, kw_only=True)
    centred: bool = dataclasses.field(default=False, kw_only=True)
    backends: tuple = dataclasses.field(default=(), kw_only=True)

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"Rule.name must be a str, got {self.name!r}")
        if not isinstance(self.centred, bool):
            raise TypeError(f"Rule.centred must be a bool, got {self.centred!r}")
        if not isinstance(self.backends, tuple) or not all(
            isinstance(b, tuple) and len(b) == 2 and all(isinstance(s, str) for s in b) and ":" in b[1]
            for b in self.backends
        ):
            raise TypeError(
                f"Rule.backends must be a tuple of (name, 'module:function') pairs of strings, got {self.backends!r}"
            )
        if any(name == "xla" for name, _ in self.backends):
            raise TypeError("Rule.backends: 'xla' is the loop's own program (dynamics.run), not a backend to name")
        for field, args in _SIGNATURES.items():
            fn = getattr(self, field)
            if fn is None and field not in ("init", "step"):
                continue
            want = f"{field}({', '.join(args)})"
            if not callable(fn):
                raise TypeError(f"Rule.{field} must be a function {want}, got {fn!r} of type {type(fn).__name__}")
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):  # no introspectable signature: trust it
                continue
            try:
                sig.bind(*args)
            except TypeError:
                raise TypeError(
                    f"Rule.{field} must take the arguments {want}; {callable_name(fn)} has the signature {sig}"
                ) from None
        try:
            hash(self.hparams)
        except TypeError:
            raise TypeError(
                f"Rule.hparams (the defaults of the rule's knobs) must be hashable: a registered frozen dataclass "
                f"or a NamedTuple of Python numbers (not JAX arrays, dicts or lists), got {self.hparams!r}"
            ) from None
        for path, leaf in jax.tree_util.tree_flatten_with_path(self.hparams)[0]:
            if _checks.dtype_of(leaf).kind not in "biuf":
                raise TypeError(f"Rule.hparams{jax.tree_util.keystr(path)} must be a real number, got {leaf!r}")

    @property
    def knobs(self) -> tuple:
        """The names of the rule's knobs, in the leaf order of :attr:`hparams` (which must be a flat
        record: a registered dataclass or a NamedTuple of numbers); ``TypeError`` otherwise."""
        names = []
        for path, _ in jax.tree_util.tree_flatten_with_path(self.hparams)[0]:
            key = path[0] if len(path) == 1 else None
            name = getattr(key, "name", None) if isinstance(key, jax.tree_util.GetAttrKey) else None
            if name is None:
                raise TypeError(
                    f"rule {self.name or callable_name(self.step)!r}: its hparams must be a flat record "
                    f"of named numbers (a registered dataclass or a NamedTuple) to name its knobs, got "
                    f"{self.hparams!r}"
                )
            names.append(name)
        return tuple(names)

    @property
    def backend_names(self) -> tuple:
        """The programs that run this rule: ``"xla"`` (:func:`~tokdyn.dynamics.run`, every rule)
        and the names of :attr:`backends`."""
        return ("xla",) + tuple(name for name, _ in self.backends)

    def backend(self, name: str) -> Callable:
        """The run of this rule by backend ``name`` (one of :attr:`backend_names`): a function of
        :func:`~tokdyn.dynamics.run`'s arguments ``(x, tokens, hparams=None, *, mask, n_steps,
        tol, key)`` returning a :class:`~tokdyn.dynamics.Result`. ``ValueError`` naming the
        backends this rule has for any other name."""
        import functools
        import importlib

        _checks.choice("backend", name, self.backend_names)
        module, attr = dict(self.backends, xla=XLA_BACKEND)[name].split(":")
        return functools.partial(getattr(importlib.import_module(module), attr), rule=self)

    def __repr__(self) -> str:
        """Short: ``Rule(name='builtin')``, ``Rule(name='lloyd', hparams=Knobs(step_size=0.5))``; the
        knobs only when they differ from their type's defaults, the step function only without a
        name. :meth:`describe` names every function (a stamp; with a code digest for identity)."""
        parts = [f"name={self.name!r}"] if self.name else [f"step={callable_name(self.step)}"]
        try:
            default = type(self.hparams)()
        except Exception:  # a NamedTuple without defaults, ...
            default = None
        if self.hparams != () and not (type(default) is type(self.hparams) and default == self.hparams):
            parts.append(f"hparams={self.hparams!r}")
        return f"Rule({', '.join(parts)})"

    def describe(self) -> str:
        """The full description, stable across processes (no addresses): the name, every function
        by ``module.qualname`` and the knobs' defaults (``repr`` gives the short form)."""
        parts = [f"name={self.name!r}"] if self.name else []
        parts += [f"{f}={callable_name(getattr(self, f))}" for f in ("init", "step")]
        parts.append(f"hparams={self.hparams!r}")
        parts += [
            f"{f}={callable_name(getattr(self, f))}"
            for f in ("movement", "may_stop", "temperature", "check")
            if getattr(self, f) is not None
        ]
        return f"Rule({', '.join(parts)})"
