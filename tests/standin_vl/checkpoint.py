"""The stand-in's weights on disk: ``model.safetensors`` with the tensor names of
:func:`standin_vl.params.layout`, read through :mod:`tokdyn.models.blocks.weights` (headers first, every shape
checked, an unknown tensor refused by name)."""

from __future__ import annotations

import json
from pathlib import Path

from standin_vl import config as config_lib
from standin_vl import params as params_lib
from tokdyn.models.blocks import weights


def files(directory) -> dict:
    """The safetensors file of each tensor of ``directory``."""
    return {name: t.file for name, t in weights.tensors(directory).items()}


def inspect(directory, cfg, unknown: str = "error") -> weights.Plan:
    """Every tensor's header, shape and dtype checked against ``cfg``, no weight read."""
    return weights.match(directory, params_lib.layout(cfg), family="the stand-in", dtype=cfg.weights, unknown=unknown)


def load_params(directory, cfg, dtype=None, mesh=None, unknown: str = "error") -> dict:
    """The stacked parameter tree of ``directory``."""
    plan = inspect(directory, cfg, unknown)
    tree = weights.read(plan, dtype, mesh, later=lambda path: path[:2] == ("lm", "blocks"))
    return params_lib.stack_blocks(tree, weights.placer(mesh))


def write(directory, cfg, tree: dict, *, like=None) -> Path:
    """A complete checkpoint directory of ``cfg`` and the parameter tree ``tree``: ``config.json``,
    ``model.safetensors`` and, from the checkpoint directory ``like``, its tokenizer, chat template,
    ``tokenizer_config.json`` and ``generation_config.json`` (the preprocessor's settings are the stand-in's:
    patches of one frame, cut as its tower reads them)."""
    from safetensors.numpy import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config_lib.to_json(cfg), indent=1))
    save_file(params_lib.flat(cfg, tree), str(d / "model.safetensors"))
    if like is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
            if (Path(like) / name).is_file():
                (d / name).write_bytes((Path(like) / name).read_bytes())
    factor = cfg.vision.patch * cfg.vision.merge
    (d / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "patch_size": cfg.vision.patch,
                "merge_size": cfg.vision.merge,
                "temporal_patch_size": 1,
                "size": {"shortest_edge": factor * factor, "longest_edge": 64 * factor * factor},
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.25, 0.25, 0.25],
            }
        )
    )
    return d


__all__ = ["files", "inspect", "load_params", "write"]
