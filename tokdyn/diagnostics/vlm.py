"""The latent-reasoning analyses on a checkpoint family's model, one implementation each, over one kind of
generation: the family's latent-mode generation (:func:`tokdyn.models.vlm.generation.generate`), whether the
block is written by the model (``generated``) or forced right after the prompt and filled by the model's own
states (``block``: a :class:`Mode` whose ``block_at`` is 0). The ``vlm-diagnostics`` study, the example
``examples/vlm_analyses.py``, the tests and ``benchmarks/bench_vlm_analyses.py`` all call these.

Generation (host-side around one call of the one generation program each):

- :func:`generate`: a clean run (greedy, the checkpoint's repetition penalty), with the log-probabilities of
  the options' tokens at every step (:func:`answer_logprobs`, read at :func:`answer_step`: where the answer
  is written, after the last whole block);
- :func:`under_interventions`: the same prompts with the latents replaced or hidden as they are generated,
  every kind of the one table (:mod:`tokdyn.models.vlm.interventions`) one row block of one call, ``swap`` and
  ``mean`` from other instances of the whole set;
- :func:`with_source`: the latents of one's own swapped in (DMLR's optimised ones);
- :func:`under_images`: perturbed images (input -> latent), with the latents held or swapped between the clean
  and the perturbed run (direct and indirect effects); :func:`latent_shift`, :func:`answer_kl`;
- :func:`aligned`: the prompts with their generated text up to the first whole block, teacher-forced with
  explicit positions, for the ``apply`` protocol's analyses below (its rows split over the devices the
  parameters are replicated on, :func:`on_devices`, as :func:`generate` splits its rows).

Teacher-forced, through the ``apply`` protocol of the family's adapter (:mod:`tokdyn.models.qwen2_5_vl.adapter`),
each one compiled program over a batch (and over image perturbations and seeds):

- :func:`concentration`: the attention's concentration on the image at the latent slots;
- :func:`grounding` (DMLR): the per-token grounding score under each noise kind, level and seed
  (:func:`grounding_scores`: under perturbed images one gives); :func:`optimise`: DMLR's confidence-driven
  latent optimisation (:func:`tokdyn.diagnostics.dmlr.optimise`) over instances and seeds;
- :func:`gain_kept`: each decomposition setting's share of the block's gain.

A model and prompt layout are a :class:`~tokdyn.diagnostics.subjects.Subject` (static; :func:`subject`), whose
family's adapter builds the ``apply``. Each analysis checks its arguments in plain Python before anything
compiles, naming what is wrong. Draws that must not depend on how instances are batched take the instances'
ids (``index``, the ``index`` of :class:`Prompts`). The pages :doc:`/concepts/vlm-decomposition`,
:doc:`/concepts/vlm-mediation` and :doc:`/concepts/vlm-dmlr` walk through them.
"""

from __future__ import annotations

import dataclasses
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
from tokdyn.models.vlm import devices as devices_lib
from tokdyn.models.vlm import interventions

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

SETTINGS = {
    "full": "none",
    "markers_only": "drop_slots",
    "slots_only": "drop_markers",
    "format_only": "fill",
    "slots_zeros": "zeros",
    "slots_noise": "noise",
    "no_block": "drop_block",
}
"""The decomposition's settings (Beyond Visual Memory) as kinds of the one table of interventions
(:data:`tokdyn.models.vlm.interventions.TABLE`): the block whole, its markers only (the slots hidden from what
follows), its slots only (the markers hidden), its format only (the slots fed the pad token's embedding), its
slots zeroed or noised, and no block (both hidden)."""

NOISES = (("gaussian", 0.5), ("blank", 0.0))
"""The default image perturbations, ``(kind, level)`` of the adapter's ``noised_pixels``
(:func:`tokdyn.models.qwen2_5_vl.adapter.noised_pixels`)."""


# ---------------------------------------------------------------------------------------------- attention


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
    (:func:`with_latents`) at the slots, or their fill embeddings. The ``vlm-diagnostics`` study's decomposition
    reports it beside its settings, on each instance's first whole block teacher-forced (:func:`aligned`).

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
    """Each setting's share of the full block's gain over no block, from the (K, B) ``correct`` of the
    settings ``settings`` (host, float64): ``(acc[s] - acc["no_block"]) / (acc["full"] - acc["no_block"])``,
    accuracies over the B instances. NaN for every setting where the full block does not raise the accuracy
    above no block's (the share is undefined then: no gain to keep, or a block that lowers accuracy).
    ``settings`` must hold ``"full"`` and ``"no_block"``."""
    settings = tuple(settings)
    for need in ("full", "no_block"):
        if need not in settings:
            raise ValueError(f"settings must hold {need!r} for the gain kept, got {settings}")
    acc = np.asarray(correct, np.float64).mean(-1)
    if acc.shape != (len(settings),):
        raise ValueError(f"correct must be (K, B) with K = {len(settings)} settings, got {np.shape(correct)}")
    full, none = acc[settings.index("full")], acc[settings.index("no_block")]
    gain = full - none
    return {s: float((a - none) / gain) if gain > 0 else float("nan") for s, a in zip(settings, acc)}


# ---------------------------------------------------------------------------------------------- perturbations


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


# ---------------------------------------------------------------------------------------------- generation


@dataclasses.dataclass(frozen=True)
class Prompts:
    """A batch of prompts to generate from (host arrays).

    Attributes:
      ids: (B, T) token ids, padded anywhere under ``mask``.
      mask: (B, T) bool, False at padding.
      pixels: (B, patches, patch_dim) one image per row.
      grid: (1, 3) the images' grid.
      index: (B,) each row's instance id in the whole set (its keys and its sources follow it).
      valid: (B,) bool, False at rows that only pad the batch (they are counted nowhere).
    """

    ids: np.ndarray
    mask: np.ndarray
    pixels: np.ndarray
    grid: np.ndarray
    index: np.ndarray
    valid: np.ndarray

    def tiled(self, k: int, pixels: Optional[np.ndarray] = None) -> "Prompts":
        """The batch repeated ``k`` times (rows ``j * B + i``), with ``pixels`` (k, B, patches, patch_dim)
        in place of the images when given."""
        px = (
            np.tile(self.pixels, (k, 1, 1))
            if pixels is None
            else np.asarray(pixels).reshape(-1, *self.pixels.shape[1:])
        )
        tile = lambda a: np.tile(a, (k,) + (1,) * (np.ndim(a) - 1))  # noqa: E731
        return Prompts(tile(self.ids), tile(self.mask), px, self.grid, tile(self.index), tile(self.valid))


@dataclasses.dataclass(frozen=True)
class Mode:
    """How the analyses generate: the latent mode, where the block comes from, and the run's shape.

    Attributes:
      latent: the checkpoint's :class:`tokdyn.models.vlm.LatentMode`.
      block_at: None (``generated``: the model opens its blocks itself) or 0 (``block``: the start token forced
        at the first step, the block after the prompt).
      new_tokens: tokens generated per row, the block included.
      score_ids: the tokens whose log-probabilities are read at every step (the options' first tokens).
      key: the root key; a row's draws come from ``fold_in(key, instance id)``
        (:func:`tokdyn.models.vlm.interventions.instance_keys`), never from its row.
    """

    latent: object
    block_at: Optional[int]
    new_tokens: int
    score_ids: tuple
    key: object


def generate(model, prompts: Prompts, mode: Mode, *, intervention=None, latent=True):
    """One greedy generation (as the benchmarks score; the checkpoint's repetition penalty kept) of
    ``prompts`` under ``mode`` (``latent=False``: text mode, no block): a
    :class:`tokdyn.models.vlm.Generation` with ``scores`` (B, N, C) the log-probabilities of ``mode.score_ids``
    at every step."""
    keys = interventions.instance_keys(mode.key, prompts.index)
    return model.generate(
        prompts.ids,
        prompts.pixels,
        prompts.grid,
        prompts.mask,
        max_new_tokens=mode.new_tokens,
        latent=mode.latent if latent else None,
        block_at=mode.block_at if latent else None,
        score_ids=tuple(mode.score_ids),
        key=keys,
        intervention=intervention,
        return_generation=True,
        do_sample=False,
    )


def split(gen, k: int) -> list:
    """A :class:`tokdyn.models.vlm.Generation` of ``k`` blocks of rows (as :meth:`Prompts.tiled` makes them) as
    ``k`` Generations of B rows each."""
    b = len(gen.tokens) // k
    return [gen.rows(slice(j * b, (j + 1) * b)) for j in range(k)]


def _kind_rows(prompts: Prompts, mode: Mode, kinds, sources, scale, hidden: int) -> tuple:
    """The rows of :func:`under_interventions` (``len(kinds) x B``, kind-major): ``(kinds, scale, source
    (rows, K, S, hidden), source_blocks)`` host values, ``source`` None where no kind takes one."""
    b = len(prompts.ids)
    span = min(mode.latent.size, mode.new_tokens)
    sources = sources or {}
    need = [k for k in kinds if k in interventions.SOURCED and k not in sources]
    if need:
        raise ValueError(f"interventions {need} need their sources (set_sources): sources={{kind: (latents, blocks)}}")
    depth = max([np.shape(sources[k][0])[1] for k in kinds if k in sources] + [0])
    source = np.zeros((len(kinds), b, depth, span, hidden), np.float32)
    blocks = np.zeros((len(kinds), b), np.int64)
    for j, k in enumerate(kinds):
        if k in sources:
            lat, n = sources[k]
            lat = np.asarray(lat, np.float32)[:, :, :span]
            source[j, :, : lat.shape[1], : lat.shape[2]] = lat
            blocks[j] = np.minimum(np.asarray(n), lat.shape[1])
    scales = np.broadcast_to(np.asarray(scale, np.float64), (len(kinds) * b,))
    if not depth:
        return [k for k in kinds for _ in range(b)], scales, None, None
    return (
        [k for k in kinds for _ in range(b)],
        scales,
        source.reshape(len(kinds) * b, depth, span, hidden),
        blocks.reshape(-1),
    )


def _joined(mode: Mode, hidden: int, *groups) -> interventions.Intervention:
    """One :class:`tokdyn.models.vlm.interventions.Intervention` of the rows of ``groups`` (each ``(kinds,
    scale, source, source_blocks)`` as :func:`_kind_rows` gives them) in order, their sources padded to the
    most blocks and steps of any (a padded block is never read: each row reads its own ``source_blocks``)."""
    kinds = [k for g in groups for k in g[0]]
    scale = np.concatenate([np.asarray(g[1], np.float64) for g in groups])
    held = [g for g in groups if g[2] is not None]
    if not held:
        return interventions.Intervention.make(kinds, len(kinds), mode.latent.size, hidden, scale)
    depth = max(g[2].shape[1] for g in held)
    span = max(g[2].shape[2] for g in held)
    source, blocks = [], []
    for g in groups:
        n = len(g[0])
        src = np.zeros((n, depth, span, hidden), np.float32)
        if g[2] is not None:
            src[:, : g[2].shape[1], : g[2].shape[2]] = g[2]
        source.append(src)
        blocks.append(np.zeros(n, np.int64) if g[3] is None else np.asarray(g[3], np.int64))
    return interventions.Intervention.make(
        kinds, len(kinds), mode.latent.size, hidden, scale, np.concatenate(source), np.concatenate(blocks)
    )


def under_interventions(model, prompts: Prompts, mode: Mode, kinds, *, sources=None, scale=1.0) -> dict:
    """The generation of ``prompts`` under each intervention of ``kinds`` (names of
    :data:`tokdyn.models.vlm.interventions.KINDS`), in one call of ``len(kinds) x B`` rows. ``sources``:
    ``{"swap": (latents (B, K, S, hidden), blocks (B,)), "mean": (...)}``, each row's source by the table's
    rule (:func:`tokdyn.models.vlm.interventions.set_sources`: other instances of the whole set), needed by
    ``swap`` and ``mean``; noise at ``scale`` times each latent's RMS. Returns ``{kind: Generation}``."""
    kinds = tuple(kinds)
    hidden = model.config.text.hidden_size
    iv = _joined(mode, hidden, _kind_rows(prompts, mode, kinds, sources, scale, hidden))
    gen = generate(model, prompts.tiled(len(kinds)), mode, intervention=iv)
    return dict(zip(kinds, split(gen, len(kinds))))


def with_source(model, prompts: Prompts, mode: Mode, source, blocks):
    """The generation of ``prompts`` with each row's latents replaced by ``source`` (B, K, S, hidden) at its
    first ``blocks[b]`` blocks (``swap`` with latents of one's own: DMLR's optimised ones), computed as
    generated past them: :func:`under_interventions`'s ``swap`` with these sources."""
    got = under_interventions(model, prompts, mode, ("swap",), sources={"swap": (source, blocks)})
    return got["swap"]


def under_images(model, prompts: Prompts, mode: Mode, clean, perturbed, *, kinds=(), sources=None, scale=1.0) -> dict:
    """The generation of ``prompts`` under N perturbed images ``perturbed`` (N, B, patches, patch_dim):
    ``total`` (the perturbed image, its own latents), ``direct`` (the perturbed image, the clean run's latents
    swapped in) and ``indirect`` (the clean image, the perturbed run's latents swapped in); two calls (N x B
    rows, then 2 N x B). Only whole blocks are swapped. With ``kinds``, the generations under those
    interventions (:func:`under_interventions`'s, ``sources`` and ``scale`` as there) come from the second call
    too, one program for both. Returns ``{"total": [Generation] * N, "direct": ..., "indirect": ...}`` and
    ``{kind: Generation}`` of ``kinds``."""
    kinds = tuple(kinds)
    n, b = len(perturbed), len(prompts.ids)
    hidden = model.config.text.hidden_size
    total = generate(model, prompts.tiled(n, perturbed), mode)
    held = np.tile(np.asarray(clean.latents, np.float32), (n, 1, 1, 1))
    moved = np.asarray(total.latents, np.float32)
    k = max(held.shape[1], moved.shape[1])
    span = max(held.shape[2], moved.shape[2], 1)
    pad = lambda a: np.pad(  # noqa: E731
        a, ((0, 0), (0, k - a.shape[1]), (0, span - a.shape[2]), (0, 0))
    )
    source = np.concatenate([pad(held), pad(moved)])
    blocks = np.concatenate([np.tile(clean.blocks, n), total.blocks])
    images = np.concatenate(
        [np.asarray(perturbed).reshape(n * b, *prompts.pixels.shape[1:]), np.tile(prompts.pixels, (n, 1, 1))]
    )
    swaps = (
        ["swap" if k else "none"] * (2 * n * b),
        np.ones(2 * n * b),
        source[:, :, : min(span, mode.latent.size)] if k else None,
        np.minimum(blocks, k) if k else None,
    )
    groups = [_kind_rows(prompts, mode, kinds, sources, scale, hidden)] if kinds else []
    iv = _joined(mode, hidden, *groups, swaps)
    rows = prompts.tiled(2 * n, images)
    if kinds:
        mine = prompts.tiled(len(kinds))
        cat = lambda a, c: np.concatenate([np.asarray(a), np.asarray(c)])  # noqa: E731
        rows = Prompts(
            cat(mine.ids, rows.ids),
            cat(mine.mask, rows.mask),
            cat(mine.pixels, rows.pixels),
            prompts.grid,
            cat(mine.index, rows.index),
            cat(mine.valid, rows.valid),
        )
    parts = split(generate(model, rows, mode, intervention=iv), len(kinds) + 2 * n)
    out = {"total": split(total, n), "direct": parts[len(kinds) : len(kinds) + n], "indirect": parts[len(kinds) + n :]}
    out.update(zip(kinds, parts[: len(kinds)]))
    return out


def latent_shift(clean, other, block: int = 0) -> mediation_lib.Shift:
    """How far the latents of block ``block`` moved from ``clean`` to ``other`` (two Generations of the same
    rows): :func:`tokdyn.diagnostics.mediation.shift` per latent step, fields (B, S); NaN for a row where
    either run did not write that block whole."""
    a, b = np.asarray(clean.latents, np.float32), np.asarray(other.latents, np.float32)
    span = max(a.shape[2], b.shape[2])
    if a.shape[1] <= block or b.shape[1] <= block:
        nan = np.full((len(a), span), np.nan)
        return mediation_lib.Shift(nan, nan)
    s = mediation_lib.shift(a[:, block], b[:, block])
    both = (clean.blocks > block) & (other.blocks > block)
    keep = lambda x: np.where(both[:, None], np.asarray(x, np.float64), np.nan)  # noqa: E731
    return mediation_lib.Shift(keep(s.cosine_distance), keep(s.relative_l2))


def answer_step(gen, row: int, score_ids) -> int:
    """The step at which row ``row`` writes its answer: the first step after its last whole block (after the
    start of the run when it wrote none) whose token is one of ``score_ids``, else that first step; -1 when
    the run leaves no step for an answer (a block cut by the token limit, or ended there)."""
    tokens = np.asarray(gen.tokens[row])
    first = gen.answer_start(row)
    stop = int(gen.stop_steps[row])
    wanted = set(int(i) for i in score_ids)
    for s in range(first, min(stop + 1, len(tokens))):
        if int(tokens[s]) in wanted:
            return s
    return first if first < len(tokens) else -1


def answer_logprobs(gen, options) -> np.ndarray:
    """(B, C) each row's answer distribution over its options' tokens (``options[b]``: indices into the
    ``score_ids`` the run scored), log-probabilities renormalised over them, at its :func:`answer_step`; NaN
    rows where it has none, NaN columns past its options."""
    scores = np.asarray(gen.scores, np.float64)  # (B, N, C)
    width = max((len(o) for o in options), default=0)
    out = np.full((len(scores), width), np.nan)
    for r, opts in enumerate(options):
        if not len(opts):
            continue
        step = answer_step(gen, r, [gen.score_ids[i] for i in opts])
        if step < 0:
            continue
        lp = scores[r, step, list(opts)]
        m = lp.max()
        out[r, : len(opts)] = lp - m - np.log(np.exp(lp - m).sum())
    return out


def answer_kl(p, q) -> np.ndarray:
    """(B,) KL(P || Q) of two answer distributions of :func:`answer_logprobs` (NaN where either is)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    used = np.isfinite(p) & np.isfinite(q)
    with np.errstate(invalid="ignore"):
        terms = np.where(used, np.exp(np.where(used, p, 0.0)) * (np.where(used, p, 0.0) - np.where(used, q, 0.0)), 0.0)
    out = np.maximum(terms.sum(-1), 0.0)
    return np.where(used.any(-1), out, np.nan)


def aligned(model, prompts: Prompts, gen, mode: Mode, *, pad_id: int = 0):
    """The rows that wrote a whole first block, each as its prompt followed by its generated tokens up to that
    block's end token, for the teacher-forced analyses of the ``apply`` protocol (:func:`concentration`,
    :func:`optimise`): masked padding between the prompt and the generated tokens so that every block sits at
    the same positions; the positions are the prompt's (the family's rule) continued one per generated token,
    as generation ran them, and the image tokens are the prompt's alone (a generated token is never read as an
    image or video placeholder). Returns ``(subject, batch, has)`` (``batch`` holding the block's generated
    latents, ``has`` (B,) the rows that wrote one; the others repeat the first such row), or None when no row
    did."""
    from tokdyn.models import families

    fam = families.family_of(model.config)
    cfg, size = model.config, mode.latent.size
    has = prompts.valid & (
        np.asarray(gen.complete)[:, 0] if gen.complete.shape[1] else np.zeros(len(prompts.ids), bool)
    )
    if not has.any():
        return None
    ids, mask = np.asarray(prompts.ids), np.asarray(prompts.mask, bool)
    grid = np.repeat(np.asarray(prompts.grid), len(ids), axis=0)
    pos, next_pos = fam.model.rope_index(cfg, ids, grid, mask)  # the prompt's positions (3, B, T)
    t = ids.shape[1]
    src = np.where(has, np.arange(len(has)), int(np.flatnonzero(has)[0]))
    starts = np.asarray(gen.block_steps)[src, 0]
    gap = int(starts.max()) - starts  # padding before each row's generated tokens
    width = t + int(starts.max()) + size + 2
    out_ids = np.full((len(ids), width), pad_id, np.int64)
    out_mask = np.zeros((len(ids), width), bool)
    out_pos = np.zeros((3, len(ids), width), np.int64)
    for r in range(len(ids)):
        s = src[r]
        n = int(starts[r]) + size + 2
        out_ids[r, :t], out_mask[r, :t], out_pos[:, r, :t] = ids[s], mask[s], pos[:, s]
        at = t + gap[r]
        out_ids[r, at : at + n] = gen.tokens[s, :n]
        out_mask[r, at : at + n] = True
        out_pos[:, r, at : at + n] = next_pos[s] + np.arange(n)
    image = np.flatnonzero(mask[src[0]] & (ids[src[0]] == cfg.image_token_id))
    start = t + int(starts.max())
    lay = fam.adapter.Layout(  # by name: the contract lists the fields, not their order
        image=tuple(int(i) for i in image),
        latents=tuple(range(start + 1, start + 1 + size)),
        markers=(start, start + size + 1),
        answer=width - 1,
        length=width,
    )
    sub = subject(cfg, prompts.grid, lay, fam)
    batch = {
        "input_ids": jnp.asarray(out_ids, jnp.int32),
        "attention_mask": jnp.asarray(out_mask),
        "positions": jnp.asarray(np.swapaxes(out_pos, 0, 1), jnp.int32),
        "pixel_values": jnp.asarray(np.asarray(prompts.pixels, np.float32)[src]),
    }
    latents = np.zeros((len(ids), size, cfg.text.hidden_size), np.float32)
    got = np.asarray(gen.latents, np.float32)[src, 0]
    latents[:, : got.shape[1]] = got
    return sub, on_devices(model.params, with_latents(batch, jnp.asarray(latents))), has


def on_devices(params, rows, axis: int = 0):
    """``rows`` (a pytree of arrays whose axis ``axis`` holds a batch's rows) placed for a teacher-forced
    analysis over ``params``: split in equal shares over the devices the parameters are replicated on
    (:func:`tokdyn.models.vlm.devices.row_devices`, :func:`tokdyn.models.vlm.devices.place_rows`), so that the
    analysis's program runs each device's rows there (XLA partitions it along them); whole on each device where
    the rows do not divide over them; as they are where ``params`` split no rows (one device)."""
    return devices_lib.place_rows(rows, devices_lib.row_devices(params), axis)
