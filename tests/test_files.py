import os
import stat

import pytest

from imgclf.files import atomic_path, write_csv, write_json, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_honour_the_umask_like_open(tmp_path, umask_022):
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "sub" / "b.json", {})
    write_csv(tmp_path / "c.csv", ["a"], [[1]])
    with atomic_path(tmp_path / "d.keras") as tmp:
        tmp.write_bytes(b"model")
    assert mode(tmp_path / "plain.txt") == 0o644
    assert {name: mode(tmp_path / name) for name in ("a.txt", "sub/b.json", "c.csv", "d.keras")} == dict.fromkeys(
        ("a.txt", "sub/b.json", "c.csv", "d.keras"), 0o644)


def test_rewriting_a_file_keeps_its_mode(tmp_path, umask_022):
    target = write_text(tmp_path / "shared.txt", "one")
    os.chmod(target, 0o664)
    write_text(target, "two")
    assert target.read_text() == "two" and mode(target) == 0o664


def test_a_name_near_the_length_limit_is_written_atomically(tmp_path):
    target = tmp_path / ("m" * 246 + ".csv")  # 250 bytes: legal, but not with a temporary prefix and suffix added
    write_text(target, "a,b\n")
    assert target.read_text() == "a,b\n" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    wide = tmp_path / ("é" * 123 + ".txt")  # 250 bytes of two-byte characters: the cut may fall inside one
    write_text(wide, "x")
    assert wide.read_text() == "x"


def test_a_damaged_json_file_is_named_with_the_fix(tmp_path):
    from imgclf.files import DamagedFileError, read_json

    (tmp_path / "metrics.json").write_text('{"accuracy": 0.9, "spl')
    with pytest.raises(DamagedFileError, match=r"metrics.json is not valid JSON \(Unterminated string .*\): it was cut "
                                               r"short or edited by hand. Restore it from a copy, or run again"):
        read_json(tmp_path / "metrics.json")
    assert issubclass(DamagedFileError, ValueError)  # the command line prints it as one line
