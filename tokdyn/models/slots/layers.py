"""The layers of the Slot Attention autoencoder: :class:`SlotAttention` (Locatello et al., 2020),
the spatial-broadcast decoder (:func:`broadcast_decoder`), the farthest-point slot initialisation
(:func:`farthest_points`) and the position grid."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokdyn.models.slots.config import EPS


def farthest_points(points, k: int):
    """(B, k) int32 indices of ``k`` of the B x N ``points`` (B, N, D), chosen greedily: each the
    point farthest (squared Euclidean) from the mean of the points and every point chosen before
    (the mean stands for the bulk of the inputs, and is not itself chosen). Ties go to the lowest
    index. No gradient flows through the choice."""
    points = jax.lax.stop_gradient(points)
    dist = jnp.sum((points - jnp.mean(points, axis=1, keepdims=True)) ** 2, axis=-1)  # (B, N)
    chosen = []
    for _ in range(k):
        i = jnp.argmax(dist, axis=1)
        chosen.append(i)
        point = jnp.take_along_axis(points, i[:, None, None], axis=1)  # (B, 1, D)
        dist = jnp.minimum(dist, jnp.sum((points - point) ** 2, axis=-1))
    return jnp.stack(chosen, axis=1).astype(jnp.int32)


def position_grid(height: int, width: int):
    """(H, W, 4) the paper's position channels ``(y, x, 1 - y, 1 - x)``, y and x in [0, 1]."""
    y, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, height), jnp.linspace(0.0, 1.0, width), indexing="ij")
    return jnp.stack([y, x, 1.0 - y, 1.0 - x], axis=-1)


def broadcast_decoder(latents, *, size: int, channels: int, decoder: str, hidden: int, stride: int = 1):
    """A spatial-broadcast decoder (Watters et al., 2019): each of the (B, K, D) ``latents`` painted
    on a ``size`` x ``size`` grid, (B, K, size, size, ``channels``) outputs (no nonlinearity on
    them).

    ``decoder``: ``"mlp"`` (each pixel from ``Dense(latent) + Dense(position)`` through a ReLU MLP
    of two hidden layers of width ``hidden``: no convolution), ``"conv"`` (the same broadcast, then
    two 3 x 3 convolutions of ``hidden`` channels) or ``"cnn"`` (the latent plus a position
    embedding broadcast on an 8 x 8 grid, 5 x 5 transposed convolutions of stride 2 up to ``size``,
    a 5 x 5 and a 3 x 3 convolution). ``stride`` > 1 (mlp and conv): painted on a (size / stride)^2
    grid, resized bilinearly to ``size``. Positions are :func:`position_grid`.

    Call it inside a flax module's ``nn.compact`` method: its layers (``dec_slot``, ``dec_pos``,
    ``dec_hidden0`` ...) are that module's own, by those names. Arguments are checked by
    :func:`~tokdyn.models.slots.check_decoder`, which a ``Config.validate`` runs.

    Args:
      latents: (B, K, D) the latents to paint (traced).
      size: the output's side H = W (static).
      channels: C, the output channels per pixel (static).
      decoder: ``"mlp"``, ``"conv"`` or ``"cnn"`` (static).
      hidden: the width of the hidden layers or channels (static).
      stride: the painting grid's stride for mlp and conv (static; 1: full resolution).

    Returns:
      (B, K, size, size, channels).
    """
    B, K, D = latents.shape
    H = W = size
    F, c = hidden, channels
    g = H // stride
    pos = position_grid(g, g)
    if decoder == "mlp":
        d = nn.Dense(F, name="dec_slot")(latents)[:, :, None, None, :] + nn.Dense(F, name="dec_pos")(pos)
        d = nn.relu(d)  # (B, K, g, g, F)
        d = nn.relu(nn.Dense(F, name="dec_hidden0")(d))
        d = nn.relu(nn.Dense(F, name="dec_hidden1")(d))
        out = nn.Dense(c, name="dec_out")(d)  # (B, K, g, g, c)
    elif decoder == "conv":
        d = nn.Dense(F, name="dec_slot")(latents)[:, :, None, None, :] + nn.Dense(F, name="dec_pos")(pos)
        d = nn.relu(d).reshape(B * K, g, g, F)
        d = nn.relu(nn.Conv(F, (3, 3), padding="SAME", name="dec_conv0")(d))
        d = nn.relu(nn.Conv(F, (3, 3), padding="SAME", name="dec_conv1")(d))
        out = nn.Conv(c, (3, 3), padding="SAME", name="dec_out")(d).reshape(B, K, g, g, c)
    else:
        g = 8
        d = jnp.broadcast_to(latents[:, :, None, None, :], (B, K, g, g, D)).reshape(B * K, g, g, D)
        d = d + nn.Dense(D, name="dec_pos")(position_grid(g, g))
        while g < H:
            d = nn.relu(nn.ConvTranspose(F, (5, 5), strides=(2, 2), padding="SAME", name=f"dec_up{g}")(d))
            g *= 2
        d = nn.relu(nn.Conv(F, (5, 5), padding="SAME", name="dec_conv")(d))
        out = nn.Conv(c, (3, 3), padding="SAME", name="dec_out")(d).reshape(B, K, H, W, c)
    if out.shape[2:4] != (H, W):  # painted at size / stride: bilinear to the image size
        out = jax.image.resize(out, (B, K, H, W, c), method="bilinear")
    return out


class SlotAttention(nn.Module):
    """Slot Attention over ``inputs`` (B, N, C) with slot noise ``z`` (B, K, D) ~ N(0, I).
    Returns ``(slots (B, K, D), attention (B, N, K))``: the last iteration's attention, softmaxed
    over slots (each input's weights sum to 1).

    ``slots`` (B, K, D), optional: the slots to start from instead of the module's own start (the
    Gaussian draw or the farthest inputs; ``z`` is then not used): the slots of the last frame,
    carried by a predictor, in :mod:`tokdyn.models.savi`. The parameters are those of a call
    without it (``init`` without ``slots`` creates them all). The slots the iterations start from
    are sown as ``intermediates["start"]`` (returned by ``apply(..., mutable=["intermediates"])``)."""

    n_slots: int
    iterations: int
    slot_size: int
    mlp_hidden: int
    implicit: bool = False
    slot_init: str = "random"

    @nn.compact
    def __call__(self, inputs, z, slots=None):
        D = self.slot_size
        x = nn.LayerNorm(name="norm_inputs")(inputs)
        k = nn.Dense(D, use_bias=False, name="to_k")(x)  # (B, N, D)
        v = nn.Dense(D, use_bias=False, name="to_v")(x)
        if slots is None and self.slot_init == "farthest":  # z is not used
            chosen = jnp.take_along_axis(x, farthest_points(k, self.n_slots)[:, :, None], axis=1)  # (B, K, C)
            slots = nn.Dense(D, name="init")(chosen)
        elif slots is None:
            mu = self.param("mu", nn.initializers.xavier_uniform(), (1, D))
            log_sigma = self.param("log_sigma", nn.initializers.xavier_uniform(), (1, D))
            slots = mu + jnp.exp(log_sigma) * z  # (B, K, D)
        self.sow("intermediates", "start", slots)  # where the iterations start (kept only when asked for)
        norm_slots, to_q = nn.LayerNorm(name="norm_slots"), nn.Dense(D, use_bias=False, name="to_q")
        gru = nn.GRUCell(D, name="gru")
        norm_mlp = nn.LayerNorm(name="norm_mlp")
        mlp = nn.Sequential([nn.Dense(self.mlp_hidden, name="mlp_in"), nn.relu, nn.Dense(D, name="mlp_out")])

        def iterate(slots):
            q = to_q(norm_slots(slots)) * D**-0.5  # (B, K, D)
            attn = jax.nn.softmax(jnp.einsum("bnd,bkd->bnk", k, q), axis=-1) + EPS  # (B, N, K)
            weights = attn / jnp.sum(attn, axis=1, keepdims=True)  # normalised over the inputs
            updates = jnp.einsum("bnk,bnd->bkd", weights, v)
            slots, _ = gru(slots, updates)
            return slots + mlp(norm_mlp(slots)), attn

        attn = None
        for i in range(self.iterations):
            if self.implicit and i == self.iterations - 1:
                slots = jax.lax.stop_gradient(slots)
            slots, attn = iterate(slots)
        return slots, attn
