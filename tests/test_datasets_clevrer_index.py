"""The CLEVRER directory's index (``tokdyn.datasets.clevrer.index``, which needs no PyAV): a video or an
annotation of one number found in two subfolders is refused naming both paths (the one read was whichever
the walk met last)."""

from __future__ import annotations

import re

import pytest

from tokdyn.datasets import clevrer


def test_a_video_found_in_two_subfolders_is_refused_naming_both(tmp_path):
    for folder in ("video_00000-01000", "video_validation"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "video_00000.mp4").write_bytes(b"")
    (tmp_path / "video_00000-01000" / "video_00001.mp4").write_bytes(b"")
    first, second = (str(tmp_path / f / "video_00000.mp4") for f in ("video_00000-01000", "video_validation"))
    with pytest.raises(ValueError, match=f"holds video 0 twice: '{re.escape(first)}' and '{re.escape(second)}'"):
        clevrer.index(tmp_path)
    (tmp_path / "video_validation" / "video_00000.mp4").unlink()
    (tmp_path / "annotation_00001.json").write_text("{}")
    (tmp_path / "video_validation" / "annotation_1.json").write_text("{}")
    with pytest.raises(ValueError, match="holds annotation 1 twice: .*annotation_00001.json.* and .*annotation_1.json"):
        clevrer.index(tmp_path)
    (tmp_path / "video_validation" / "annotation_1.json").unlink()
    found = clevrer.index(tmp_path)
    assert found["videos"] == {0: first, 1: str(tmp_path / "video_00000-01000" / "video_00001.mp4")}
    assert found["annotations"] == {1: str(tmp_path / "annotation_00001.json")}
