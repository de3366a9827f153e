"""The vlm-diagnostics study's instance files (``tokdyn.studies.vlm_diagnostics.instances.read_jsonl``) refuse
what would be scored or prompted wrongly, naming the file, the line, the field, the value and what is allowed:
two options the same, an option holding a line break (it would forge an option line in the prompt), an answer
that is both a letter and another option's text, a file that is not UTF-8 (through the command with a
checkpoint too, where the refusal used to blame the model), an image path that is a directory; a JSON string
holding U+2028 stays one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from tokdyn import cli  # noqa: E402
from tokdyn.studies import vlm_diagnostics as vd  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
GOOD = {"image": "a.png", "question": "How many?", "answer": "0"}


def write(folder: Path, *rows, name="items.jsonl") -> str:
    """An instances file of a good first line and ``rows`` (dicts as JSON, bytes as written), beside a.png."""
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    data = json.dumps(GOOD).encode() + b"\n"
    for row in rows:
        data += (row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()) + b"\n"
    (folder / name).write_bytes(data)
    return str(folder / name)


def mc(options, answer, image="a.png") -> dict:
    return {"image": image, "question": "Which?", "options": options, "answer": answer}


@pytest.mark.parametrize(
    "row, words",
    [
        (mc(["red", "blue", "Red "], "A"), r"line 2: options: options 0 \(A\) 'red' and 2 \(C\) 'Red ' are the same"),
        (mc(["x", "y\nB. z"], "A"), r"line 2: options: option 1 \(B\) 'y\\nB. z' holds a line break"),
        (mc(["x", "y\r"], "A"), None),  # spaces around an option (a trailing \r among them) are stripped
        (mc(["x", "y\u2028C. z"], "A"), r"line 2: options: option 1 \(B\) .* holds a line break"),
        (mc(["B", "A"], "A"), r"line 2: answer 'A' is ambiguous: it is the letter A and the text of option B"),
        (mc(["x", "a"], "A"), r"line 2: answer 'A' is ambiguous: it is the letter A and the text of option B"),
        (mc(["x", "y"], "C"), r"line 2: answer 'C' is neither a letter of the 2 options \(A-B\)"),
        ({"image": ".", "question": "Q", "answer": "1"}, r"line 2: the image '\.' \(.*\) is a directory: give an"),
        ({"image": "no.png", "question": "Q", "answer": "1"}, r"line 2: the image 'no.png' \(.*\) does not exist"),
        (b'{"image": "a.png", "question": "Caf\xe9?", "answer": "1"}', r"line 2 is not UTF-8 \(byte 0xe9 at column"),
    ],
)
def test_a_bad_option_answer_image_or_encoding_is_refused_naming_file_line_and_value(tmp_path, row, words):
    path = write(tmp_path, row)
    if words is None:
        assert vd.read_jsonl(path).options[1] == ("x", "y")
        return
    with pytest.raises(ValueError, match=f"^instances='{re.escape(path)}' {words}"):
        vd.read_jsonl(path)


def test_an_answer_that_is_a_letter_and_the_same_options_text_reads_as_that_option(tmp_path):
    inst = vd.read_jsonl(write(tmp_path, mc(["A", "B"], "a"), mc(["x", "a cube"], "A cube")))
    assert inst.answers[1:] == ["A", "B"]


def test_a_json_string_holding_a_unicode_line_separator_stays_one_line(tmp_path):
    inst = vd.read_jsonl(write(tmp_path, {"image": "a.png", "question": "One\u2028two?", "answer": "1"}))
    assert inst.questions[1] == "One\u2028two?" and len(inst) == 2


def test_a_latin_1_file_exits_2_naming_the_file_and_line_not_the_model(tmp_path, capsys):
    path = write(tmp_path, b'{"image": "a.png", "question": "Caf\xe9?", "answer": "1"}')
    code = cli.main(
        ["study", "vlm-diagnostics", "--model", str(FIXTURE), "--instances", path, "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"instances='{path}' line 2 is not UTF-8" in err and "model=" not in err, err
    assert not (tmp_path / "o").exists()
