"""Visual-token autoencoders: text tokens <-> colour grids, trained by the thousand in one call.

- :mod:`~tokdyn.models.vtae.encoders`    token -> grid quantisers (categorical, Gumbel soft / straight-through,
  sigmoid, VQ with EMA and dead-code reset, FSQ) and the temperature schedule
- :mod:`~tokdyn.models.vtae.decoders`    grid -> token logits (MLP, small CNN)
- :mod:`~tokdyn.models.vtae.losses`      cross-entropy, sensitivity KL + hinge, batch entropy, semantic alignment
- :mod:`~tokdyn.models.vtae.model`       static :class:`Config`, traced :class:`Hparams`, init / encode / decode
- :mod:`~tokdyn.models.vtae.training`    the model's ``trainer`` for :mod:`tokdyn.train` (``train.train_many``
  over seeds x settings), its checked ``inputs``, and ``train`` (one model, jitted)
- :mod:`~tokdyn.models.vtae.diagnostics` accuracy, collapse, entropy, grid uniqueness, Hamming, sensitivity,
  codebook usage, gradient norms, neighbourhood preservation and trustworthiness
- :mod:`~tokdyn.models.vtae.corpus`      token corpora (Zipf, grammar, text files) and PPMI/SVD embeddings
"""

from tokdyn.models.vtae import corpus, decoders, diagnostics, encoders, losses, model, training  # noqa: F401
from tokdyn.models.vtae.model import Config, Hparams, decode, encode, init  # noqa: F401
from tokdyn.models.vtae.training import inputs, train, trainer  # noqa: F401
