import json

import pytest

from vlarl.utils.io import atomic_dir, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_atomic_write_json(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2], "b": 1}


def test_atomic_dir_failure_keeps_old_contents(tmp_path):
    target = tmp_path / "ds"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "v").write_text("2")
        raise RuntimeError("crash mid-write")
    assert (target / "v").read_text() == "1"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ds"]
    with atomic_dir(target) as d:
        (d / "v").write_text("3")
    assert (target / "v").read_text() == "3"
