"""ABAW annotation files: parsing, invalid markers, and the errors that name file and line."""

from __future__ import annotations

import numpy as np
import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.train.annotations import (
    HEADERS,
    base_video,
    group_by_video,
    list_annotations,
    read_annotation,
    valid_frames,
    write_annotation,
)


def _write(path, text):
    path.write_text(text)
    return path


def test_va_file_reads_values_and_invalid_frames(tmp_path):
    p = _write(tmp_path / "v.txt", "valence,arousal\n0.5,-0.25\n-5,-5\n0.1,-5\n1,-1\n")
    y = read_annotation(p, "va")
    assert y.dtype == np.float32 and y.shape == (4, 2)
    np.testing.assert_allclose(y[0], [0.5, -0.25])
    np.testing.assert_array_equal(y[2], [-5, -5])  # either value -5 invalidates the whole frame
    assert valid_frames("va", y).tolist() == [True, False, False, True]


def test_expr_and_au_files(tmp_path):
    e = _write(tmp_path / "e.txt", HEADERS["expr"] + "\n0\n7\n-1\n3\n\n\n")  # trailing blank lines are fine
    assert read_annotation(e, "expr").tolist() == [0, 7, -1, 3]
    a = _write(
        tmp_path / "a.txt", HEADERS["au"] + "\n" + ",".join(["1", "0"] * 6) + "\n" + ",".join(["-1"] * 12) + "\n"
    )
    y = read_annotation(a, "au")
    assert y.shape == (2, 12)
    assert valid_frames("au", y)[0].all() and not valid_frames("au", y)[1].any()


@pytest.mark.parametrize("task", ["va", "expr", "au"])
def test_write_then_read_round_trips(tmp_path, task):
    rng = np.random.default_rng(0)
    if task == "va":
        y = rng.uniform(-1, 1, (50, 2)).round(6).astype(np.float32)
        y[[3, 9]] = -5
    elif task == "expr":
        y = rng.integers(-1, 8, 50)
    else:
        y = rng.integers(-1, 2, (50, 12)).astype(np.float32)
    back = read_annotation(write_annotation(tmp_path / "x.txt", task, y), task)
    np.testing.assert_allclose(back, y, atol=1e-6)


def test_wrong_header_names_file_line_and_the_task_it_belongs_to(tmp_path):
    p = _write(tmp_path / "clip.txt", HEADERS["expr"] + "\n0\n")
    with pytest.raises(AbawRtError, match=r"clip\.txt' line 1: header .*expected 'valence,arousal'.*EXPR header"):
        read_annotation(p, "va")


def test_wrong_column_count_names_the_line(tmp_path):
    p = _write(tmp_path / "c.txt", "valence,arousal\n0.1,0.2\n0.3\n")
    with pytest.raises(AbawRtError, match=r"c\.txt' line 3: 1 column\(s\).*expected 2"):
        read_annotation(p, "va")
    au = _write(tmp_path / "au.txt", HEADERS["au"] + "\n" + ",".join(["0"] * 11) + "\n")
    with pytest.raises(AbawRtError, match=r"au\.txt' line 2: 11 column"):
        read_annotation(au, "au")


@pytest.mark.parametrize(
    "task, body, match",
    [
        ("va", "0.1,nan", "line 3: .*not finite"),
        ("va", "0.1,abc", "line 3: value 'abc' is not a number"),
        ("va", "1.5,0", r"line 3: .*expected values in \[-1, 1\]"),
        ("expr", "8", "line 3: .*an integer 0..7"),
        ("expr", "2.5", "line 3: .*an integer 0..7"),
        ("au", ",".join(["2"] + ["0"] * 11), "line 3: .*0 or 1 per AU"),
    ],
)
def test_bad_values_name_file_and_line(tmp_path, task, body, match):
    good = {"va": "0.1,0.2", "expr": "1", "au": ",".join(["0"] * 12)}[task]
    p = _write(tmp_path / "bad.txt", f"{HEADERS[task]}\n{good}\n{body}\n")
    with pytest.raises(AbawRtError, match=r"bad\.txt' " + match):
        read_annotation(p, task)


def test_empty_and_header_only_files(tmp_path):
    with pytest.raises(AbawRtError, match="empty file"):
        read_annotation(_write(tmp_path / "e.txt", "\n"), "va")
    with pytest.raises(AbawRtError, match="header only"):
        read_annotation(_write(tmp_path / "h.txt", "valence,arousal\n"), "va")
    with pytest.raises(AbawRtError, match="no such file"):
        read_annotation(tmp_path / "missing.txt", "va")


def test_two_person_files_group_under_one_video(tmp_path):
    assert base_video("video10_1_left") == "video10_1"
    assert base_video("video10_right") == "video10"
    assert base_video("_left") == "_left"  # a bare suffix is a name, not a person
    assert base_video("leftover") == "leftover"
    assert group_by_video(["b_right", "a", "b_left"]) == {"a": ["a"], "b": ["b_left", "b_right"]}


def test_list_annotations_errors(tmp_path):
    with pytest.raises(AbawRtError, match="no such folder"):
        list_annotations(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(AbawRtError, match="no .txt annotation files"):
        list_annotations(tmp_path)
