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

import os
import re

import numpy as np

from tokdyn.datasets.clevr import ATTRIBUTES as CLEVR_ATTRIBUTES
from tokdyn.datasets.clevr import is_index, is_number, read_json
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
      ValueError: one number's video (or annotation) found twice, in two subfolders (or as
        ``video_1.mp4`` and ``video_00001.mp4``), naming both paths: which one is meant is not known.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"CLEVRER directory {directory!r} does not exist: expected {layout()}")
    out = {"videos": {}, "annotations": {}}
    for base, folders, files in os.walk(directory):
        folders.sort()
        for name in sorted(files):
            for key, pattern in (("videos", _VIDEO), ("annotations", _ANNOTATION)):
                m = pattern.match(name)
                if m:
                    number, path = int(m.group(1)), os.path.join(base, name)
                    if number in out[key]:
                        raise ValueError(
                            f"CLEVRER directory {directory!r} holds {key[:-1]} {number} twice: "
                            f"{out[key][number]!r} and {path!r}; keep one (each number once: {layout()})"
                        )
                    out[key][number] = path
    if not out["videos"]:
        raise FileNotFoundError(f"CLEVRER directory {directory!r} holds no video_NNNNN.mp4: expected {layout()}")
    return out


def check_max_frames(max_frames) -> None:
    """``max_frames``: None (every frame) or an int >= 1; a ``TypeError`` / ``ValueError`` naming it."""
    if max_frames is None:
        return
    if not is_index(max_frames):
        raise TypeError(f"max_frames must be None (every frame) or an int >= 1, got {max_frames!r}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be None (every frame) or an int >= 1, got {max_frames}")


def read_video(path, max_frames: int | None = None) -> np.ndarray:
    """The frames of an MP4 as ``(F, H, W, 3)`` uint8 RGB (the first ``max_frames``, or all).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file does not decode (naming it, and the frame it failed at), holds no
        frame, or fewer frames than its container declares (a truncated file); a ``max_frames``
        below 1.
      TypeError: a ``max_frames`` that is neither None nor an int.
    """
    check_max_frames(max_frames)
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


def _where(ann, where) -> str:
    """How an annotation is named in errors: ``where`` (its file) and its video."""
    video = ann.get("video_filename", ann.get("scene_index")) if isinstance(ann, dict) else None
    return f"{where} (video {video})" if video is not None else str(where)


def _vector(value, n: int = 3) -> bool:
    return isinstance(value, list) and len(value) == n and all(is_number(v) for v in value)


def check_annotation(ann, where: str = "annotation") -> None:
    """A CLEVRER annotation's fields checked, so that :func:`annotation_arrays` reads it exactly as
    written: ``object_property`` objects with distinct int ``object_id``\\ s >= 0 and known
    attributes; ``motion_trajectory`` frames with int ``frame_id``\\ s, increasing, each with its
    ``objects``: known ids, once a frame, ``location`` and ``velocity`` three finite numbers each
    and ``inside_camera_view`` a bool; ``collision``\\ s naming two distinct known objects and an
    int ``frame_id`` >= 0 (and, where given, a ``location`` of three numbers).

    Raises:
      ValueError: a field missing, of another type or value, naming ``where`` (the file), the
        video, the entry and the field.
    """
    where = _where(ann, where)
    if not isinstance(ann, dict):
        raise ValueError(f"{where} must be a JSON object (a CLEVRER annotation), got {type(ann).__name__}")
    for key in ("object_property", "motion_trajectory", "collision"):
        if key not in ann:
            raise ValueError(
                f"{where} has no {key!r} (a CLEVRER annotation holds object_property, motion_trajectory, collision)"
            )
        if not isinstance(ann[key], list):
            raise ValueError(f"{where}: {key} must be a list, got {type(ann[key]).__name__}")
    ids = {}
    for j, obj in enumerate(ann["object_property"]):
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: object_property[{j}] must be a JSON object, got {obj!r:.80}")
        i = obj.get("object_id")
        if not (is_index(i) and i >= 0):
            raise ValueError(f"{where}: object_property[{j}]: object_id must be an int >= 0, got {i!r}")
        if i in ids:
            raise ValueError(
                f"{where}: object_property[{ids[i]}] and object_property[{j}] both have object_id {i}: each object "
                "has an id of its own"
            )
        ids[i] = j
        for name, values in ATTRIBUTES.items():
            if not isinstance(obj.get(name), str) or obj.get(name) not in values:
                raise ValueError(
                    f"{where}: object_property[{j}]: {name} must be one of {values}, got {obj.get(name)!r}"
                )
    known = sorted(ids)
    last = None
    for f, t in enumerate(ann["motion_trajectory"]):
        if not isinstance(t, dict):
            raise ValueError(f"{where}: motion_trajectory[{f}] must be a JSON object, got {t!r:.80}")
        frame = t.get("frame_id")
        if not (is_index(frame) and frame >= 0) or (last is not None and frame <= last):
            after = "" if last is None else f" above the frame before's {last}"
            raise ValueError(f"{where}: motion_trajectory[{f}]: frame_id must be an int >= 0{after}, got {frame!r}")
        last = frame
        states = t.get("objects")
        if not isinstance(states, list):
            got = "none" if states is None else f"{states!r:.80}"
            raise ValueError(
                f"{where}: motion_trajectory[{f}] (frame {frame}): objects must be a list of states, got {got}"
            )
        seen = set()
        for o in states:
            i = o.get("object_id") if isinstance(o, dict) else None
            at = f"{where}: motion_trajectory[{f}] (frame {frame})"
            if not (is_index(i) and i in ids):
                raise ValueError(f"{at}: object_id must be one of object_property's {known}, got {i!r}")
            if i in seen:
                raise ValueError(f"{at}: object {i} has two states in one frame")
            seen.add(i)
            for key in ("location", "velocity"):
                if not _vector(o.get(key)):
                    raise ValueError(f"{at}, object {i}: {key} must hold 3 finite numbers, got {o.get(key)!r:.80}")
            if not isinstance(o.get("inside_camera_view"), bool):
                raise ValueError(
                    f"{at}, object {i}: inside_camera_view must be true or false, got {o.get('inside_camera_view')!r}"
                )
    for k, c in enumerate(ann["collision"]):
        at = f"{where}: collision[{k}]"
        if not isinstance(c, dict):
            raise ValueError(f"{at} must be a JSON object, got {c!r:.80}")
        pair = c.get("object_ids")
        if not (isinstance(pair, list) and len(pair) == 2 and all(is_index(i) and i in ids for i in pair)):
            raise ValueError(f"{at}: object_ids must name two of object_property's objects {known}, got {pair!r}")
        if pair[0] == pair[1]:
            raise ValueError(f"{at}: object_ids must name two different objects, got {pair!r}")
        frame = c.get("frame_id")
        if not (is_index(frame) and frame >= 0):
            raise ValueError(f"{at}: frame_id must be an int >= 0, got {frame!r}")
        if "location" in c and not _vector(c["location"]):
            raise ValueError(f"{at}: location must hold 3 finite numbers, got {c['location']!r:.80}")


def read_annotation(path) -> dict:
    """A CLEVRER annotation (UTF-8 JSON), checked by :func:`check_annotation`; a ``ValueError``
    naming the file, the video, the entry and the field otherwise."""
    path = os.fspath(path)
    ann = read_json(path, "a CLEVRER annotation is JSON (object_property, motion_trajectory, collision)")
    check_annotation(ann, path)
    return ann


def annotation_arrays(ann: dict, max_objects: int = MAX_OBJECTS, *, where: str = "annotation") -> dict:
    """One annotation as fixed-shape arrays, objects in slots by ``object_id`` (M = ``max_objects``),
    each value as written (the annotation is checked first: :func:`check_annotation`).

    Returns:
      ``present`` ``(M,)`` bool; ``color`` / ``material`` / ``shape`` ``(M,)`` int32 indices into
      :data:`ATTRIBUTES` (-1 where absent); ``location`` / ``velocity`` ``(F, M, 3)`` float32 (0
      where an object has no state in a frame); ``in_view`` ``(F, M)`` bool (the object's
      ``inside_camera_view``); ``frame`` ``(F,)`` int32 the trajectory's frame ids; ``collisions``
      ``(C, 3)`` int32 rows ``(frame_id, object a, object b)``, a < b.

    Raises:
      ValueError: an ``object_id`` outside ``[0, max_objects)``, or a field :func:`check_annotation`
        refuses, naming ``where`` (the file), the video and the field.
    """
    if not is_index(max_objects):
        raise TypeError(f"max_objects must be an int >= 1, got {max_objects!r}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be an int >= 1, got {max_objects}")
    check_annotation(ann, where)
    M = max_objects
    out = {"present": np.zeros(M, bool)}
    for name in ATTRIBUTES:
        out[name] = np.full(M, -1, np.int32)
    for obj in ann["object_property"]:
        i = obj["object_id"]
        if i >= M:
            raise ValueError(f"{_where(ann, where)}: object_id {i} is outside [0, max_objects={M}): raise max_objects")
        out["present"][i] = True
        for name, values in ATTRIBUTES.items():
            out[name][i] = values.index(obj[name])
    F = len(ann["motion_trajectory"])
    out["frame"] = np.asarray([t["frame_id"] for t in ann["motion_trajectory"]], np.int32).reshape(F)
    for key in ("location", "velocity"):
        out[key] = np.zeros((F, M, 3), np.float32)
    out["in_view"] = np.zeros((F, M), bool)
    for f, t in enumerate(ann["motion_trajectory"]):
        for o in t["objects"]:
            i = o["object_id"]
            out["location"][f, i] = o["location"]
            out["velocity"][f, i] = o["velocity"]
            out["in_view"][f, i] = o["inside_camera_view"]
    out["collisions"] = np.asarray(
        [(c["frame_id"], *sorted(c["object_ids"])) for c in ann["collision"]], np.int32
    ).reshape(len(ann["collision"]), 3)
    return out


def read_questions(path) -> list:
    """The questions file (``train.json``, ``validation.json``, ``test.json``): a list, per video,
    of ``{"scene_index", "video_filename", "questions"}``, each question checked: its
    ``question_type`` one of :data:`QUESTION_TYPES`, a descriptive one with an ``answer`` (but in
    the test file), the others with ``choices`` (each ``correct`` or ``wrong`` where answered)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: expected {layout()}")
    videos = read_json(path, "a CLEVRER questions file is JSON, a list of videos each with its questions")
    if not isinstance(videos, list):
        raise ValueError(f"{path}: a CLEVRER questions file holds a list of videos, got {type(videos).__name__}")
    for v, video in enumerate(videos):
        questions = video.get("questions", []) if isinstance(video, dict) else None
        if not isinstance(questions, list) or not all(isinstance(q, dict) for q in questions):
            raise ValueError(f"{path}: video {v} must be a JSON object whose questions are a list of JSON objects")
        for q in questions:
            where = f"{path}: video {video.get('scene_index', v)}, question {q.get('question_id')}"
            kind = q.get("question_type")
            if kind not in QUESTION_TYPES:
                raise ValueError(f"{where}: question_type must be one of {QUESTION_TYPES}, got {kind!r}")
            if kind != "descriptive":
                choices = q.get("choices")
                if not choices or not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
                    raise ValueError(f"{where}: a {kind} question needs its choices (a list of JSON objects)")
                for c in choices:
                    if c.get("answer", "correct") not in ("correct", "wrong"):
                        raise ValueError(
                            f"{where}: a choice's answer must be 'correct' or 'wrong', got {c['answer']!r}"
                        )
    return videos


def load(directory, number: int, *, max_frames: int | None = None, max_objects: int = MAX_OBJECTS) -> dict:
    """Video ``number`` of a CLEVRER directory with its annotation: ``video`` ``(F, H, W, 3)``
    uint8 and every array of :func:`annotation_arrays` (the annotation's frames cut to the video's
    when ``max_frames`` is given: the states of the frames read, by ``frame_id``).

    Raises:
      FileNotFoundError: no such video or annotation, naming the layout.
      ValueError, TypeError: as :func:`index` (a number found twice), :func:`read_video` and
        :func:`annotation_arrays`, or a ``number`` that is not an int >= 0.
    """
    if not is_index(number) or number < 0:
        raise TypeError(f"number must be an int >= 0 (video_NNNNN.mp4's number), got {number!r}")
    check_max_frames(max_frames)
    found = index(directory)
    if number not in found["videos"]:
        raise FileNotFoundError(f"{directory}: no video_{number:05d}.mp4: expected {layout()}")
    if number not in found["annotations"]:
        raise FileNotFoundError(f"{directory}: no annotation_{number:05d}.json: expected {layout()}")
    video = read_video(found["videos"][number], max_frames)
    path = found["annotations"][number]
    out = annotation_arrays(read_annotation(path), max_objects, where=path)
    if max_frames is not None:
        keep = out["frame"] < len(video)
        for key in ("frame", "location", "velocity", "in_view"):
            out[key] = out[key][keep]
    out["video"] = video
    return out
