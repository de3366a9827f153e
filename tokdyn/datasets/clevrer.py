"""CLEVRER (Yi et al. 2020): the videos (MP4, decoded with PyAV) and their annotations and
questions (JSON).

The dataset is published at :data:`PUBLISHED`: ``video_{train,validation,test}.zip`` (MP4 files
``video_NNNNN.mp4``, 128 frames of 480 x 320 each), ``annotation_{train,validation}.zip``
(``annotation_NNNNN.json``) and the questions ``{train,validation,test}.json``. Unpack them into
one directory, in any subfolders (the archives' own ``video_00000-01000/`` folders are fine):
:func:`index` finds every ``video_NNNNN.mp4`` and ``annotation_NNNNN.json`` under it by name.

An annotation holds the objects (``object_property``: ``object_id``, ``color``, ``material``,
``shape``), their per-frame states (``motion_trajectory``: for every ``frame_id``, each object's
``location``, ``velocity`` and whether it is ``inside_camera_view``) and the collisions
(``collision``: ``object_ids``, ``frame_id``, ``location``). :func:`annotation_arrays` turns one
into fixed-shape arrays (objects padded to ``max_objects`` with a ``present`` mask, object ids as
slots). The questions (:func:`read_questions`) are descriptive (with an ``answer``) or
explanatory, predictive and counterfactual (multiple choice: ``choices`` each ``correct`` or
``wrong``). PyAV is part of the ``video`` extra (``pip install 'tokdyn[video]'``).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from tokdyn.datasets.clevr import ATTRIBUTES as CLEVR_ATTRIBUTES
from tokdyn.datasets.tfrecord import require

PUBLISHED = "http://clevrer.csail.mit.edu/"
ATTRIBUTES = {k: CLEVR_ATTRIBUTES[k] for k in ("color", "material", "shape")}
QUESTION_TYPES = ("descriptive", "explanatory", "predictive", "counterfactual")
MAX_OBJECTS = 10  # slots of annotation_arrays by default (an object_id beyond is an error naming max_objects)
_VIDEO = re.compile(r"^video_(\d+)\.mp4$")
_ANNOTATION = re.compile(r"^annotation_(\d+)\.json$")


def layout() -> str:
    """The expected layout of a CLEVRER directory and where CLEVRER is published."""
    return (
        "a directory holding CLEVRER's videos video_NNNNN.mp4 and annotations annotation_NNNNN.json (in any "
        "subfolders, as unpacked from video_train.zip, annotation_train.zip, ...) and the questions "
        f"train.json / validation.json / test.json; published at {PUBLISHED}"
    )


def index(directory) -> dict:
    """``{"videos": {n: path}, "annotations": {n: path}}``: every ``video_NNNNN.mp4`` and
    ``annotation_NNNNN.json`` under ``directory``, by their number.

    Raises:
      FileNotFoundError: ``directory`` does not exist or holds no video, naming the layout.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"CLEVRER directory {directory!r} does not exist: expected {layout()}")
    out = {"videos": {}, "annotations": {}}
    for base, _, files in os.walk(directory):
        for name in files:
            for key, pattern in (("videos", _VIDEO), ("annotations", _ANNOTATION)):
                m = pattern.match(name)
                if m:
                    out[key][int(m.group(1))] = os.path.join(base, name)
    if not out["videos"]:
        raise FileNotFoundError(f"CLEVRER directory {directory!r} holds no video_NNNNN.mp4: expected {layout()}")
    return out


def read_video(path, max_frames: int | None = None) -> np.ndarray:
    """The frames of an MP4 as ``(F, H, W, 3)`` uint8 RGB (the first ``max_frames``, or all).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file does not decode (naming it, and the frame it failed at), holds no
        frame, or fewer frames than its container declares (a truncated file).
    """
    av = require("av", "av (PyAV)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: expected {layout()}")
    frames = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: the video does not decode: the file holds no video stream")
            declared = container.streams.video[0].frames  # 0 where the container does not say
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: the video does not decode (after {len(frames)} frames): {e}") from e
    if not frames:
        raise ValueError(f"{path}: the video does not decode: no frame")
    if declared and len(frames) < declared and (max_frames is None or len(frames) < max_frames):
        raise ValueError(f"{path}: the video does not decode: {len(frames)} of its {declared} frames (truncated?)")
    return np.stack(frames)


def read_annotation(path) -> dict:
    """A CLEVRER annotation, checked: its keys, the objects' attributes (one of :data:`ATTRIBUTES`'
    values each), the trajectory's frames and the collisions' objects (known ids)."""
    path = os.fspath(path)
    with open(path) as f:
        try:
            ann = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON: {e}") from e
    for key in ("object_property", "motion_trajectory", "collision"):
        if key not in ann:
            raise ValueError(
                f"{path} has no {key!r} (a CLEVRER annotation holds object_property, motion_trajectory, collision)"
            )
    ids = set()
    for j, obj in enumerate(ann["object_property"]):
        for name, values in ATTRIBUTES.items():
            if obj.get(name) not in values:
                raise ValueError(f"{path}: object {j}: {name} must be one of {values}, got {obj.get(name)!r}")
        ids.add(obj.get("object_id"))
    for c in ann["collision"]:
        if any(i not in ids for i in c.get("object_ids", ())) or "frame_id" not in c:
            raise ValueError(f"{path}: collision {c!r} must name a frame_id and known object_ids {sorted(ids)}")
    return ann


def annotation_arrays(ann: dict, max_objects: int = MAX_OBJECTS) -> dict:
    """One annotation as fixed-shape arrays, objects in slots by ``object_id`` (M = ``max_objects``).

    Returns:
      ``present`` ``(M,)`` bool; ``color`` / ``material`` / ``shape`` ``(M,)`` int32 indices into
      :data:`ATTRIBUTES` (-1 where absent); ``location`` / ``velocity`` ``(F, M, 3)`` float32 (0
      where an object has no state in a frame); ``in_view`` ``(F, M)`` bool (the object's
      ``inside_camera_view``); ``frame`` ``(F,)`` int32 the trajectory's frame ids; ``collisions``
      ``(C, 3)`` int32 rows ``(frame_id, object a, object b)``.

    Raises:
      ValueError: an ``object_id`` outside ``[0, max_objects)``.
    """
    M = max_objects
    out = {"present": np.zeros(M, bool)}
    for name in ATTRIBUTES:
        out[name] = np.full(M, -1, np.int32)
    for obj in ann["object_property"]:
        i = obj["object_id"]
        if not 0 <= i < M:
            raise ValueError(f"object_id {i} is outside [0, max_objects={M}): raise max_objects")
        out["present"][i] = True
        for name, values in ATTRIBUTES.items():
            out[name][i] = values.index(obj[name])
    F = len(ann["motion_trajectory"])
    out["frame"] = np.asarray([t["frame_id"] for t in ann["motion_trajectory"]], np.int32)
    for key in ("location", "velocity"):
        out[key] = np.zeros((F, M, 3), np.float32)
    out["in_view"] = np.zeros((F, M), bool)
    for f, t in enumerate(ann["motion_trajectory"]):
        for o in t["objects"]:
            i = o["object_id"]
            if not 0 <= i < M:
                raise ValueError(f"object_id {i} in frame {t['frame_id']} is outside [0, max_objects={M})")
            out["location"][f, i] = o.get("location", (0, 0, 0))
            out["velocity"][f, i] = o.get("velocity", (0, 0, 0))
            out["in_view"][f, i] = bool(o.get("inside_camera_view", False))
    out["collisions"] = np.asarray(
        [(c["frame_id"], *sorted(c["object_ids"])) for c in ann["collision"]], np.int32
    ).reshape(-1, 3)
    return out


def read_questions(path) -> list:
    """The questions file (``train.json``, ``validation.json``, ``test.json``): a list, per video,
    of ``{"scene_index", "video_filename", "questions"}``, each question checked: its
    ``question_type`` one of :data:`QUESTION_TYPES`, a descriptive one with an ``answer`` (but in
    the test file), the others with ``choices`` (each ``correct`` or ``wrong`` where answered)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: expected {layout()}")
    with open(path) as f:
        try:
            videos = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON: {e}") from e
    for v, video in enumerate(videos):
        for q in video.get("questions", ()):
            where = f"{path}: video {video.get('scene_index', v)}, question {q.get('question_id')}"
            kind = q.get("question_type")
            if kind not in QUESTION_TYPES:
                raise ValueError(f"{where}: question_type must be one of {QUESTION_TYPES}, got {kind!r}")
            if kind != "descriptive":
                choices = q.get("choices")
                if not choices:
                    raise ValueError(f"{where}: a {kind} question needs its choices")
                for c in choices:
                    if c.get("answer", "correct") not in ("correct", "wrong"):
                        raise ValueError(
                            f"{where}: a choice's answer must be 'correct' or 'wrong', got {c['answer']!r}"
                        )
    return videos


def load(directory, number: int, *, max_frames: int | None = None, max_objects: int = MAX_OBJECTS) -> dict:
    """Video ``number`` of a CLEVRER directory with its annotation: ``video`` ``(F, H, W, 3)``
    uint8 and every array of :func:`annotation_arrays` (the annotation's frames cut to the video's
    when ``max_frames`` is given)."""
    found = index(directory)
    if number not in found["videos"]:
        raise FileNotFoundError(f"{directory}: no video_{number:05d}.mp4: expected {layout()}")
    if number not in found["annotations"]:
        raise FileNotFoundError(f"{directory}: no annotation_{number:05d}.json: expected {layout()}")
    video = read_video(found["videos"][number], max_frames)
    out = annotation_arrays(read_annotation(found["annotations"][number]), max_objects)
    if max_frames is not None:
        for key in ("frame", "location", "velocity", "in_view"):
            out[key] = out[key][: len(video)]
    out["video"] = video
    return out
