"""Scores of labelings as pure JAX functions: ARI, NMI, SSE, cluster usage and collapse, segmentation.

Every function is a jitted kernel of one example, jittable and vmappable, on fixed-shape inputs
with an optional boolean ``mask`` (for scenes and clips: the background id 0) that marks the valid
entries; invalid entries are ignored entirely (they may hold any label, ``-1`` included), so
labelings of different lengths can share one padded shape in a vmap.

- :mod:`~tokdyn.metrics.partition`: agreement of two partitions, :func:`ari` and :func:`nmi` (equal
  to scikit-learn's), :func:`contingency`.
- :mod:`~tokdyn.metrics.segmentation`: of a segmentation with instance masks, :func:`fg_ari`
  (foreground ARI) and :func:`matched_iou` (mean IoU of matched segments; :func:`matched_iou_host`).
- :mod:`~tokdyn.metrics.pairs`: the sufficient statistics of two labelings that ARI and NMI are
  computed from (the contingency-table and the sorting paths).
- :mod:`~tokdyn.metrics.collapse`: :func:`sse`, :func:`cluster_sizes`, :func:`n_used`, :func:`collapsed`.
- :mod:`~tokdyn.metrics.video`: clips whose ids are track identities, :func:`video_fg_ari`,
  :func:`frame_fg_ari`, :func:`track_labels`, :func:`track_switches`, :func:`identity_persistence`.

Arguments are checked before anything is traced: shapes, dtypes and static bounds always, and,
for host data, that every valid label lies in range (a ``ValueError`` naming the argument). Labels
held in JAX arrays are not inspected; a valid label outside the given bounds makes the result a
value that cannot be mistaken for one: NaN for the float scores, ``-1`` for the counts (every
entry of :func:`contingency` and :func:`cluster_sizes`; -2 in :func:`track_labels`, where -1 means
"not visible") and True for :func:`collapsed` (a bool). ``-1`` means "no label" wherever the
package produces it (a padded point; from :func:`tokdyn.dynamics.hard_labels`, a point whose
distances are not finite): masked out it is ignored, masked in it is such an out-of-range label,
also for :func:`ari`, :func:`nmi` and :func:`fg_ari` without bounds (the sort path, which takes
any integer >= 0 as a label): NaN in, NaN out, so a run that blew up never scores as a plausible
number. Each function's docstring gives its edge cases.

Eager calls on host arrays (NumPy, Python lists) of many lengths compile a few programs, not one a
length: :func:`ari`, :func:`nmi`, :func:`fg_ari` and :func:`video_fg_ari` compute the same numbers
in float64 NumPy (no compile), and :func:`contingency`, :func:`sse`, :func:`cluster_sizes`,
:func:`n_used` and :func:`collapsed` pad the point axis to a power of two from 32, the padding
masked out (:func:`tokdyn.checks.bucket_size`: one program a bucket, results as unpadded). JAX
arrays and calls inside a transformation run the kernels as they are (:ref:`metrics-host-calls`).
"""

from tokdyn.metrics.collapse import cluster_sizes, collapsed, n_used, sse
from tokdyn.metrics.partition import ari, contingency, nmi
from tokdyn.metrics.segmentation import fg_ari, matched_iou, matched_iou_host
from tokdyn.metrics.video import frame_fg_ari, identity_persistence, track_labels, track_switches, video_fg_ari

__all__ = [
    "ari",
    "nmi",
    "contingency",
    "sse",
    "cluster_sizes",
    "n_used",
    "collapsed",
    "fg_ari",
    "matched_iou",
    "matched_iou_host",
    "video_fg_ari",
    "frame_fg_ari",
    "track_labels",
    "track_switches",
    "identity_persistence",
]
