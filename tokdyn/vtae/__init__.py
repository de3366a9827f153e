"""Visual-token autoencoders: text tokens <-> colour grids, trained by the thousand in one call.

- :mod:`~tokdyn.vtae.encoders`    token -> grid quantisers (categorical, Gumbel soft / straight-through,
  sigmoid, VQ with EMA and dead-code reset, FSQ) and the temperature schedule
- :mod:`~tokdyn.vtae.decoders`    grid -> token logits (MLP, small CNN)
- :mod:`~tokdyn.vtae.losses`      cross-entropy, sensitivity KL + hinge, batch entropy, semantic alignment
- :mod:`~tokdyn.vtae.model`       static :class:`Config`, traced :class:`Hparams`, init / encode / decode
- :mod:`~tokdyn.vtae.training`    ``train`` / ``train_many`` (lax.scan + optax, vmapped), NaN reports
- :mod:`~tokdyn.vtae.diagnostics` accuracy, collapse, entropy, grid uniqueness, Hamming, sensitivity,
  codebook usage, gradient norms, neighbourhood preservation and trustworthiness
- :mod:`~tokdyn.vtae.corpus`      token corpora (Zipf, grammar, text files) and PPMI/SVD embeddings
"""

from tokdyn.vtae import corpus, decoders, diagnostics, encoders, losses, model, training  # noqa: F401
from tokdyn.vtae.model import Config, Hparams, decode, encode, init  # noqa: F401
from tokdyn.vtae.training import TrainResult, nan_report, train, train_many  # noqa: F401
