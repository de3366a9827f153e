"""The CLEVRER reader (tokdyn.datasets.clevrer) on a directory the test writes in CLEVRER's layout:
a tiny MP4 encoded with PyAV, an annotation and a questions file, and broken ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

av = pytest.importorskip("av")

from tokdyn.datasets import clevrer  # noqa: E402

F, H, W = 6, 32, 48


def frames():
    """Smooth frames (a moving gradient): a lossy codec keeps them close."""
    r, c = np.mgrid[0:H, 0:W]
    return np.stack(
        [np.stack([(4 * c + 8 * t) % 256, (6 * r) % 256, np.full_like(r, 128)], -1) for t in range(F)]
    ).astype(np.uint8)


def write_mp4(path, video, faststart=False):
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"qscale": "2"}
        for image in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


ANNOTATION = {
    "scene_index": 0,
    "video_filename": "video_00000.mp4",
    "object_property": [
        {"object_id": 0, "color": "red", "material": "metal", "shape": "cube"},
        {"object_id": 2, "color": "cyan", "material": "rubber", "shape": "sphere"},
    ],
    "motion_trajectory": [
        {"frame_id": f, "objects": [
            {"object_id": 0, "location": [f, 0.5, 0.2], "velocity": [1, 0, 0], "inside_camera_view": True},
            {"object_id": 2, "location": [-1, f, 0.2], "velocity": [0, 1, 0], "inside_camera_view": f < 3},
        ]}
        for f in range(F)
    ],
    "collision": [{"object_ids": [2, 0], "frame_id": 4, "location": [0, 0, 0]}],
}  # fmt: skip
QUESTIONS = [
    {"scene_index": 0, "video_filename": "video_00000.mp4", "questions": [
        {"question_id": 0, "question_type": "descriptive", "question": "What color is the cube?", "answer": "red"},
        {"question_id": 1, "question_type": "counterfactual", "question": "Without the cube, what will happen?",
         "choices": [{"choice_id": 0, "choice": "The sphere collides with nothing", "answer": "correct"},
                     {"choice_id": 1, "choice": "The sphere stops", "answer": "wrong"}]},
    ]}
]  # fmt: skip


@pytest.fixture
def directory(tmp_path):
    (tmp_path / "video_00000-01000").mkdir()
    (tmp_path / "annotation_00000-01000").mkdir()
    write_mp4(tmp_path / "video_00000-01000" / "video_00000.mp4", frames())
    (tmp_path / "annotation_00000-01000" / "annotation_00000.json").write_text(json.dumps(ANNOTATION))
    (tmp_path / "train.json").write_text(json.dumps(QUESTIONS))
    return tmp_path


def test_a_video_and_its_annotation_read_back(directory):
    out = clevrer.load(directory, 0, max_objects=4)
    assert out["video"].shape == (F, H, W, 3) and out["video"].dtype == np.uint8
    assert np.abs(out["video"].astype(int) - frames()).mean() < 6  # mpeg4 at its finest quantiser: close
    np.testing.assert_array_equal(out["present"], [True, False, True, False])
    np.testing.assert_array_equal(out["color"], [1, -1, 6, -1])  # red, cyan in CLEVR's colour order
    np.testing.assert_allclose(out["location"][3, 2], [-1, 3, 0.2])
    np.testing.assert_array_equal(out["in_view"][:, 2], [True, True, True, False, False, False])
    np.testing.assert_array_equal(out["collisions"], [[4, 0, 2]])
    assert clevrer.load(directory, 0, max_frames=2)["location"].shape == (2, clevrer.MAX_OBJECTS, 3)
    q = clevrer.read_questions(directory / "train.json")
    assert [x["question_type"] for x in q[0]["questions"]] == ["descriptive", "counterfactual"]


def test_a_video_that_does_not_decode_is_named(directory):
    path = directory / "video_00000-01000" / "video_00000.mp4"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="video_00000.mp4: the video does not decode"):
        clevrer.load(directory, 0)
    write_mp4(path, np.concatenate([frames()] * 4), faststart=True)  # the index first: the frames are cut
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="video_00000.mp4: the video does not decode"):
        clevrer.read_video(path)
    path.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="video_00000.mp4: the video does not decode"):
        clevrer.read_video(path)


def test_missing_files_and_broken_annotations_are_named(directory, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match=r"does not exist: expected .*video_NNNNN.mp4.*clevrer.csail"):
        clevrer.index(tmp_path_factory.mktemp("x") / "nowhere")
    with pytest.raises(FileNotFoundError, match="no video_00007.mp4"):
        clevrer.load(directory, 7)
    bad = json.loads(json.dumps(ANNOTATION))
    bad["collision"][0]["object_ids"] = [0, 5]
    path = directory / "annotation_00000-01000" / "annotation_00000.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(
        ValueError,
        match=r"annotation_00000.json \(video video_00000.mp4\): collision\[0\]: object_ids must name two of "
        r"object_property's objects \[0, 2\], got \[0, 5\]",
    ):
        clevrer.load(directory, 0)
    with pytest.raises(ValueError, match=r"object_id 2 is outside \[0, max_objects=2\)"):
        clevrer.annotation_arrays(ANNOTATION, max_objects=2)
    broken = json.loads(json.dumps(QUESTIONS))
    broken[0]["questions"][1]["question_type"] = "hypothetical"
    (directory / "train.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="video 0, question 1: question_type must be one of"):
        clevrer.read_questions(directory / "train.json")


def test_collisions_and_states_read_exactly_as_written():
    ann = json.loads(json.dumps(ANNOTATION))
    ann["collision"] = [
        {"object_ids": [2, 0], "frame_id": 4},
        {"object_ids": [0, 2], "frame_id": 1, "location": [0.5, -1, 0.2]},
        {"object_ids": [2, 0], "frame_id": 5},
    ]
    out = clevrer.annotation_arrays(ann, max_objects=3)
    want = [(c["frame_id"], *sorted(c["object_ids"])) for c in ann["collision"]]  # (frame, a, b), a < b
    np.testing.assert_array_equal(out["collisions"], want)
    for f, t in enumerate(ann["motion_trajectory"]):
        for o in t["objects"]:
            np.testing.assert_array_equal(out["location"][f, o["object_id"]], np.float32(o["location"]))
            np.testing.assert_array_equal(out["velocity"][f, o["object_id"]], np.float32(o["velocity"]))
            assert out["in_view"][f, o["object_id"]] == o["inside_camera_view"]
    assert not out["location"][:, 1].any() and not out["present"][1]
    ann["collision"] = []
    assert clevrer.annotation_arrays(ann)["collisions"].shape == (0, 3)


def _edit(ann, path, value):
    target = ann
    for key in path[:-1]:
        target = target[key]
    if value is DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value


DROP = object()


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("collision", 0, "object_ids"), [2], r"collision\[0\]: object_ids must name two of .*\[0, 2\], got \[2\]"),
        (("collision", 0, "object_ids"), [], r"collision\[0\]: object_ids must name two .*got \[\]"),
        (("collision", 0, "object_ids"), [2, 2], r"collision\[0\]: object_ids must name two different objects"),
        (("collision", 0, "object_ids"), [0, "2"], r"collision\[0\]: object_ids .*got \[0, '2'\]"),
        (("collision", 0, "frame_id"), 4.5, r"collision\[0\]: frame_id must be an int >= 0, got 4.5"),
        (("collision", 0, "location"), 0.5, r"collision\[0\]: location must hold 3 finite numbers, got 0.5"),
        (("motion_trajectory", 2, "objects", 0, "location"), 2.5,
         r"motion_trajectory\[2\] \(frame 2\), object 0: location must hold 3 finite numbers, got 2.5"),
        (("motion_trajectory", 2, "objects", 1, "velocity"), [1, 0], r"object 2: velocity must hold 3 finite numbers"),
        (("motion_trajectory", 0, "objects", 0, "location"), "abc", r"location must hold 3 finite numbers, got 'abc'"),
        (("motion_trajectory", 0, "objects", 0, "velocity"), [0, float("inf"), 0], r"velocity must hold 3 finite numbers"),
        (("motion_trajectory", 1, "objects", 0, "inside_camera_view"), DROP, r"inside_camera_view must be true or false"),
        (("motion_trajectory", 1, "objects"), DROP, r"motion_trajectory\[1\] \(frame 1\): objects must be a list"),
        (("motion_trajectory", 1, "objects", 1, "object_id"), 0, r"\(frame 1\): object 0 has two states in one frame"),
        (("motion_trajectory", 1, "objects", 1, "object_id"), 7, r"object_id must be one of object_property's \[0, 2\]"),
        (("motion_trajectory", 3, "frame_id"), 2, r"motion_trajectory\[3\]: frame_id must be an int >= 0 above the frame before's 2"),
        (("object_property", 1, "object_id"), 0, r"object_property\[0\] and object_property\[1\] both have object_id 0"),
        (("object_property", 0, "object_id"), "1", r"object_property\[0\]: object_id must be an int >= 0, got '1'"),
        (("object_property", 0, "object_id"), -1, r"object_property\[0\]: object_id must be an int >= 0, got -1"),
        (("object_property", 0, "color"), ["red"], r"object_property\[0\]: color must be one of"),
        (("collision",), {}, r"collision must be a list, got dict"),
    ],
)  # fmt: skip
def test_garbled_annotations_are_refused_naming_the_file_the_video_and_the_field(tmp_path, path, value, match):
    ann = json.loads(json.dumps(ANNOTATION))
    _edit(ann, path, value)
    file = tmp_path / "annotation_00000.json"
    file.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"annotation_00000.json \(video video_00000.mp4\): .*" + match):
        clevrer.read_annotation(file)
    with pytest.raises(ValueError, match=r"^annotation \(video video_00000.mp4\): "):
        clevrer.annotation_arrays(ann)  # a dict given directly: checked the same way


def test_an_annotation_or_questions_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "annotation_00000.json"
    path.write_bytes(b'{"object_property": "\xff"}')
    with pytest.raises(ValueError, match=r"annotation_00000.json is not UTF-8 text \(byte 21"):
        clevrer.read_annotation(path)
    path.write_bytes(b"[7]")
    with pytest.raises(ValueError, match="video 0 must be a JSON object"):
        clevrer.read_questions(path)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "2"])
def test_a_max_frames_below_one_is_refused_before_decoding(directory, bad):
    path = directory / "video_00000-01000" / "video_00000.mp4"
    with pytest.raises(
        (ValueError, TypeError), match=rf"max_frames must be None \(every frame\) or an int >= 1, got {bad!r}"
    ):
        clevrer.read_video(path, max_frames=bad)  # before: 0 and -3 returned one frame
    with pytest.raises((ValueError, TypeError), match="max_frames must be"):
        clevrer.load(directory, 0, max_frames=bad)
    assert clevrer.read_video(path, max_frames=1).shape == (1, H, W, 3)
