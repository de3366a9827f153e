"""The latent-reasoning analyses of :mod:`tokdyn.diagnostics` on a checkpoint family's model (Qwen2.5-VL:
:mod:`tokdyn.models.qwen2_5_vl`), each one compiled program over a batch of instances (and of image
perturbations and seeds), through the ``apply`` protocol of the family's adapter
(:mod:`tokdyn.models.qwen2_5_vl.adapter`). The one implementation of each: the ``vlm-diagnostics`` study,
the example ``examples/vlm_analyses.py``, the tests and ``benchmarks/bench_vlm_analyses.py`` all call these.

- :func:`imagine`: the latents a prompt's block gets when the model fills it itself, in latent space (the
  last layer's normed state at the previous position fed back, as Coconut does) or in text space (the
  greedy token there, its embedding fed back: the text-space imagination arm).
- :func:`decomposition` (Beyond Visual Memory): correctness with the markers only, the slots only, the format
  only and the settings of :data:`tokdyn.diagnostics.decomposition.ALL_SETTINGS`; :func:`gain_kept` of each;
  the concentration of attention over the image at the latent positions and at the answer.
- :func:`mediation` (CapImagine): image perturbations (:func:`perturb_pixels`); their effect on the imagined
  latents and on the answer, total, direct (latents held) and indirect (through the latents alone); the
  latent -> answer effects of :func:`tokdyn.diagnostics.mediation.latent_effects`.
- :func:`grounding` (DMLR): the per-token grounding score under each noise kind, level and seed
  (:func:`grounding_scores`: under perturbed images one gives); :func:`optimise`: DMLR's confidence-driven
  latent optimisation (:func:`tokdyn.diagnostics.dmlr.optimise`) over instances and seeds.

A model and prompt layout are a :class:`~tokdyn.diagnostics.subjects.Subject` (static; :func:`subject`), whose
family's adapter builds the ``apply``. Each analysis checks its arguments in plain Python (and the model with
:func:`tokdyn.diagnostics.protocol.check_apply`) before anything compiles, naming what is wrong; each is a
traced kernel too (``fn.jitted``). Draws that must not depend on how instances are batched take the instances'
ids (``index``). The pages :doc:`/concepts/vlm-decomposition`, :doc:`/concepts/vlm-mediation` and
:doc:`/concepts/vlm-dmlr` walk through them.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.diagnostics import decomposition as decomposition_lib
from tokdyn.diagnostics import dmlr as dmlr_lib
from tokdyn.diagnostics import mediation as mediation_lib
from tokdyn.diagnostics import protocol
from tokdyn.diagnostics.grounding import token_logprobs
from tokdyn.diagnostics import subjects as subjects_lib
from tokdyn.models.blocks import norm

# the analyses' static subject and its batch helpers (tokdyn.diagnostics.subjects), named here too
Subject = subjects_lib.Subject
subject = subjects_lib.subject
family_of = subjects_lib.family_of
encoded = subjects_lib.encoded
with_image = subjects_lib.with_image
with_latents = subjects_lib.with_latents
without_latents = subjects_lib.without_latents
check_batch = subjects_lib.check_batch
check_answers = subjects_lib.check_answers
check_noises = subjects_lib.check_noises

ARMS = ("latent", "text")
"""How :func:`imagine` fills the block: ``"latent"`` (continuous states fed back) or ``"text"`` (tokens)."""
KINDS = ("zeros", "noise", "mean", "constant", "swap")
"""The latent -> answer interventions :func:`mediation` runs by default (those needing no other latents)."""
NOISES = (("gaussian", 0.5), ("blank", 0.0))
"""The default image perturbations, ``(kind, level)`` of the adapter's ``noised_pixels``
(:func:`tokdyn.models.qwen2_5_vl.adapter.noised_pixels`)."""


# ---------------------------------------------------------------------------------------------- imagination


class Imagined(NamedTuple):
    """The block a model filled itself: ``latents`` (B, L, D) its input embeddings, ``tokens`` (B, L) the
    tokens written (the text arm; -1 in the latent arm)."""

    latents: jax.Array
    tokens: jax.Array


def _check_imagine(subject, params, batch, *, arm):
    check_batch(subject, batch, block="imagination")
    _checks.choice("arm", arm, ARMS)
    protocol.check_apply(subject.apply, params, without_latents(batch), uses=("latents",))


@_checks.checked_jit(_check_imagine, static_argnames=("subject", "arm"))
def imagine(subject: Subject, params, batch, *, arm: str = "latent") -> Imagined:
    """The latents the model writes into its own block, one slot after another (L forward passes, each
    reading the slots written before it). ``arm`` ``"latent"``: slot i gets the last layer's state at the
    position before it after the final RMSNorm (continuous feedback, as Coconut feeds back its last hidden
    state); ``"text"``: the embedding of the greedy token predicted there (text-space imagination). Traced;
    ``batch``'s own latents are ignored. Compiled after the checks; the kernel without them is
    ``imagine.jitted``.

    Args:
      subject: the :class:`Subject`.
      params: the model's parameter tree.
      batch: B prompts (:func:`tokdyn.models.qwen2_5_vl.adapter.make_batch`).
      arm: one of :data:`ARMS` (static).

    Returns:
      :class:`Imagined`.
    """
    lay, cfg, apply_fn = subject.layout, subject.config, subject.apply
    batch = encoded(subject, params, without_latents(batch))
    slots = jnp.asarray(lay.latents, jnp.int32)
    need = protocol.Select(hidden=(-1,)) if arm == "latent" else protocol.Select()
    z0 = protocol.apply_selected(apply_fn, params, batch, protocol.Select()).latents  # (B, L, D) fill embeddings
    b = z0.shape[0]

    def step(carry, i):
        z, tokens = carry
        out = protocol.apply_selected(apply_fn, params, batch, need, latents=z)
        before = slots[i] - 1  # the position whose output feeds slot i
        if arm == "latent":
            h = jnp.take(out.hidden[:, 0], before, axis=1)  # (B, D), before the final norm
            new = norm.rms_norm(h, params["text"]["norm"], cfg.text.rms_norm_eps)
        else:
            tok = jnp.argmax(jnp.take(out.logits, before, axis=1), -1).astype(jnp.int32)  # (B,)
            new = params["text"]["embed"][tok]
            tokens = tokens.at[:, i].set(tok)
        return (z.at[:, i].set(new.astype(z.dtype)), tokens), None

    tokens0 = jnp.full((b, len(lay.latents)), -1, jnp.int32)
    (z, tokens), _ = jax.lax.scan(step, (z0, tokens0), jnp.arange(len(lay.latents)))
    return Imagined(z, tokens)


# ---------------------------------------------------------------------------------------------- decomposition


class Decomposition(NamedTuple):
    """Beyond Visual Memory's decomposition of a batch: ``correct`` (K, B) 1 where the answer is right under
    each setting (in the order asked); ``concentration`` (:class:`tokdyn.diagnostics.decomposition.Narrowness`,
    fields (B, L + 1)) of the attention over the image tokens at each latent slot, then at the answer."""

    correct: jax.Array
    concentration: decomposition_lib.Narrowness


def _check_decomposition(key, subject, params, batch, *, answers, settings, arm, top_k):
    _checks.prng_key("key", key)
    b = check_batch(subject, batch, block="the decomposition")
    lay = subject.layout
    fmt = jax.ShapeDtypeStruct((len(lay.markers) + len(lay.latents), subject.config.text.hidden_size), jnp.float32)
    settings = decomposition_lib.check_decompose(settings, lay.latents, lay.markers, lay.length, fmt)
    if arm is not None:
        _checks.choice("arm", arm, ARMS)
    _checks.positive_int("top_k", top_k)
    if top_k > len(lay.image):
        raise ValueError(f"top_k must be at most the number of image tokens {len(lay.image)}, got {top_k}")
    check_answers(answers, b, subject.config.text.vocab_size)
    protocol.check_apply(subject.apply, params, batch, uses=("latents", "intervene", "drop"))
    return {"settings": settings}


@_checks.checked_jit(_check_decomposition, static_argnames=("subject", "settings", "arm", "top_k"))
def decomposition(
    key, subject: Subject, params, batch, *, answers, settings=decomposition_lib.ALL_SETTINGS, arm=None, top_k: int = 3
) -> Decomposition:
    """Correctness under each decomposition setting and the attention concentration at the latents, for every
    instance of ``batch`` in one program (:func:`tokdyn.diagnostics.decomposition.decompose` on the family's ``apply``).
    ``format_only`` gives the block the embeddings of the prompt's own block tokens (start marker, fill
    tokens, end marker): the block's format without its content.

    Args:
      key: PRNG key (``slots_noise``).
      subject: the :class:`Subject` (static); its layout must have a latent block.
      params: the model's parameter tree.
      batch: B prompts; the instances' latents in ``batch["latents"]`` (:func:`with_latents`), else ``arm``.
      answers: (B,) correct token ids.
      settings: names from :data:`tokdyn.diagnostics.decomposition.ALL_SETTINGS` (static).
      arm: None (the batch's latents, or the fill embeddings), or one of :data:`ARMS`: the model fills its
        block first (:func:`imagine`).
      top_k: the k of the top-k mass of the concentration (static), at most the number of image tokens.

    Returns:
      :class:`Decomposition`; :func:`gain_kept` of its ``correct``.
    """
    lay = subject.layout
    batch = encoded(subject, params, batch)
    if arm is not None:
        batch = with_latents(batch, imagine(subject, params, batch, arm=arm).latents)
    block = jnp.asarray(lay.markers + lay.latents, jnp.int32)
    fmt = params["text"]["embed"][batch["input_ids"][0, block]]  # (len(block), D): the prompt's own block tokens
    correct = decomposition_lib.decompose(
        key,
        subject.apply,
        params,
        batch,
        slots=lay.latents,
        markers=lay.markers,
        answer_position=lay.answer,
        answers=jnp.asarray(answers),
        length=lay.length,
        settings=settings,
        format_embedding=fmt,
    )
    return Decomposition(correct, _concentration(subject, params, batch, top_k))


def _concentration(subject, params, batch, top_k) -> decomposition_lib.Narrowness:
    lay = subject.layout
    n_layers = subject.config.text.num_hidden_layers
    select = protocol.Select(attention=tuple(range(n_layers)), rows=lay.latents + (lay.answer,))
    rows = protocol.apply_selected(subject.apply, params, batch, select).attention  # (B, layers, H, L + 1, T)
    return decomposition_lib.concentration(rows, patches=lay.image, top_k=top_k)


def _check_concentration(subject, params, batch, *, top_k):
    check_batch(subject, batch, block="the attention's concentration at the latents")
    _checks.positive_int("top_k", top_k)
    if top_k > len(subject.layout.image):
        raise ValueError(f"top_k must be at most the number of image tokens {len(subject.layout.image)}, got {top_k}")
    protocol.check_apply(subject.apply, params, batch, uses=("latents",) if "latents" in batch else ())


@_checks.checked_jit(_check_concentration, static_argnames=("subject", "top_k"))
def concentration(subject: Subject, params, batch, *, top_k: int = 3) -> decomposition_lib.Narrowness:
    """How narrowly the model attends to the image at each latent slot and at the answer position (the
    layout's), layers and heads averaged: :func:`tokdyn.diagnostics.decomposition.concentration` of the
    attention rows there alone (a 7B model never holds (B, layers, H, T, T)), with the batch's own latents
    (:func:`with_latents`) at the slots, or their fill embeddings. :func:`decomposition` reports it beside
    its settings; the study's generated-latent analyses read it on the blocks a model wrote itself.

    Args:
      subject: the :class:`~tokdyn.diagnostics.subjects.Subject` (static); its layout must have a latent block.
      params: the model's parameter tree.
      batch: B prompts.
      top_k: the k of the top-k mass (static), at most the number of image tokens.

    Returns:
      :class:`tokdyn.diagnostics.decomposition.Narrowness`, fields (B, L + 1).
    """
    return _concentration(subject, params, encoded(subject, params, batch), top_k)


def gain_kept(correct, settings) -> dict:
    """Each setting's share of the full block's gain over no block, from the (K, B) ``correct`` of
    :func:`decomposition` (host, float64): ``(acc[s] - acc["no_block"]) / (acc["full"] - acc["no_block"])``,
    accuracies over the B instances. NaN for every setting where the full block gains nothing over no block
    (the share is undefined then). ``settings`` must hold ``"full"`` and ``"no_block"``."""
    settings = tuple(settings)
    for need in ("full", "no_block"):
        if need not in settings:
            raise ValueError(f"settings must hold {need!r} for the gain kept, got {settings}")
    acc = np.asarray(correct, np.float64).mean(-1)
    if acc.shape != (len(settings),):
        raise ValueError(f"correct must be (K, B) with K = {len(settings)} settings, got {np.shape(correct)}")
    full, none = acc[settings.index("full")], acc[settings.index("no_block")]
    gain = full - none
    return {s: float((a - none) / gain) if gain != 0 else float("nan") for s, a in zip(settings, acc)}


# ---------------------------------------------------------------------------------------------- mediation


def perturb_pixels(key, pixel_values, processor, *, noises=NOISES, n_seeds: int = 1, index=None) -> jax.Array:
    """Perturbed copies (N, B, patches, patch_dim) of ``pixel_values`` (B, patches, patch_dim), N =
    len(noises) x n_seeds, noise-major: copy ``j * n_seeds + s`` is noise j's ``(kind, level)`` (the
    adapter's ``noised_pixels`` of ``processor``'s family, :func:`tokdyn.models.qwen2_5_vl.adapter.noised_pixels`)
    drawn from ``fold_in(fold_in(key, j), s)``, instance i's image from ``fold_in`` of that key and
    ``index[i]`` (its id: default its row, ``arange(B)``; give the instances' ids so that a draw does not
    depend on how they are batched). Traceable."""
    adapter = family_of(processor).adapter
    noises = check_noises(noises, adapter.NOISES)
    _checks.positive_int("n_seeds", n_seeds)
    px = jnp.asarray(pixel_values, jnp.float32)
    if index is not None and tuple(jnp.shape(index)) != (px.shape[0],):
        raise ValueError(f"index must be (B,) = ({px.shape[0]},) instance ids, got shape {tuple(jnp.shape(index))}")
    rows = jnp.arange(px.shape[0]) if index is None else jnp.asarray(index)
    out = []
    for j, (kind, level) in enumerate(noises):
        for s in range(n_seeds):
            k = jax.random.fold_in(jax.random.fold_in(key, j), s)
            noised = jax.vmap(lambda i, p: adapter.noised_pixels(jax.random.fold_in(k, i), p, processor, kind, level))
            out.append(noised(rows, px))
    return jnp.stack(out)


class Change(NamedTuple):
    """How the answer moved (N, B): ``flipped`` 1 where the argmax changed, ``kl`` KL(P || P') of the answer
    distribution, from the unperturbed P to the perturbed P'."""

    flipped: jax.Array
    kl: jax.Array


def _change(lp0, lp) -> Change:  # (B, V), (..., B, V) log-probabilities
    flipped = (jnp.argmax(lp, -1) != jnp.argmax(lp0, -1)).astype(lp.dtype)
    return Change(flipped, jnp.maximum(jnp.sum(jnp.exp(lp0) * (lp0 - lp), -1), 0.0))


class Mediation(NamedTuple):
    """CapImagine's causal mediation on a batch, under N image perturbations.

    Attributes:
      answer: (B,) the answer with the image and the model's own imagined latents.
      latent_shift: :class:`tokdyn.diagnostics.mediation.Shift`, fields (N, B, L): how far the imagined
        latents move when the model imagines from the perturbed image (input -> latent).
      total: :class:`Change` (N, B): perturbed image, latents imagined from it.
      direct: :class:`Change` (N, B): perturbed image, the original latents held.
      indirect: :class:`Change` (N, B): original image, the latents imagined from the perturbed one.
      effects: :class:`tokdyn.diagnostics.mediation.Effects` (K, B) of the latent -> answer interventions.
    """

    answer: jax.Array
    latent_shift: mediation_lib.Shift
    total: Change
    direct: Change
    indirect: Change
    effects: mediation_lib.Effects


def _check_mediation(key, subject, params, batch, perturbed, *, arm, answers, kinds):
    _checks.prng_key("key", key)
    b = check_batch(subject, batch, block="causal mediation")
    _checks.choice("arm", arm, ARMS)
    px = tuple(jnp.shape(batch["pixel_values"]))
    if len(jnp.shape(perturbed)) != 4 or tuple(jnp.shape(perturbed)[1:]) != px or jnp.shape(perturbed)[0] < 1:
        raise ValueError(
            f"perturbed must be (N, B, patches, patch_dim) = (N, {', '.join(map(str, px))}) with N >= 1 perturbed "
            f"pixel rows (perturb_pixels), got {tuple(jnp.shape(perturbed))}"
        )
    if isinstance(kinds, str) or not len(kinds):
        raise ValueError(f"kinds must name at least one of {list(KINDS)}, got {kinds!r}")
    kinds = tuple(kinds)
    for k in kinds:
        _checks.choice("kinds", k, mediation_lib.INTERVENTIONS)
    if "other" in kinds:
        raise ValueError("kinds must not hold 'other' here (it needs other latents): use mediation.latent_to_answer")
    if b < 2 and {"mean", "swap"} & set(kinds):
        raise ValueError(f"kinds {sorted({'mean', 'swap'} & set(kinds))} need B >= 2 instances, got B = {b}")
    check_answers(answers, b, subject.config.text.vocab_size, optional=True)
    protocol.check_apply(subject.apply, params, batch, uses=("latents",), need_latents="causal mediation")
    return {"kinds": kinds}


@_checks.checked_jit(_check_mediation, static_argnames=("subject", "arm", "kinds"))
def mediation(key, subject: Subject, params, batch, perturbed, *, arm="latent", answers=None, kinds=KINDS) -> Mediation:
    """Causal mediation of the image's effect on the answer through the imagined block, every instance and
    perturbation in one program: the model imagines its block (:func:`imagine`, ``arm``) from the image and
    from each perturbed image; the answer is read with each combination; then the latent -> answer
    interventions ``kinds`` on the original latents (:func:`tokdyn.diagnostics.mediation.latent_effects`).

    Args:
      key: PRNG key of the interventions.
      subject: the :class:`Subject` (static); its layout must have a latent block.
      params: the model's parameter tree.
      batch: B prompts.
      perturbed: (N, B, patches, patch_dim) perturbed pixel rows (:func:`perturb_pixels`).
      arm: one of :data:`ARMS` (static): latent-space or text-space imagination.
      answers: optional (B,) correct token ids (for ``effects.correct``).
      kinds: names from :data:`tokdyn.diagnostics.mediation.INTERVENTIONS` but ``"other"`` (static).

    Returns:
      :class:`Mediation`.
    """
    lay, apply_fn = subject.layout, subject.apply
    batch = encoded(subject, params, without_latents(batch))
    answer_only = protocol.Select()

    def answer_lp(b, z):  # (B, V) log-probabilities at the answer
        out = protocol.apply_selected(apply_fn, params, b, answer_only, latents=z)
        return jax.nn.log_softmax(out.logits[:, lay.answer].astype(jnp.float32))

    z0 = imagine(subject, params, batch, arm=arm).latents
    lp0 = answer_lp(batch, z0)

    def one(px):  # one perturbation, every instance
        pb = with_image(subject, params, batch, px)
        z = imagine(subject, params, pb, arm=arm).latents
        return mediation_lib.shift(z0, z), answer_lp(pb, z), answer_lp(pb, z0), answer_lp(batch, z)

    shift, lt, ld, li = jax.lax.map(one, jnp.asarray(perturbed, jnp.float32))
    effects = mediation_lib.latent_effects(
        key,
        apply_fn,
        params,
        with_latents(batch, z0),
        answer_position=lay.answer,
        answers=None if answers is None else jnp.asarray(answers),
        kinds=kinds,
        chunk=None,
    )
    return Mediation(jnp.argmax(lp0, -1), shift, _change(lp0, lt), _change(lp0, ld), _change(lp0, li), effects)


# ---------------------------------------------------------------------------------------------- DMLR


def _check_scored(subject, params, batch, positions, tokens) -> tuple:
    check_batch(subject, batch)
    positions = protocol.as_positions("positions", positions, subject.layout.length)
    if not positions:
        raise ValueError("positions must name at least one position (those predicting the scored tokens), got ()")
    dims = protocol.check_apply(
        subject.apply, params, batch, arrays={"tokens": (tokens, ("B", len(positions)))}, select=protocol.Select()
    )
    if not jnp.issubdtype(_checks.dtype_of(tokens), jnp.integer):
        raise TypeError(f"tokens must be integer token ids, got dtype {_checks.dtype_of(tokens)}")
    if _checks.on_host(tokens):
        _checks.real("tokens", np.asarray(tokens), low=0, high=dims.vocab - 1)
    return positions


def _check_grounding(key, subject, params, batch, processor, *, positions, tokens, noises, n_seeds, index):
    _checks.prng_key("key", key)
    check_batch(subject, batch)
    if not isinstance(processor, subject.family.ImageProcessor):
        raise TypeError(
            f"processor must be a {subject.family.__name__} ImageProcessor (the one that made the pixel rows), "
            f"got {type(processor).__name__}"
        )
    noises = check_noises(noises, subject.adapter.NOISES)
    _checks.positive_int("n_seeds", n_seeds)
    positions = _check_scored(subject, params, batch, positions, tokens)
    if index is not None and tuple(jnp.shape(index)) != (jnp.shape(batch["input_ids"])[0],):
        raise ValueError(f"index must be (B,) instance ids, got shape {tuple(jnp.shape(index))}")
    return {"noises": noises, "positions": positions}


class Grounding(NamedTuple):
    """:func:`grounding_scores`' result: ``clean`` (B, n) the log-probabilities of the scored tokens with the
    image, ``scores`` (N, B, n) the grounding score S under each perturbed image (the log-probability there is
    ``clean - scores``)."""

    clean: jax.Array
    scores: jax.Array


def _scores(subject, params, batch, perturbed, positions, tokens) -> Grounding:
    tokens = jnp.asarray(tokens)
    batch = encoded(subject, params, batch)
    clean = token_logprobs(subject.apply, params, batch, positions=positions, tokens=tokens)  # (B, n)

    def one(px):
        pb = with_image(subject, params, batch, px)
        return clean - token_logprobs(subject.apply, params, pb, positions=positions, tokens=tokens)

    return Grounding(clean, jax.lax.map(one, jnp.asarray(perturbed, jnp.float32)))


@_checks.checked_jit(_check_grounding, static_argnames=("subject", "processor", "positions", "noises", "n_seeds"))
def grounding(
    key, subject: Subject, params, batch, processor, *, positions, tokens, noises=NOISES, n_seeds=1, index=None
) -> jax.Array:
    """DMLR's grounding score of each scored token, :math:`S_t = \\log p(x_t \\mid x_{<t}, I, q) - \\log p(x_t
    \\mid x_{<t}, \\tilde I, q)`, under every noise and seed, in one program (teacher-forced: the tokens are
    given, each read at the position that predicts it). :func:`grounding_scores` takes the perturbed images.

    Args:
      key: PRNG key of the noise (:func:`perturb_pixels`'s draws).
      subject: the :class:`~tokdyn.diagnostics.subjects.Subject` (static).
      params: the model's parameter tree.
      batch: B prompts with their generated tokens.
      processor: the family's image processor that made the pixel rows (static; for Qwen2.5-VL a
        :class:`~tokdyn.models.qwen2_5_vl.ImageProcessor`).
      positions: n positions predicting the scored tokens (static ints).
      tokens: (B, n) token ids scored.
      noises: ``(kind, level)`` pairs of :func:`tokdyn.models.qwen2_5_vl.adapter.noised_pixels` (static).
      n_seeds: noise draws per noise (static).
      index: optional (B,) instance ids for the draws (:func:`perturb_pixels`).

    Returns:
      (len(noises), n_seeds, B, n) scores; the perturbed images are :func:`perturb_pixels`'s, in its order.
    """
    perturbed = perturb_pixels(key, batch["pixel_values"], processor, noises=noises, n_seeds=n_seeds, index=index)
    s = _scores(subject, params, batch, perturbed, positions, tokens).scores  # (N * S, B, n)
    return s.reshape((len(noises), n_seeds) + s.shape[1:])


def _check_grounding_scores(subject, params, batch, perturbed, *, positions, tokens):
    positions = _check_scored(subject, params, batch, positions, tokens)
    px = tuple(jnp.shape(batch["pixel_values"]))
    if len(jnp.shape(perturbed)) != 4 or tuple(jnp.shape(perturbed)[1:]) != px or jnp.shape(perturbed)[0] < 1:
        raise ValueError(
            f"perturbed must be (N, B, patches, patch_dim) = (N, {', '.join(map(str, px))}) with N >= 1 perturbed "
            f"pixel rows (perturb_pixels), got {tuple(jnp.shape(perturbed))}"
        )
    return {"positions": positions}


@_checks.checked_jit(_check_grounding_scores, static_argnames=("subject", "positions"))
def grounding_scores(subject: Subject, params, batch, perturbed, *, positions, tokens) -> Grounding:
    """DMLR's grounding score of each scored token under each of N perturbed images one gives, in one
    program: :func:`grounding` without the draws (the ``vlm-diagnostics`` study draws its gaussian levels and
    one blank image with :func:`perturb_pixels`).

    Args:
      subject: the :class:`~tokdyn.diagnostics.subjects.Subject` (static).
      params: the model's parameter tree.
      batch: B prompts with their generated tokens.
      perturbed: (N, B, patches, patch_dim) perturbed pixel rows.
      positions: n positions predicting the scored tokens (static ints).
      tokens: (B, n) token ids scored.

    Returns:
      :class:`Grounding`: the clean log-probabilities (B, n) and the scores :math:`S` (N, B, n).
    """
    return _scores(subject, params, batch, perturbed, positions, tokens)


def _check_optimise(key, subject, params, batch, cfg, hparams, *, seeds, chunk, index):
    _checks.prng_key("key", key)
    check_batch(subject, batch, block="DMLR's latent optimisation")
    if not isinstance(cfg, dmlr_lib.Config):
        raise TypeError(f"cfg must be a tokdyn.diagnostics.dmlr.Config, got {type(cfg).__name__}")
    if not isinstance(hparams, dmlr_lib.Hparams):
        raise TypeError(f"hparams must be a tokdyn.diagnostics.dmlr.Hparams, got {type(hparams).__name__}")
    cfg.validate(subject.config.text.vocab_size)
    if not _checks.is_traced(hparams):
        hparams.validate()
    try:
        seeds = tuple(int(s) for s in seeds)
    except (TypeError, ValueError):
        raise TypeError(f"seeds must be ints (static), got {seeds!r}") from None
    if not seeds:
        raise ValueError("seeds must name at least one seed, got ()")
    if chunk is not None:
        _checks.positive_int("chunk", chunk)
    if index is not None and tuple(jnp.shape(index)) != (jnp.shape(batch["input_ids"])[0],):
        raise ValueError(f"index must be (B,) instance ids, got shape {tuple(jnp.shape(index))}")
    return {"seeds": seeds}


@_checks.checked_jit(_check_optimise, static_argnames=("subject", "cfg", "seeds", "chunk"))
def optimise(
    key,
    subject: Subject,
    params,
    batch,
    cfg: dmlr_lib.Config = dmlr_lib.Config(),
    hparams: dmlr_lib.Hparams = dmlr_lib.Hparams(),
    *,
    seeds=(0,),
    chunk: Optional[int] = None,
    index=None,
) -> dmlr_lib.Result:
    """DMLR's confidence-driven latent optimisation (:func:`tokdyn.diagnostics.dmlr.optimise`: optax through
    :mod:`tokdyn.es`, the maximised reward ``cfg.reward``) of every instance under every seed, in one program:
    seed ``s`` optimises from ``fold_in(key, s)``, instance i within it from ``fold_in(fold_in(key, s), index[i])``
    (``index``: the instances' ids, default their rows).
    The latents start from the batch's own (:func:`with_latents`) or the fill embeddings; the scored positions
    are the layout's slots, the answer its answer position, the injected patches its image tokens (in the
    order of ``apply``'s ``inject`` mask).

    Args:
      key: root PRNG key.
      subject: the :class:`Subject` (static); its layout must have a latent block.
      params: the model's parameter tree (frozen).
      batch: B prompts.
      cfg: :class:`tokdyn.diagnostics.dmlr.Config` (static).
      hparams: :class:`tokdyn.diagnostics.dmlr.Hparams` (traced).
      seeds: S seeds (static ints).
      chunk: instances vmapped at once within a seed (None: all B).
      index: optional (B,) instance ids for the keys (default ``arange(B)``).

    Returns:
      :class:`tokdyn.diagnostics.dmlr.Result` with leading axes (S, B).
    """
    lay = subject.layout
    batch = encoded(subject, params, batch)  # the image encoded once for every reward evaluation

    def one(seed):
        return dmlr_lib.optimise(
            jax.random.fold_in(key, seed),
            subject.apply,
            params,
            batch,
            cfg,
            hparams,
            latent_positions=lay.latents,
            answer_position=lay.answer,
            patch_positions=lay.image,
            chunk=chunk,
            index=index,
        )

    return jax.vmap(one)(jnp.asarray(seeds))
