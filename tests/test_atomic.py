"""atomic_write: the target has the old or the new content, never part of one, and no temporary file stays."""

from __future__ import annotations

import os
import stat

import pytest

from specstream.atomic import atomic_write, make_folder, write_text_atomically


def test_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "result.csv"
    write_text_atomically(path, "old\n")
    with atomic_write(path, "w", fsync=True) as stream:
        stream.write("new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.csv"]


def test_failure_keeps_old_content(tmp_path):
    path = tmp_path / "result.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(path, "w") as stream:
            stream.write("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]


def test_permissions_follow_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_text_atomically(tmp_path / "report.md", "text")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the group, as a plain open() would make it


def test_mode_must_write(tmp_path):
    with pytest.raises(ValueError, match="atomic_write mode must be 'w' or 'wb', got 'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_make_folder_names_blocking_file(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    for target in (tmp_path / "results", tmp_path / "results" / "run1"):
        with pytest.raises(ValueError, match=f"failed to create folder {target}: {tmp_path / 'results'} is a file"):
            make_folder(target)


def test_make_folder_creates_parents(tmp_path):
    assert make_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()


def test_atomic_write_rejects_folder_target(tmp_path):
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        with atomic_write(tmp_path):
            pass
    assert list(tmp_path.iterdir()) == []
