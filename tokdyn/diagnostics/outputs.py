"""What a model's ``apply`` returns under the diagnostics' protocol: :class:`Outputs` (``logits``,
``hidden``, ``attention``, ``latents``), every field's shape documented. The type is defined with the
protocol's call, :class:`tokdyn.models.protocol.ApplyFn`, in :mod:`tokdyn.models.protocol` (the layer the
models implement it in); this module and ``tokdyn.diagnostics.Outputs`` hand back the same object. The
checks of the protocol are :mod:`tokdyn.diagnostics.protocol`.
"""

from __future__ import annotations

from tokdyn.models.protocol import Outputs

__all__ = ["Outputs"]
