"""A small TensorBoard scalar writer that imports neither PyTorch nor TensorFlow.

`torch.utils.tensorboard` and `tf.summary` both work, but the first imports TensorFlow when it is
installed (through `tensorboard.compat`) and the two do not mix in one process; both trainers
write the same event-file format with this instead. An event file is a sequence of TFRecords:

    uint64 length | uint32 masked_crc32c(length) | Event bytes | uint32 masked_crc32c(bytes)
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c


class SummaryWriter:
    """purge_step: the first step a resumed run logs again. TensorBoard then drops what the
    interrupted run logged from that step on (a SessionLog START event, as torch's
    `SummaryWriter(purge_step=...)` writes), so resumed curves have no doubled stretch."""

    def __init__(self, directory, purge_step: int | None = None):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.sftrl"
        self._file = open(directory / name, "ab")
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(event_pb2.Event(wall_time=time.time(), step=int(purge_step),
                                        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

    def _write(self, event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", masked_crc32c(header)) + data
                         + struct.pack("<I", masked_crc32c(data)))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
