"""Files written whole or not at all: written under a temporary name beside the target, then renamed onto it,
so a reader never sees half a file and a failed write leaves the previous file (and no temporary) behind."""
import os
import tempfile
from pathlib import Path
from typing import Callable, Union


def write_atomically(path: Union[str, os.PathLike], write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)`` (it creates the file there) and rename the result onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: Union[str, os.PathLike], text: str) -> Path:
    """``text`` as the whole content of ``path`` (see :func:`write_atomically`)."""
    return write_atomically(path, lambda tmp: Path(tmp).write_text(text))
