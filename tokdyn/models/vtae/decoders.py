"""Decoders grid -> token logits, as ``init(key, ...) -> params`` and ``apply(params, x) -> logits``
pairs of plain functions (vmappable over models). ``x`` is the (B, P, F) decoder input of an
encoder (P = N*N cells, F per-cell features); logits are (B, V).

- ``mlp``: flatten, ``depth`` hidden ReLU layers of width ``hidden``, linear read-out.
- ``cnn``: the grid as an N x N image with F channels; two 3x3 'SAME' convolutions with
  ``channels`` filters and ReLU, flatten, linear read-out. Needs a square grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DECODERS = ("mlp", "cnn")


def _dense(key, n_in, n_out):
    return {"w": jax.random.normal(key, (n_in, n_out)) * jnp.sqrt(2.0 / n_in), "b": jnp.zeros((n_out,))}


def init_mlp(key, *, cells, features, vocab_size, hidden=128, depth=1) -> dict:
    """Parameters of the MLP decoder: ``depth`` ReLU layers of ``hidden`` units over the flattened
    (P * F) input, then a linear read-out to V logits (He-normal weights, zero biases).

    Args:
      key: PRNG key.
      cells: P, the cells of a grid.
      features: F, the per-cell width of the decoder's input.
      vocab_size: V.
      hidden: the hidden layers' width.
      depth: the number of hidden layers.

    Returns:
      ``{"layers": [{"w", "b"}] * depth, "out": {"w": (hidden, V), "b": (V,)}}``.

    Examples:
      >>> import jax
      >>> from tokdyn.models.vtae import decoders
      >>> params = decoders.init_mlp(jax.random.key(0), cells=4, features=3, vocab_size=5, hidden=8)
      >>> params["layers"][0]["w"].shape, params["out"]["w"].shape
      ((12, 8), (8, 5))
    """
    keys = jax.random.split(key, depth + 1)
    sizes = [cells * features] + [hidden] * depth
    layers = [_dense(keys[i], sizes[i], sizes[i + 1]) for i in range(depth)]
    out = _dense(keys[-1], sizes[-1], vocab_size)
    out["w"] = out["w"] * jnp.sqrt(0.5)  # unit-gain read-out (no ReLU after it)
    return {"layers": layers, "out": out}


def apply_mlp(params, x):
    """Logits (B, V) of the MLP decoder on grids ``x`` (B, P, F).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import decoders
      >>> params = decoders.init_mlp(jax.random.key(0), cells=4, features=3, vocab_size=5, hidden=8)
      >>> decoders.apply_mlp(params, jnp.zeros((2, 4, 3))).shape
      (2, 5)
    """
    h = x.reshape(x.shape[0], -1)  # (B, P*F)
    for layer in params["layers"]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h @ params["out"]["w"] + params["out"]["b"]  # (B, V)


def init_cnn(key, *, cells, features, vocab_size, channels=16) -> dict:
    """Parameters of the CNN decoder: two 3 x 3 convolutions with ``channels`` channels over the square
    grid, then a linear read-out to V logits.

    Args:
      key: PRNG key.
      cells: P = N * N, the cells of a square grid.
      features: F, the per-cell width of the decoder's input (the image's channels).
      vocab_size: V.
      channels: the convolutions' channels.

    Returns:
      ``{"conv1": {"w": (3, 3, F, channels), "b"}, "conv2": {...}, "out": {"w": (P * channels, V), "b": (V,)}}``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import decoders
      >>> params = decoders.init_cnn(jax.random.key(0), cells=4, features=3, vocab_size=5, channels=4)
      >>> decoders.apply_cnn(params, jnp.zeros((2, 4, 3))).shape
      (2, 5)
    """
    side = int(round(cells**0.5))
    k1, k2, k3 = jax.random.split(key, 3)
    conv = lambda k, cin, cout: {
        "w": jax.random.normal(k, (3, 3, cin, cout)) * jnp.sqrt(2.0 / (9 * cin)),
        "b": jnp.zeros((cout,)),
    }
    out = _dense(k3, side * side * channels, vocab_size)
    out["w"] = out["w"] * jnp.sqrt(0.5)
    return {"conv1": conv(k1, features, channels), "conv2": conv(k2, channels, channels), "out": out}


def _conv(x, p):
    y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + p["b"])


def apply_cnn(params, x):
    """Logits (B, V) of the CNN decoder on grids ``x`` (B, P, F), P a square number.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import decoders
      >>> params = decoders.init_cnn(jax.random.key(0), cells=4, features=3, vocab_size=5, channels=4)
      >>> decoders.apply_cnn(params, jnp.zeros((2, 4, 3))).shape
      (2, 5)
    """
    B, P, F = x.shape
    side = int(round(P**0.5))
    h = x.reshape(B, side, side, F)  # (B, N, N, F)
    h = _conv(_conv(h, params["conv1"]), params["conv2"])  # (B, N, N, channels)
    return h.reshape(B, -1) @ params["out"]["w"] + params["out"]["b"]  # (B, V)


def init_decoder(key, kind: str, *, cells, features, vocab_size, hidden=128, depth=1, channels=16) -> dict:
    """Parameters of the decoder ``kind``: :func:`init_mlp` or :func:`init_cnn`.

    Args:
      key: PRNG key.
      kind: "mlp" or "cnn" (:data:`DECODERS`).
      cells: P, the cells of a grid.
      features: F, the per-cell width of the decoder's input.
      vocab_size: V.
      hidden: the MLP's hidden width.
      depth: the MLP's number of hidden layers.
      channels: the CNN's channels.

    Returns:
      The parameters, for :func:`apply_decoder`.

    Raises:
      ValueError: another ``kind``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import decoders
      >>> params = decoders.init_decoder(jax.random.key(0), "cnn", cells=4, features=3, vocab_size=5, channels=4)
      >>> decoders.apply_decoder("cnn", params, jnp.zeros((2, 4, 3))).shape
      (2, 5)
    """
    if kind == "mlp":
        return init_mlp(key, cells=cells, features=features, vocab_size=vocab_size, hidden=hidden, depth=depth)
    if kind == "cnn":
        return init_cnn(key, cells=cells, features=features, vocab_size=vocab_size, channels=channels)
    raise ValueError(f"decoder must be one of {list(DECODERS)}, got {kind!r}")


def apply_decoder(kind: str, params, x):
    """(B, V) logits of the decoder input ``x`` (B, P, F).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import decoders
      >>> params = decoders.init_decoder(jax.random.key(0), "mlp", cells=4, features=3, vocab_size=5, hidden=8)
      >>> decoders.apply_decoder("mlp", params, jnp.zeros((2, 4, 3))).shape
      (2, 5)
    """
    return apply_mlp(params, x) if kind == "mlp" else apply_cnn(params, x)
