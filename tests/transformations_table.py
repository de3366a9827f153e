"""Which JAX transformations each public kernel of tokdyn supports, as data: ``TABLE``, one ``Row``
per kernel, and ``HOST``, the public functions that run on the host (plain Python / NumPy:
constructors, registries, references), which no transformation applies to. The specification that
``tests/test_transformations.py`` checks cell by cell, and the source of the documentation's page
``docs/transformations.md`` (written by ``docs/_ext/tokdyn_transformations.py``, at every docs build
and by ``python docs/_ext/tokdyn_transformations.py --write``). Plain data: it imports nothing of
tokdyn's, so the docs build reads it without JAX.

Columns (``TRANSFORMATIONS``), each checked on small inputs by ``tests/test_transformations.py``:

- ``jit``: the kernel traces, compiles and runs inside a user's ``jax.jit`` (static arguments
  closed over); its values are the ``vmap`` check's reference.
- ``vmap``: ``jax.vmap`` over a batch of instances (the arguments named in the row's ``batched``)
  gives the instances' results one by one (each under ``jit``).
- ``grad``: reverse mode (``jax.grad`` / ``vjp`` / ``jacrev``) of a scalar of the float outputs in
  the arguments of ``wrt``: finite, and equal to a central finite difference along a random
  direction (and to forward mode where both are supported).
- ``jacfwd``: forward mode (``jax.jvp`` / ``jacfwd``), checked the same way.
- ``shard_map``: ``jax.shard_map`` over the local devices (JAX's default ``check_vma=True``), each
  device vmapping its share of a batch (the way :func:`tokdyn.engine.execute.map_runs` runs a
  sweep), gives the vmapped result.

A cell is ``"yes"`` (optionally ``"yes: note"``), ``"no: why"`` (the test checks that the
transformation fails) or ``"n/a: why"``, where a derivative means nothing; the reasons the test
knows and checks are ``NOT_APPLICABLE``.
"""

from __future__ import annotations

import dataclasses

TRANSFORMATIONS = ("jit", "vmap", "grad", "jacfwd", "shard_map")

# The reasons a derivative means nothing, and what the test checks for each.
INT_OUT = "n/a: integer output"  # every output is an integer (or bool) array
INT_IN = "n/a: integer inputs"  # no argument holds real numbers to differentiate in
PIECEWISE = "n/a: piecewise-constant output"  # the derivative is zero wherever it exists
KEY_ONLY = "n/a: a draw from the key alone"  # no real-valued input (the key is not differentiable)
NOT_APPLICABLE = (INT_OUT, INT_IN, PIECEWISE, KEY_ONLY)


@dataclasses.dataclass(frozen=True)
class Row:
    """The transformations one public kernel supports.

    Attributes:
      kernel: ``module.function`` relative to ``tokdyn`` (e.g. ``dynamics.run``), or a call that
        makes the kernel (``es.maximiser(...).step``).
      wrt: the arguments the derivatives are taken in (what ``grad`` and ``jacfwd`` mean here).
      batched: the arguments ``vmap`` and ``shard_map`` batch over in the test (others shared).
      jit, vmap, grad, jacfwd, shard_map: ``"yes"``, ``"yes: note"``, ``"no: why"`` or ``"n/a: why"``.
    """

    kernel: str
    wrt: str = ""
    batched: str = ""
    jit: str = "yes"
    vmap: str = "yes"
    grad: str = "yes"
    jacfwd: str = "yes"
    shard_map: str = "yes"

    def cell(self, transformation: str) -> str:
        """The cell of ``transformation`` (one of :data:`TRANSFORMATIONS`), its reason included."""
        return getattr(self, transformation)

    def status(self, transformation: str) -> str:
        """``"yes"``, ``"no"`` or ``"n/a"``."""
        return self.cell(transformation).split(":", 1)[0]

    @property
    def module(self) -> str:
        """The module the kernel belongs to, relative to ``tokdyn`` (``models.slots`` for a model's,
        ``dynamics.pallas`` for the built-in rule's Pallas backend)."""
        two = self.kernel.startswith(("models.", "dynamics.pallas."))
        return ".".join(self.kernel.split(".")[:2]) if two else self.kernel.split(".")[0]


def _int(kernel, batched, **kw):
    """A row whose derivatives mean nothing because its output is integers."""
    return Row(kernel, "", batched, grad=INT_OUT, jacfwd=INT_OUT, **kw)


def _int_in(kernel, batched, **kw):
    return Row(kernel, "", batched, grad=INT_IN, jacfwd=INT_IN, **kw)


NO_VMA = (
    "yes: check_vma=False only (a while_loop whose initial state is a constant: JAX's default "
    "check_vma=True refuses it)"
)
WHILE = "no: a while_loop with early stop (reverse mode cannot transpose it)"

TABLE = (
    # --- dynamics
    Row("dynamics.soft_assignment", "x, tokens, temperature", "x, tokens, temperature"),
    Row("dynamics.sinkhorn", "logits", "logits, mask", grad="yes: a static count, any length (masked rounds)"),
    Row("dynamics.coulomb", "tokens", "tokens"),
    Row("dynamics.temperature_schedule", "hparams (temperature, anneal_ratio)", "hparams"),
    Row(
        "dynamics.update",
        "x, tokens, velocity, hparams (temperature, momentum, repulsion, damping)",
        "x, tokens, velocity, hparams",
    ),
    Row(
        "dynamics.run",
        "x, tokens, hparams",
        "x, tokens, hparams",
        grad=WHILE + " (the default adjoint, EarlyExit): choose adjoint=CheckpointAdjoint() or ImplicitAdjoint()",
        jacfwd="yes: the stopping step held fixed",
    ),
    Row(
        "dynamics.run(adjoint=CheckpointAdjoint())",
        "x, tokens, hparams",
        "x, tokens, hparams",
        grad="yes: a static bound (max_steps, else n_steps), each step rematerialised, the stopping step held fixed",
    ),
    Row(
        "dynamics.run(adjoint=ImplicitAdjoint())",
        "x, hparams (zero in the initial tokens)",
        "x, tokens, hparams",
        grad="yes: implicit derivative at the fixed point (a converged deterministic run; NaN for a run that did not "
        "converge or whose derivative is not the fixed point's, ImplicitAdjoint(rtol); also implicit=True)",
        jacfwd="yes: implicit derivative at the fixed point (NaN where grad's is)",
    ),
    Row(
        "dynamics.run_fixed",
        "x, tokens, hparams",
        "x, tokens, hparams",
        grad="yes: static n_steps (run with CheckpointAdjoint(remat=False)), the stopping step held fixed",
    ),
    Row(
        "dynamics.trajectory",
        "x, tokens, hparams",
        "x, tokens, hparams",
        grad="yes: static n_steps, the stopping step held fixed",
    ),
    _int("dynamics.hard_labels", "x, tokens"),
    _int("dynamics.token_groups", "tokens"),
    Row("dynamics.split_temperatures", "traj.temperature (zero in the tokens: piecewise constant)", "traj"),
    Row("dynamics.init_tokens", "x (the chosen points)", "key, x"),
    Row("dynamics.forgy", "x (the chosen points)", "x, noise"),
    Row(
        "dynamics.kmeans",
        "x, tokens (the final assignment held fixed)",
        "x, tokens",
        grad=WHILE,
        jacfwd="yes: the assignments and the stopping step held fixed",
    ),
    # --- refinement (the variational-refinement rule's functions; the loop's forms hold for it as for any rule)
    Row("refinement.init", "points.x, tokens, hparams (prior_log_scale, prior_strength)", "points, tokens, hparams"),
    Row(
        "refinement.step",
        "state, points.x, hparams (step_size, prior_log_scale, prior_strength)",
        "state, points, hparams",
    ),
    Row("refinement.movement", "old, new", "old, new"),
    Row("refinement.may_stop", "", "hparams, step", grad=INT_OUT, jacfwd=INT_OUT),
    Row("refinement.objective", "x, state, hparams (prior_log_scale, prior_strength)", "x, state, hparams"),
    Row("refinement.gradient", "x, state", "x, state"),
    Row("refinement.responsibilities", "x, state", "x, state"),
    _int("refinement.labels", "x, state"),
    # --- tracking
    Row(
        "tracking.track",
        "frames, rule_hparams (temperature, momentum), hparams (decay, separation)",
        "key, frames, rule_hparams",
        grad=WHILE + ": use fixed=True",
        jacfwd="yes: the stopping steps held fixed",
    ),
    Row(
        "tracking.track(fixed=True)",
        "frames, rule_hparams (temperature, momentum), hparams (decay, separation)",
        "key, frames, rule_hparams",
        grad="yes: static n_steps, the stopping steps held fixed",
    ),
    Row(
        "tracking.separate",
        "tokens, separation",
        "tokens, separation",
        grad="yes: except where two tokens coincide exactly",
    ),
    Row("tracking.frame_keys", "", "key, frame", grad=KEY_ONLY, jacfwd=KEY_ONLY),
    _int("tracking.track_labels", "tokens, labels, match", shard_map=NO_VMA),
    # --- dynamics.pallas, the built-in rule's Pallas backend (formerly tokdyn.fused; on a CPU in the
    # Pallas interpreter, compiled by Triton on a GPU)
    Row(
        "dynamics.pallas.run",
        "",
        "x, tokens, hparams",
        grad=(
            "no: a Pallas kernel without derivatives, refused while tracing (ValueError naming "
            "dynamics.run_fixed): use dynamics.run(adjoint=CheckpointAdjoint()) (run_fixed) or ImplicitAdjoint()"
        ),
        jacfwd="no: a Pallas kernel without derivatives, refused while tracing: use dynamics.run (forward mode)",
        shard_map=(
            "yes: check_vma=False only (the kernel's outputs carry no varying type), as engine.execute.map_runs runs it"
        ),
    ),
    # --- metrics
    _int_in("metrics.ari", "labels_true, labels_pred, mask"),
    _int_in("metrics.nmi", "labels_true, labels_pred, mask"),
    _int("metrics.contingency", "labels_true, labels_pred, mask"),
    Row("metrics.sse", "x, centers", "x, labels, centers, mask"),
    _int("metrics.cluster_sizes", "labels, mask"),
    _int("metrics.n_used", "labels, mask"),
    _int("metrics.collapsed", "labels, n_true_clusters, mask"),
    _int_in("metrics.fg_ari", "masks_true, labels_pred"),
    _int_in("metrics.matched_iou", "masks_true, labels_pred", shard_map=NO_VMA),
    _int_in("metrics.video_fg_ari", "masks_true, labels_pred"),
    _int_in("metrics.frame_fg_ari", "masks_true, labels_pred"),
    _int("metrics.track_labels", "masks_true, labels_pred"),
    _int("metrics.track_switches", "masks_true, labels_pred"),
    _int("metrics.identity_persistence", "masks_true, labels_pred"),
    # --- assignment
    _int("assignment.linear_assignment", "benefit", shard_map=NO_VMA),
    # --- geometry
    Row("geometry.cosine_matrix", "x", "x"),
    Row("geometry.mean_pairwise_cosine", "x", "x, mask"),
    Row("geometry.step_similarity", "seq", "seq, mask"),
    Row("geometry.participation_ratio", "x", "x, mask"),
    Row("geometry.top_pc_share", "x", "x, mask", grad="yes: where the top eigenvalue is simple"),
    Row("geometry.summary", "latents", "latents, mask"),
    # --- diffusion
    Row("diffusion.q_sample", "x0", "key, x0, t"),
    Row("diffusion.predict_x0", "x_t, eps", "x_t, t, eps"),
    Row("diffusion.posterior_mean_var", "x0, x_t", "x0, x_t, t"),
    Row("diffusion.ddpm_step", "x_t, eps", "key, x_t, t, eps"),
    Row("diffusion.sample", "eps_fn's parameters", "key"),
    Row("diffusion.ddim_sample", "eps_fn's parameters", "key"),
    Row("diffusion.stationary", "proc", "proc", grad=PIECEWISE, jacfwd=PIECEWISE),
    Row("diffusion.transition_matrix", "proc (its tables)", "proc, t"),
    Row("diffusion.cumulative_matrix", "proc (its tables)", "proc, t"),
    Row("diffusion.published_cumulative_matrix", "alpha_bar_t", "alpha_bar_t"),
    Row("diffusion.marginal", "proc, probs", "probs, t"),
    Row("diffusion.step_likelihood", "proc (its tables)", "x_t, t"),
    _int("diffusion.q_sample_discrete", "key, x0, t"),
    Row("diffusion.posterior_logits", "x0_probs", "x0_probs, x_t, t"),
    Row("diffusion.hybrid_loss", "x0_logits, lam", "x0, x_t, t, x0_logits"),
    Row("diffusion.prior_kl", "proc (its tables)", "x0"),
    _int("diffusion.sample_discrete", "key"),
    Row("diffusion.nll_bound", "x0_logits_fn's parameters", "key, x0"),
    # --- es
    Row("es.noise", "", "key", grad=KEY_ONLY, jacfwd=KEY_ONLY),
    Row(
        "es.shape_rewards",
        "rewards",
        "rewards",
        grad="yes: shaping none and baseline (centered_rank: piecewise constant)",
    ),
    Row("es.es_grad", "x, sigma", "key, x"),
    Row("es.exact_grad", "x (second derivatives)", "key, x"),
    Row("es.maximiser(...).step", "state.x", "key, state"),
    # --- probes
    Row("probes.fit", "x, hparams (through the scanned optimiser)", "key, x, y"),
    _int("probes.predict", "probe, x"),
    Row("probes.accuracy", "probe, x", "probe, x, y", grad=PIECEWISE, jacfwd=PIECEWISE),
    Row("probes.evaluate", "x", "key, x, y", grad=PIECEWISE, jacfwd=PIECEWISE),
    _int_in("probes.chance", "y, mask"),
    # --- models
    Row("models.slots.apply", "params, images", "key, params, images"),
    Row("models.slots.loss_fn", "params, images", "key, params, images"),
    Row("models.savi.apply", "params, videos", "key, params, videos"),
    Row("models.savi.loss_fn", "params, videos", "key, params, videos"),
    Row(
        "models.iodine.apply", "params, images (the refinement's gradient inputs held constant)", "key, params, images"
    ),
    Row("models.iodine.loss_fn", "params, images", "key, params, images"),
    Row(
        "models.vtae.encode",
        "params (gumbel_soft, sigmoid: relaxed; straight-through modes: their surrogate)",
        "key, params, tokens",
    ),
    Row("models.vtae.decode", "params, x", "params, x"),
    Row("models.vtae.training.loss_fn", "params", "key, params, tokens"),
    Row("models.sequence.apply", "params (and x for grid_ddpm)", "params, x, t"),
    Row("models.sequence.loss_fn", "params", "key, params, x0"),
)

# Public functions that are not kernels: they run on the host (Python control flow on their
# arguments, NumPy, SciPy) or make kernels; no transformation applies to them.
HOST = {
    "dynamics.method": "the registry's Hparams of a named method",
    "dynamics.varying": "types a pytree as varying over the shard_map axes of others (a no-op outside shard_map)",
    "dynamics.check_run": "the argument checks of run, on shapes and host values, before anything is traced",
    "diffusion.betas": "a schedule in float64 NumPy",
    "diffusion.ddim_times": "the DDIM sub-sequence, NumPy",
    "diffusion.gaussian": "builds a process on the host (float64 tables rounded to float32)",
    "diffusion.discrete": "builds a process on the host (float64 tables rounded to float32)",
    "diffusion.n_states": "a Python int",
    "assignment.levels": "a Python int",
    "assignment.linear_assignment_host": "SciPy's Hungarian algorithm, the reference",
    "metrics.matched_iou_host": "NumPy + SciPy, the reference",
    "refinement.check": "the rule's check: its knobs' host values, before anything is traced",
    "tracking.carried_rule": "makes a rule (a value: the rule started from a carried state)",
    "dynamics.pallas.preferred": "whether the Pallas kernel is the faster form on a backend (a Python bool)",
    "dynamics.pallas.check_fields": "refuses knob names the kernel does not read (host, on import and per call)",
    "dynamics.pallas.knob_vector": "packs the knobs for the kernel (called inside dynamics.pallas.run)",
    "es.maximiser": "makes the kernels init and step (its step is in the table)",
}

MODULES = (
    "dynamics",
    "refinement",
    "tracking",
    "dynamics.pallas",
    "metrics",
    "assignment",
    "geometry",
    "diffusion",
    "es",
    "probes",
    "models.slots",
    "models.savi",
    "models.iodine",
    "models.vtae",
    "models.sequence",
)


def row(kernel: str) -> Row:
    """The row of ``kernel`` (``KeyError`` if it has none)."""
    for r in TABLE:
        if r.kernel == kernel:
            return r
    raise KeyError(kernel)
