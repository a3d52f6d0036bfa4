"""Files written whole or not at all."""
import pytest

from firebreak_exp.atomic import write_atomically, write_text_atomically


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = write_text_atomically(tmp_path / "out" / "record.json", '{"R": 0.3}')
    assert path.read_text() == '{"R": 0.3}'

    def half_then_fail(tmp):
        with open(tmp, "w") as handle:
            handle.write('{"R": 0.')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == '{"R": 0.3}'
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]
