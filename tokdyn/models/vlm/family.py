"""What a checkpoint family provides to the one generation loop (:mod:`tokdyn.models.vlm.generation`), and
the check that it does.

A family (a package listed in :data:`tokdyn.models.families.FAMILIES`) holds its architecture; the loop, the
latent mode, the interventions, the decoding and the chat template are written once, here in
:mod:`tokdyn.models.vlm`, over these functions of the family's ``model`` module (:data:`LOOP`):

==============================================================================  ==================================
``check_inputs(cfg, input_ids, pixel_values, grid, mask)``                      host: the inputs checked,
                                                                                ``(ids, mask, grid)``
``rope_index(cfg, ids, grid, mask)``                                            host: positions (3, B, T) and the
                                                                                next one (B,)
``encode_images(cfg, params, pixel_values, grid)``                              the images' features, image tokens
                                                                                on axis -2
``embed_prompt(cfg, params, ids, mask, visual)``                                traced: ``(x (B, T, D), extra)``;
                                                                                ``extra`` None, or per-layer
                                                                                additions (K, B, T, D) the prefill
                                                                                passes on
``embed_tokens(cfg, params, ids)``                                              traced: input embeddings of token
                                                                                ids
``new_cache(cfg, batch, length, dtype)``                                        traced: an empty key/value cache
``decode_cached(cfg, params, x, positions, mask, cache, start, extra=None)``    traced: the last layer's output
                                                                                (before the final norm) and the
                                                                                cache, slots ``start`` onwards
                                                                                written
``final_norm(cfg, params, h)``                                                  traced: the hidden state Hugging
                                                                                Face returns last
``output_head(cfg, params, normed)``                                            traced: the logits
``param_dtype(params)``, ``abstract_params(cfg, dtype)``                        the parameters' dtype; their
                                                                                shapes, for lowering
``abstract_visual(cfg, n_tokens, dtype)``                                       ``encode_images``' shapes for
                                                                                ``n_tokens`` image tokens
==============================================================================  ==================================

A third family is one folder with these functions in its ``model`` module (beside its config, parameters,
checkpoint reader, vision tower, decoder, positions and image processor), one line in
:data:`tokdyn.models.families.FAMILIES`, and nothing else: :func:`check` is what ``tests/test_families.py``
runs on every registered family.
"""

from __future__ import annotations

from types import ModuleType

LOOP = (
    "check_inputs",
    "rope_index",
    "encode_images",
    "image_features",
    "embed_prompt",
    "embed_tokens",
    "new_cache",
    "decode_cached",
    "final_norm",
    "output_head",
    "param_dtype",
    "abstract_params",
    "abstract_visual",
)
"""The functions of a family's ``model`` module the generation loop runs over."""


def check(fam: ModuleType) -> None:
    """TypeError naming each function of :data:`LOOP` the family package ``fam`` lacks in its ``model``
    module."""
    model = getattr(fam, "model", None)
    missing = [name for name in LOOP if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(
            f"{getattr(fam, '__name__', fam)}.model lacks {missing}: a family provides {list(LOOP)} to the "
            "generation loop (tokdyn.models.vlm.family)"
        )


__all__ = ["LOOP", "check"]
