"""The checkpoint families tokdyn reads (Hugging Face checkpoint directories), listed once.

A family is one package under :mod:`tokdyn.models` that holds one architecture: its configuration (read from
``config.json``), the parameter tree and the checkpoint's names, the vision tower and the decoder, the image
processor, the ``apply`` adapter the teacher-forced diagnostics run on (:mod:`tokdyn.models.protocol`), the
read-outs its forward pass does not hand back, and the few functions the one generation loop runs over (its
``model`` module, :data:`tokdyn.models.vlm.family.LOOP`). Generation, latent mode, the interventions, the
decoding settings and the chat template are written once for every family in :mod:`tokdyn.models.vlm`. Every
family package exposes the same names, so the studies, the analyses and the benchmarks take a family, never a
class of one. These are all that :mod:`tokdyn.models.vlm`, :mod:`tokdyn.diagnostics` and the ``vlm-diagnostics``
study reach through a family (``tests/test_families.py`` checks every registered family for each):

===========================  ==================================================================================
``load(directory, ...)``     the checkpoint as a ``Model`` (``dtype=``, ``unknown="error"|"ignore"`` for
                             tensors that map to no parameter); every file checked before a weight is read
``Model``                    its type: ``config``, ``params``, ``model(...)`` (logits), ``generate(...)``;
                             ``Model(config, params)`` a model of a parameter tree
``Config``                   the configuration's type, with ``vision`` (``patch_size``,
                             ``spatial_merge_size``, ``patch_dim``), ``text`` (``hidden_size``,
                             ``vocab_size``, ``num_hidden_layers``), ``image_token_id``,
                             ``video_token_id``, ``vision_start_token_id``, ``vision_end_token_id``,
                             ``eos_token_id``
``config``                   ``read(dir)``: the ``Config`` of ``config.json``, every field checked;
                             ``sizes(config)``: the sizes the study's time and memory estimates read, a dict of
                             ``layers``, ``heads``, ``kv``, ``width``, ``ffn``, ``vocab``, ``v_depth``,
                             ``v_width``, ``v_ffn``
``checkpoint``               ``inspect(dir, config, unknown)``: every tensor's header, shape and dtype
                             checked, no weight read; ``files(dir)``: the safetensors file of each tensor
``model``                    the loop's functions (``check_inputs``, ``rope_index``, ``encode_images``,
                             ``image_features``,
                             ``embed_prompt``, ``embed_tokens``, ``new_cache``, ``decode_cached``,
                             ``final_norm``, ``output_head``, ``param_dtype``, ``abstract_params``,
                             ``abstract_visual``: :data:`tokdyn.models.vlm.family.LOOP`)
``ImageProcessor``           the image processor, a dataclass: ``ImageProcessor()`` its defaults,
                             ``read(dir)`` a checkpoint's; ``patch_size``, ``merge_size``, ``min_pixels``,
                             ``max_pixels``, ``target_size``, ``check_model``; called on images:
                             ``pixel_values`` (patches, ``patch_dim``), ``image_grid_thw`` (images, 3: frames,
                             rows and columns of patches)
``processor``                ``load_image(path)``, ``as_rgb(image)``, ``resize(image, h, w)``: images read,
                             converted and resized as the checkpoint's processor does
``vision``                   ``plan(config.vision, grid)``: the host-side plan of an image grid (a pytree of
                             arrays) that the vision tower and ``probes`` take
``adapter``                  the ``apply`` protocol's adapter (:mod:`tokdyn.models.protocol`): ``Layout`` (a
                             frozen dataclass with the fields ``image``, ``latents``, ``markers``, ``answer``,
                             ``length``, built by name), ``prompt``, ``layout(config, ids, start, end)``,
                             ``make_batch(config, ids, pixels, grid, mask)`` (a dict of ``input_ids``,
                             ``attention_mask``, ``positions`` (B, 3, T), ``pixel_values`` (B, patches,
                             ``patch_dim``)), ``make_apply(config, grid, layout)``, ``image_features(config,
                             params, batch, grid)``, ``noised_pixels(key, pixels, processor, kind, level)``,
                             ``NOISES``
``probes``                   read-outs of the vision tower: ``vision_taps(config, params, pixels, plan,
                             raster)`` (``{"patches", "merged"}``, each in raster order), ``raster_order(config,
                             grid)``
===========================  ==================================================================================

Every other name (a configuration's own fields, the parameter tree's keys, the checkpoint's tensor names, the
order of a ``Layout``'s fields) is the family's own: the tests hold the layer, the analyses and the study to
this table by running them on a family of their own design that shares no other name with Qwen2.5-VL
(``tests/standin_vl``).

A new family (a third, after Qwen2.5-VL and Qwen3-VL) is a new package beside :mod:`tokdyn.models.qwen2_5_vl`
exposing those names, plus one line in :data:`FAMILIES` mapping the ``model_type`` of its ``config.json`` to the
package. The blocks families share (attention, norms, rotary positions, the gated MLP) are
:mod:`tokdyn.models.blocks`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

FAMILIES = {"qwen2_5_vl": "tokdyn.models.qwen2_5_vl", "qwen3_vl": "tokdyn.models.qwen3_vl"}
"""The families, by the ``model_type`` of a checkpoint's ``config.json``: the package that reads it."""


def family_of(obj) -> ModuleType:
    """The family package (:data:`~tokdyn.models.families.FAMILIES`) whose modules define the type of ``obj`` (a configuration, an
    image processor, a model): a TypeError naming the families when none does."""
    where = type(obj).__module__
    for package in FAMILIES.values():
        if where == package or where.startswith(package + "."):
            return importlib.import_module(package)
    raise TypeError(
        f"expected a configuration, image processor or model of a checkpoint family ({', '.join(sorted(FAMILIES))}: "
        f"tokdyn.models.families.FAMILIES), got {type(obj).__name__} from {where}"
    )


def family(name: str) -> ModuleType:
    """The package of the family ``name`` (a key of :data:`FAMILIES`); a ValueError naming the families
    otherwise."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"model family {name!r} is not one tokdyn reads; the families are {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def detect(directory: str | Path) -> str:
    """The family of the checkpoint in ``directory``: the ``model_type`` of its ``config.json``.

    A FileNotFoundError when the file is missing, a ValueError naming the file when it is not a JSON object or
    its ``model_type`` is not a family tokdyn reads (the families listed)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (a Hugging Face checkpoint directory holds one)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ValueError(
            f"{path}: model_type {model_type!r} is not a family tokdyn reads; the families are {sorted(FAMILIES)}"
        )
    return model_type


def load(directory: str | Path, **options):
    """The checkpoint in ``directory`` loaded by its family (:func:`detect`): ``family(...).load(directory,
    **options)``."""
    return family(detect(directory)).load(directory, **options)
