"""Token dynamics of Qwen2.5-VL's perception tokens: the vision tower's patch features (before and after the
merger of 2x2 patches) of rendered sprite scenes, or of one's own images, as the points of every built-in
rule and of k-means; ARI against the scenes' object masks, collapse, token usage.

    python examples/perception_tokens.py                      # the tiny random test checkpoint
    python examples/perception_tokens.py --model DIR          # a local Qwen2.5-VL checkpoint directory
    python examples/perception_tokens.py --model DIR --images a.png b.jpg   # one's own images (no masks)

Without ``--model`` the checkpoint is ``tests/fixtures/qwen2_5_vl_tiny``, whose weights are random: its
numbers are printed under a line that says so, and are never a finding. Nothing is downloaded.
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from tokdyn.data import scenes
from tokdyn.diagnostics import perception
from tokdyn.models import qwen2_5_vl

TINY = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen2_5_vl_tiny"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: the tiny random one)")
    ap.add_argument("--images", nargs="*", type=Path, default=None, help="image files (default: sprite scenes)")
    ap.add_argument("--scenes", type=int, default=8, help="rendered scenes when no --images are given")
    ap.add_argument("--scene-size", type=int, default=64, help="side of a rendered scene in pixels")
    ap.add_argument("--size", type=int, nargs=2, default=(224, 224), help="height width every image is resized to")
    ap.add_argument("--tokens", type=int, default=5, help="tokens per rule (and k-means' centres)")
    ap.add_argument("--ratio", type=float, default=0.5, help="temperature / the image's collapse threshold")
    ap.add_argument("--dtype", default="float32", help="float32 or bfloat16 weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the per-image scores as JSON here")
    args = ap.parse_args(argv)

    directory = args.model or TINY
    model = qwen2_5_vl.load(directory, dtype=args.dtype)
    processor = qwen2_5_vl.ImageProcessor.read(directory)
    pixels = args.size[0] * args.size[1]
    processor = qwen2_5_vl.ImageProcessor(
        **{
            **processor.__dict__,
            "min_pixels": min(processor.min_pixels, pixels),
            "max_pixels": max(processor.max_pixels, pixels),
        }
    )
    key = jax.random.key(args.seed)
    if args.images:
        from PIL import Image

        images, masks = [Image.open(p) for p in args.images], None
    else:
        s = scenes.sprite_scenes(jax.random.fold_in(key, 1), args.scenes, size=args.scene_size, scale=(0.25, 0.45))
        images, masks = s.images, s.masks
    cfg = perception.Config(n_tokens=args.tokens, temperature_ratio=args.ratio)
    result = perception.perception_dynamics(
        model, jax.random.fold_in(key, 2), images, masks, cfg=cfg, processor=processor, size=tuple(args.size)
    )
    print(f"model {directory}; grids {result['grid']}; {len(result['segments']['merged'])} images")
    print(perception.table(result, random_model=args.model is None))
    if args.out:
        rows = {
            level: {s: np.asarray(result[level][s]).tolist() for s in perception.SCORES} for level in perception.LEVELS
        }
        args.out.write_text(json.dumps(dict(model=str(directory), names=result["names"], scores=rows), indent=1))


if __name__ == "__main__":
    main()
