import os
import stat

import pytest

from nas_reid.fileio import atomic_directory, atomic_write_json, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_file_has_the_usual_permissions_and_content(tmp_path, umask_022):
    path = atomic_write_text(tmp_path / "a" / "f.txt", "hello")
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temp file left


def test_atomic_write_replaces_and_a_failure_keeps_the_old_file(tmp_path):
    path = atomic_write_json(tmp_path / "f.json", {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path, umask_022):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "whole.txt").write_text("x")
    assert [p.name for p in target.iterdir()] == ["whole.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_atomic_directory_overwrite_swaps_only_when_complete(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
