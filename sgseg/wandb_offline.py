"""Read an offline W&B run back from disk: its config, history rows, summary, group, tags and media files.

Where this sits: after a run, for tests and for a look without uploading. ``python -m sgseg.train`` writes
W&B runs offline (``<run dir>/wandb/offline-run-*/``, stage 1 under ``<run dir>/detector/wandb/``); the run's
data are in ``run-<id>.wandb``, a log of protobuf ``Record`` messages (``wandb.proto.wandb_internal_pb2``)
in W&B's variant of the LevelDB log format: a 7-byte file header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each ``crc32 (uint32 LE) | length (uint16 LE) | type (FULL 1, FIRST 2, MIDDLE 3,
LAST 4)`` + payload, the CRC being zlib's CRC-32 of the type byte then the payload. wandb 0.31 has no Python
reader of that file any more (its ``sdk.internal.datastore`` is gone) and writes no ``wandb-summary.json``
offline, hence this small one. ``wandb sync <dir>`` uploads the same files.

    python -m sgseg.wandb_offline RUN_DIR   # every offline run below RUN_DIR: name, group, keys
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # crc32, length, type
FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """A .wandb file that is not one, or is damaged."""


def iter_records(path: str | Path):
    """The payloads (serialised ``Record`` messages) of a .wandb file, in order; CRCs checked.

    A run that is still being written may end in a partial chunk; that tail is ignored.
    """
    data = Path(path).read_bytes()
    if data[: len(FILE_HEADER)] != FILE_HEADER:
        raise WandbFileError(
            f"{path}: not a W&B transaction log (header {data[:7]!r}, expected {FILE_HEADER!r})"
        )
    pos, pending = len(FILE_HEADER), None
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the writer pads a block's tail that cannot hold a chunk header
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if crc == 0 and length == 0 and kind == 0:  # zero padding up to the next block
            pos += left
            continue
        body = data[pos + HEADER : pos + HEADER + length]
        if len(body) < length:
            return  # a partial last chunk (run still writing)
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise WandbFileError(f"{path}: CRC mismatch in the chunk at byte {pos}; the file is damaged")
        pos += HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE and pending is not None:
            pending += body
        elif kind == LAST and pending is not None:
            yield pending + body
            pending = None
        else:
            raise WandbFileError(f"{path}: chunk of type {kind} at byte {pos - HEADER - length} out of order")


def _decode(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


def _key(item) -> str:
    return item.key or item.nested_key[0]


def _set(into: dict[str, Any], item) -> None:
    """``key`` = value, or for a ``nested_key`` (a media or table descriptor, logged one field per item:
    ``["val/predictions", "count"]``) the field inside the dict of its top-level key."""
    if item.key or len(item.nested_key) < 2:
        into[_key(item)] = _decode(item.value_json)
        return
    node = into
    for part in item.nested_key[:-1]:
        node = node.setdefault(part, {})
    node[item.nested_key[-1]] = _decode(item.value_json)


@dataclass
class OfflineRun:
    """What an offline run holds. ``history``: one dict per logged row (keys as logged, e.g.
    ``val/mR@50``; media as their W&B JSON descriptors); ``summary``: the last value of each key;
    ``config``: the run config (top-level keys, nested values); ``files``: the paths saved with the run."""

    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    finished: bool = False

    def history_keys(self) -> set[str]:
        return {k for row in self.history for k in row}

    def series(self, key: str) -> list[Any]:
        """The values of ``key`` in logging order (its curve)."""
        return [row[key] for row in self.history if key in row]


def wandb_file(path: str | Path) -> Path:
    """The ``run-*.wandb`` file of an offline run directory (or ``path`` itself when it is one)."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.glob("run-*.wandb"))
    if not found:
        raise FileNotFoundError(
            f"no run-*.wandb file in {path}; is it a W&B run directory (wandb/offline-run-*)?"
        )
    return found[-1]


def read_offline_run(path: str | Path) -> OfflineRun:
    """Parse an offline run directory (``.../wandb/offline-run-*``) or its ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    file = wandb_file(path)
    run = OfflineRun(path=file.parent)
    for payload in iter_records(file):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.project, run.tags = r.project, list(r.tags)
            for item in r.config.update:
                _set(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, item)
            for item in record.config.remove:
                run.config.pop(_key(item), None)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, item)
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.finished = True
    return run


def find_offline_runs(root: str | Path) -> list[Path]:
    """Every ``offline-run-*`` directory at or below ``root``, sorted by path."""
    root = Path(root)
    return sorted(p for p in root.rglob("offline-run-*") if p.is_dir() and any(p.glob("run-*.wandb")))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m sgseg.wandb_offline RUN_DIR", file=sys.stderr)
        return 2
    runs = find_offline_runs(argv[0])
    if not runs:
        print(f"no offline W&B runs below {argv[0]}", file=sys.stderr)
        return 1
    for path in runs:
        run = read_offline_run(path)
        keys = sorted(k for k in run.history_keys() if not k.startswith("_"))
        print(f"{path}\n  name {run.name}\n  group {run.group}  job_type {run.job_type}  tags {run.tags}")
        print(f"  {len(run.history)} history rows, {len(keys)} keys: {' '.join(keys)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
