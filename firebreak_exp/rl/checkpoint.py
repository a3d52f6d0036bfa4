"""Checkpoints: the full training state, written atomically, loaded without unpickling objects.

``<name>.pt`` holds network and target weights, optimizer state, RNG states and
counters (``torch.load(weights_only=True)`` can read it); the replay buffer goes
beside it as ``<name>.replay.npz`` and the checkpoint records that path.
"""
import io
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from firebreak_exp.rl.replay import ReplayBuffer

CHECKPOINT_FORMAT = "firebreak_exp/2"   # 2: the fire-flow channel in ha (1: in % of the tile's burnable cells)
REPLAY_SUFFIX = ".replay.npz"


class CheckpointError(ValueError):
    """A file that is missing, truncated, or not a firebreak_exp checkpoint."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (full disk, read-only folder); the previous one is intact."""


#: The replay buffer's per-transition arrays saved up to its size (the break masks are saved bit-packed).
TRANSITION_KEYS = tuple(k for k in ReplayBuffer.TRANSITION_ARRAYS if k != "fuel_breaks")


def _to_tensors(obj):
    """numpy arrays -> tensors, recursively, so that weights-only loading can read them."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_tensors(v) for v in obj)
    return obj


def _serialized(write) -> bytes:
    """What ``write(handle)`` writes, in memory: a failing disk then fails one plain write, never a
    half-written zip archive whose writer complains again when it is garbage-collected."""
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def _write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, flushed to disk; returns its path (removed again
    if anything fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())   # a full disk can refuse the data only now
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def replay_file(path: Path) -> Path:
    """The replay buffer file beside checkpoint ``path`` (``<name>.replay.npz``)."""
    return path.with_name(path.stem + REPLAY_SUFFIX)


def save_checkpoint(state: dict, path: os.PathLike) -> Path:
    """Write ``state`` (agent, replay, rng, counters, network) to ``path`` and its replay beside it.

    Both files are written completely before either replaces its previous version, so a write that fails
    (full disk, read-only folder) leaves the previous checkpoint at ``path`` whole and raises
    CheckpointWriteError naming the file.
    """
    path = Path(path)
    replay = {k: np.asarray(v) for k, v in state["replay"].items()}
    size = int(replay["size"])
    for key in TRANSITION_KEYS:
        replay[key] = replay[key][:size] if size < len(replay[key]) else replay[key]
    breaks = replay.pop("fuel_breaks")
    replay["fuel_breaks_packed"] = np.packbits(breaks[:size], axis=-1)
    replay["fuel_breaks_shape"] = np.array(breaks.shape)
    replay_path = replay_file(path)
    payload = {k: v for k, v in state.items() if k != "replay"}
    payload["replay_path"] = replay_path.name
    payload["format"] = CHECKPOINT_FORMAT
    files = {replay_path: _serialized(lambda handle: np.savez_compressed(handle, **replay)),
             path: _serialized(lambda handle: torch.save(_to_tensors(payload), handle))}
    written = []
    try:
        for target, data in files.items():
            written.append((_write_temporary(target, data), target))
        for tmp, final in written:
            target = final
            os.replace(tmp, final)
    except OSError as error:
        raise CheckpointWriteError(f"checkpoint {target} could not be written ({error.strerror or error}); "
                                   f"the run stops, the checkpoints already in {path.parent} are kept") from error
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: os.PathLike, with_replay: bool = True) -> dict:
    """Read a checkpoint (and its replay buffer); CheckpointError names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0][:160] if not isinstance(error, pickle.UnpicklingError) else \
            "not a file of tensors and plain values (checkpoints are read without unpickling objects)"
        raise CheckpointError(f"{path} is not a readable firebreak_exp checkpoint "
                              f"(truncated or another kind of file): {reason}") from error
    if isinstance(state, dict) and state.get("format") == "firebreak_exp/1":
        raise CheckpointError(f"{path} is a checkpoint of an older observation (fire flow in % of the tile's "
                              f"burnable cells, now in ha): its network would misread the flows; train it again")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a firebreak_exp checkpoint (no 'format': '{CHECKPOINT_FORMAT}')")
    if with_replay:
        replay_path = path.parent / state["replay_path"]
        try:
            with np.load(replay_path, allow_pickle=False) as data:
                replay = {k: data[k] for k in data.files}
        except Exception as error:
            raise CheckpointError(f"replay buffer {replay_path} of checkpoint {path} is unreadable: {error}") from error
        shape = tuple(replay.pop("fuel_breaks_shape"))
        packed = replay.pop("fuel_breaks_packed")
        size = int(replay["size"])
        breaks = np.zeros(shape, bool)
        breaks[:size] = np.unpackbits(packed, axis=-1, count=shape[-1]).astype(bool)
        replay["fuel_breaks"] = breaks
        for key in (k for k in TRANSITION_KEYS if k in replay):   # "expert" is absent from older checkpoints
            full = np.zeros((shape[0],) + replay[key].shape[1:], replay[key].dtype)
            full[:size] = replay[key][:size]
            replay[key] = full
        state["replay"] = replay
    return state
