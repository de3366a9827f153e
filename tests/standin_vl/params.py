"""The stand-in's parameter tree and its checkpoint's tensor names (its own, not Hugging Face's).

The tree::

    {"tower": {"patches": {"w": (patch_dim, width), "b": (width,), "pos": (2, width)},
               "merge": {"w": (merge**2 * width, hidden), "b": (hidden,)}},
     "lm": {"tok_emb": (vocab, hidden),
            "blocks": {"ln_attn", "q", "k", "v", "o", "ln_ffn", "up", "gate", "down"}  # stacked over depth
            "ln_out": (hidden,), "unembed": (hidden, vocab)}}

The checkpoint stores each block's tensors under ``decoder.<i>.<name>`` and the rest under ``tower.*`` and
``lm.*``, every matrix as (in, out).
"""

from __future__ import annotations

import numpy as np

from tokdyn.models.blocks import weights

BLOCK = ("ln_attn", "q", "k", "v", "o", "ln_ffn", "up", "gate", "down")
NORMS = ("ln_attn", "ln_ffn", "ln_out")


def block_shapes(cfg) -> dict:
    """Each block tensor's shape."""
    d, hd = cfg.text.width, cfg.text.head_width
    return {
        "ln_attn": (d,),
        "q": (d, cfg.text.heads * hd),
        "k": (d, cfg.text.kv_heads * hd),
        "v": (d, cfg.text.kv_heads * hd),
        "o": (cfg.text.heads * hd, d),
        "ln_ffn": (d,),
        "up": (d, cfg.text.ffn),
        "gate": (d, cfg.text.ffn),
        "down": (cfg.text.ffn, d),
    }


def layout(cfg) -> list:
    """Every parameter as a :class:`tokdyn.models.blocks.weights.Entry`: its tensor's name, its path in the
    (unstacked) tree and its shape."""
    v, d = cfg.vision, cfg.text
    E = weights.Entry
    out = [
        E("tower.patches.w", ("tower", "patches", "w"), (v.patch_dim, v.width)),
        E("tower.patches.b", ("tower", "patches", "b"), (v.width,)),
        E("tower.patches.pos", ("tower", "patches", "pos"), (2, v.width)),
        E("tower.merge.w", ("tower", "merge", "w"), (v.merge**2 * v.width, d.width)),
        E("tower.merge.b", ("tower", "merge", "b"), (d.width,)),
        E("lm.tok_emb", ("lm", "tok_emb"), (d.vocab, d.width)),
        E("lm.ln_out", ("lm", "ln_out"), (d.width,)),
        E("lm.unembed", ("lm", "unembed"), (d.width, d.vocab)),
    ]
    for i in range(d.depth):
        out += [E(f"decoder.{i}.{n}", ("lm", "blocks", i, n), s) for n, s in block_shapes(cfg).items()]
    return out


def stack_blocks(tree: dict, place=None) -> dict:
    """``tree`` with its list of blocks stacked on a leading axis."""
    lm = dict(tree["lm"], blocks=weights.stack(tree["lm"]["blocks"], place))
    return dict(tree, lm=lm)


def random(cfg, seed: int = 0, scale: float = 0.9) -> dict:
    """A stacked NumPy float32 parameter tree of ``cfg`` drawn from NumPy's generator seeded ``seed``:
    matrices normal of standard deviation ``scale / sqrt(fan-in)``, norms near one, vectors small."""
    rng = np.random.default_rng(seed)
    tree: dict = {}
    for e in layout(cfg):
        if e.path[-1] in NORMS:
            value = 1.0 + 0.1 * rng.standard_normal(e.shape)
        elif len(e.shape) == 2:
            value = scale * rng.standard_normal(e.shape) / np.sqrt(e.shape[0])
        else:
            value = 0.1 * rng.standard_normal(e.shape)
        weights.insert(tree, e.path, value.astype(np.float32))
    return stack_blocks(tree)


def flat(cfg, tree: dict) -> dict:
    """The checkpoint's tensors (name -> NumPy array) of a stacked parameter tree."""
    out = {}
    for e in layout(cfg):
        if e.path[:2] == ("lm", "blocks"):
            node = tree["lm"]["blocks"][e.path[3]][e.path[2]]
        else:
            node = tree
            for key in e.path:
                node = node[key]
        out[e.name] = np.ascontiguousarray(np.asarray(node, np.float32))
    return out
