"""Synthetic data: the traced generators of the studies' datasets.

- :mod:`tokdyn.data.clusters`  Gaussian clusters padded to a fixed shape with a mask
  (``gaussian_clusters``; its random part ``cluster_draw``, the rest ``clusters_from_draw``), the
  named point clouds of the collapse study (``point_cloud``, ``SHAPES``) and sequences of moving
  clusters (``moving_clusters``; ``moving_draw``, ``moving_from_draw``)
- :mod:`tokdyn.data.scenes`    multi-object sprite scenes with instance masks (``sprite_scenes``),
  and the draws they share with videos (``row_uniforms``, ``draw_objects``)
- :mod:`tokdyn.data.drawing`   the drawing scenes and videos share (``render``, ``background_image``,
  ``SHAPES``)
- :mod:`tokdyn.data.features`  per-pixel features (``pixel_features``) and labels (``flat_masks``)
- :mod:`tokdyn.data.grid_tasks`  grid tasks that need an imagined transformation of the image (``read``,
  ``rotate``, ``gravity``, ``recolour``, ``path``), with their helper images and captions: the data of the
  latent-reasoning organisms (``generate``, ``splits``, ``question_only_optimum``)
- :mod:`tokdyn.data.videos`    multi-object sprite videos with track identities (``sprite_videos``:
  walls, occlusion, objects entering and leaving the view, optional elastic collisions) and their
  physics (``simulate``)

The public names of all of them but the grid tasks (whose names stay in their module) are available here (and ``tokdyn.data.scenes`` keeps the
drawing's and the features') (``tokdyn.data.gaussian_clusters``,
``tokdyn.data.sprite_scenes``); ``tokdyn.data.SHAPES`` is the point clouds' (the sprite shapes are
``tokdyn.data.scenes.SHAPES``).
"""

from tokdyn.data import clusters, drawing, features, grid_tasks, scenes, videos  # noqa: F401
from tokdyn.data.clusters import (
    CENTER_LAYOUTS,
    FLOAT_DTYPES,
    SHAPES,
    float_dtype,
    ClusterDraw,
    Clusters,
    cluster_draw,  # noqa: F401
    clusters_from_draw,
    gaussian_clusters,
    point_cloud,
    MovingDraw,
    MovingClusters,
    moving_draw,
    moving_from_draw,
    moving_clusters,
)
from tokdyn.data.scenes import (
    BACKGROUNDS,
    Objects,
    Rendered,
    Scenes,
    background_image,
    check_appearance,  # noqa: F401
    check_shapes,
    draw_objects,
    drawing_order,
    flat_masks,
    hsv_to_rgb,
    pixel_features,
    render,
    row_uniforms,
    sprite_scenes,
)
from tokdyn.data.videos import Videos, simulate, sprite_videos  # noqa: F401

__all__ = [
    "clusters",
    "drawing",
    "features",
    "scenes",
    "videos",
    "CENTER_LAYOUTS",
    "FLOAT_DTYPES",
    "float_dtype",
    "SHAPES",
    "ClusterDraw",
    "Clusters",
    "cluster_draw",
    "clusters_from_draw",
    "gaussian_clusters",
    "point_cloud",
    "MovingDraw",
    "MovingClusters",
    "moving_draw",
    "moving_from_draw",
    "moving_clusters",
    "BACKGROUNDS",
    "Scenes",
    "sprite_scenes",
    "pixel_features",
    "flat_masks",
    "Rendered",
    "render",
    "background_image",
    "hsv_to_rgb",
    "drawing_order",
    "check_shapes",
    "check_appearance",
    "row_uniforms",
    "Objects",
    "draw_objects",
    "Videos",
    "sprite_videos",
    "simulate",
]
