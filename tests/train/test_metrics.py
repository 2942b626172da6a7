"""Run outputs: TensorBoard events that never hold training up and survive a kill."""

import errno
import struct
import threading
import time

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event

from lowrank_jax.train.metrics import TensorBoard


def _events(directory) -> list[Event]:
    """The scalar events of the one events file (TFRecord: length, crc, data, crc)."""
    (path,) = directory.glob("events.out.tfevents.*")
    data, events, at = path.read_bytes(), [], 0
    while at + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        events.append(Event.FromString(data[at + 12 : at + 12 + length]))
        at += 12 + length + 4
    return [e for e in events if e.summary.value]


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_each_record_is_on_disk_before_close(tmp_path):
    writer = TensorBoard(tmp_path)
    writer.add(10, {"loss": 1.5, "accuracy": 0.25})
    # flushed by the writer's thread, not at close: what a killed run keeps
    _wait_for(lambda: any(tmp_path.glob("events.*")) and len(_events(tmp_path)) == 2)
    writer.close()
    assert [(e.step, e.summary.value[0].tag) for e in _events(tmp_path)] == [
        (10, "loss"),
        (10, "accuracy"),
    ]


def test_a_write_error_turns_tensorboard_off_in_one_line(tmp_path, monkeypatch, capfd):
    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EventsWriter, "flush", full)
    writer = TensorBoard(tmp_path)
    writer.add(1, {"loss": 1.0})
    _wait_for(lambda: writer.failed)
    for step in range(2 * TensorBoard.BACKLOG):  # ignored, never blocks
        writer.add(step, {"loss": 1.0})
    writer.close()
    (line,) = capfd.readouterr().err.splitlines()
    assert line == (
        f"warning: TensorBoard is off: cannot write {tmp_path} (No space left on device); "
        "metrics.jsonl still has every record"
    )


def test_a_stalled_disk_never_blocks_training(tmp_path, monkeypatch):
    stalled, release = threading.Event(), threading.Event()
    write = EventsWriter.write_event

    def slow(self, event):
        if event.summary.value:
            stalled.set()
            release.wait()
        return write(self, event)

    monkeypatch.setattr(EventsWriter, "write_event", slow)
    writer = TensorBoard(tmp_path)
    writer.add(0, {"loss": 1.0})
    stalled.wait(10)
    start = time.perf_counter()
    for step in range(3 * TensorBoard.BACKLOG):  # a full backlog drops records
        writer.add(step, {"loss": 1.0})
    assert time.perf_counter() - start < 5  # not waiting on the disk
    release.set()
    writer.close()
    assert not writer.failed
