"""IODINE (Greff et al., 2019, "Multi-Object Representation Learning with Iterative Variational
Inference"): object discovery by iterative amortised variational inference.

A spatial-broadcast decoder paints each of K slots' latents into RGB means and a mask logit per
pixel (a spatial Gaussian mixture with the fixed scale ``pixel_scale``); every slot's posterior
starts from one learned value and is refined ``iterations`` times by a :class:`Refiner` (a CNN
and an LSTM) from the ELBO and its gradients (:func:`evaluate`). It has the shape of
:mod:`tokdyn.models.slots` (``Config``, ``Hparams``, :func:`init`, :func:`apply`,
:func:`loss_fn`, :func:`trainer`, :func:`models`, :func:`stamp`, :func:`default_strategy`,
:func:`segment`, :func:`collapse`), so it trains through :mod:`tokdyn.train` and a study scores
either the same way.

The generative model, the refinement inputs (and those of the paper left out, with the reasons)
and the loss: :ref:`scenes-iodine`.

One concept a module, every name re-exported here: :mod:`~tokdyn.models.iodine.config` (``Config``,
``Hparams``), :mod:`~tokdyn.models.iodine.elbo` (the decoder and the ELBO),
:mod:`~tokdyn.models.iodine.model` (the refiner, inference, the loss), :mod:`~tokdyn.models.iodine.training`
(the trainer, seeds, segmentation).
"""

from tokdyn.models.iodine.config import (  # noqa: F401
    DECODERS,
    LOG_2PI,
    Config,
    Hparams,
)
from tokdyn.models.iodine.elbo import (  # noqa: F401
    Decoder,
    Evaluation,
    mixture_log_likelihood,
    kl_divergence,
    decode,
    evaluate,
)
from tokdyn.models.iodine.model import (  # noqa: F401
    Refiner,
    Outputs,
    posterior_noise,
    init,
    lstm_carry,
    infer,
    apply,
    check_apply,
    iteration_weights,
    loss_fn,
    collapse,
)
from tokdyn.models.iodine.training import (  # noqa: F401
    seed_keys,
    models,
    stamp,
    default_strategy,
    trainer,
    params_of,
    segment,
)
