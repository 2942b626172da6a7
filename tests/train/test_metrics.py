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
    stalled, release, returned = threading.Event(), threading.Event(), threading.Event()
    write, written = EventsWriter.write_event, []

    def stall(self, event):  # the disk answers only once every add below has returned
        if event.summary.value:
            stalled.set()
            release.wait()
            written.append(event.step)
        return write(self, event)

    monkeypatch.setattr(EventsWriter, "write_event", stall)
    writer = TensorBoard(tmp_path)
    writer.add(0, {"loss": 1.0})
    assert stalled.wait(30)  # the writer's thread holds record 0, blocked on the disk
    seen = {}

    def training():  # in a thread, so that an add that blocks fails the test, not hangs it
        for step in range(1, 3 * TensorBoard.BACKLOG + 1):  # a full backlog drops records
            writer.add(step, {"loss": 1.0})
        seen.update(
            released=release.is_set(), written=list(written), alive=writer.thread.is_alive()
        )
        returned.set()

    threading.Thread(target=training, daemon=True).start()
    finished = returned.wait(30)  # bounds a wait for the adds, not their speed
    release.set()
    assert finished, "add waited for the stalled disk"
    # every add returned while the writer's thread was still blocked on record 0
    assert seen == {"released": False, "written": [], "alive": True}
    writer.close()
    assert not writer.failed and not writer.thread.is_alive()
    # then the writer drained: record 0 and the BACKLOG records queued behind it, in order
    expected = list(range(TensorBoard.BACKLOG + 1))
    assert written == expected and [e.step for e in _events(tmp_path)] == expected
