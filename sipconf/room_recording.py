"""Recording a room run's mix (the XML's ``record``, or the control API) and transcribing it.

The mixer's tap is read every 0.25 s and written in a worker thread until the run ends or the
recording is stopped; then the owner's ``record`` event and, if asked, the transcription
(pocketsphinx in its own process), which goes out through the webhook worker.

With tracks (the control API's ``"tracks": true``), each member also gets a file of its own
voice: the tap keeps one ring per member, fed every tick with the mix, so sample i of every
track is sample i of the mix (a member who joins late starts with silence, one who leaves ends
with it); the files are listed in ``RecordTracks`` (JSON: member_id, call_uuid, RecordUrl,
RecordingID).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import TYPE_CHECKING

import numpy as np
import trio

from sipconf.core import room as roomstate
from sipconf.media import recording

MAX_TRACKS = 20  # members recorded apart in one run (a room holds 20 callers)

if TYPE_CHECKING:
    from sipconf.node import Node
    from sipconf.rooms import RoomRun, RoomRuns

log = logging.getLogger("sipconf.node")


def start(runs: RoomRuns, run: RoomRun, fmt: str,
          owner: roomstate.Member | None = None, tracks: bool = False) -> bool:
    """Record the run from now (the XML's record, or the control API); ``owner`` gets
    the record event. One recording at a time."""
    if run.recording is not None or run.closed or run.ended.is_set():
        return False
    run.record_tracks = tracks
    run.recording = recording.Recording.create(runs.node.recordings_dir, fmt)
    run.record_params = {
        "RecordUrl": f"{runs.node.config.base_url}/recordings/{run.recording.filename}",
        "RecordingID": run.recording.recording_id}
    run.record_scope = trio.CancelScope()
    runs.spawn(run, "recording", _record, runs, run, owner, run.record_scope)
    return True


async def _record(runs: RoomRuns, run: RoomRun, owner: roomstate.Member | None,
                  scope: trio.CancelScope) -> None:
    """Record the run's mix from the mixer's tap until the run ends; then the record
    callback and, if asked, the transcription. File writes happen in a worker thread."""
    rec = run.recording
    tracks = _Tracks(runs, run, rec.fmt) if run.record_tracks else None
    tap = None
    for _ in range(40):  # the mixer room appears with the first leg placed in it
        tap = await runs.node.engine.tap_room(run.key, MAX_TRACKS if tracks else 0)
        if tap is not None:
            break
        await trio.sleep(0.05)
    if tap is None:
        log.error("room %s: no mixer to record", run.state.name)
        return
    log.info("room %s: recording %s (%s)", run.state.name, rec.recording_id, rec.fmt)
    try:
        with scope:  # cancelled by stop_recording, or with the run
            while True:
                await trio.sleep(0.25)
                # what is read from the tap is written whole: a stop arriving mid-way must
                # not drop samples already taken from the rings (nor leave tracks unequal)
                with trio.CancelScope(shield=True):
                    pcm = tap.read()
                    if len(pcm):
                        await trio.to_thread.run_sync(rec.write, pcm)
                    if tracks is not None:
                        await tracks.drain(tap)
    finally:
        with trio.CancelScope(shield=True):
            await runs.node.engine.untap(tap)
            pcm = tap.read()
            if len(pcm):
                await trio.to_thread.run_sync(rec.write, pcm)
            await trio.to_thread.run_sync(rec.close)
            if tracks is not None:
                await tracks.drain(tap)
                await tracks.close()
            if tap.dropped:
                log.warning("recording %s: %d samples dropped", rec.recording_id,
                            tap.dropped)
            _recorded(runs, run, owner, rec)


class _Tracks:
    """The per-member files of one recording: a slot's samples go to its member's file,
    created (with the silence the slot held before it) when the slot first names a leg."""

    def __init__(self, runs: RoomRuns, run: RoomRun, fmt: str):
        self.runs, self.run, self.fmt = runs, run, fmt
        self.files: dict[int, recording.Recording] = {}  # slot -> file
        self.read: dict[int, int] = {}  # slot -> samples read while it had no leg
        self.unnamed: set[int] = set()  # slots whose leg left before it could be named
        self.listed: list[dict[str, str]] = []

    async def drain(self, tap) -> None:
        for slot, (leg_id, pcm) in enumerate(tap.read_tracks()):
            if not leg_id:
                self.read[slot] = self.read.get(slot, 0) + len(pcm)
                continue
            f = self.files.get(slot)
            if f is None:
                if slot in self.unnamed:
                    continue
                f = await self._open(slot, leg_id)
                if f is None:
                    continue
            if len(pcm):
                await trio.to_thread.run_sync(f.write, pcm)

    async def _open(self, slot: int, leg_id: int) -> recording.Recording | None:
        legs = (await self.runs.node.engine.stats())["legs"]
        uuid = next((u for u, st in legs.items() if st.get("id") == leg_id), None)
        member = self.run.state.members.get(uuid) if uuid else None
        if member is None:  # gone before it could be named: its voice is in the mix only
            self.unnamed.add(slot)
            return None
        f = recording.Recording.create(self.runs.node.recordings_dir, self.fmt)
        self.files[slot] = f
        lead = self.read.pop(slot, 0)
        if lead:
            await trio.to_thread.run_sync(f.write, np.zeros(lead, np.int16))
        self.listed.append({
            "member_id": member.member_id, "call_uuid": member.call_uuid,
            "RecordUrl": f"{self.runs.node.config.base_url}/recordings/{f.filename}",
            "RecordingID": f.recording_id})
        self.run.record_params["RecordTracks"] = json.dumps(self.listed)
        log.info("room %s: member %s recorded apart as %s", self.run.state.name,
                 member.member_id, f.recording_id)
        return f

    async def close(self) -> None:
        for f in self.files.values():
            await trio.to_thread.run_sync(f.close)


def _recorded(runs: RoomRuns, run: RoomRun, owner: roomstate.Member | None,
              rec: recording.Recording) -> None:
    log.info("room %s: recording %s complete, %.1f s", run.state.name, rec.recording_id,
             rec.duration_ms / 1000)
    if run.recording is rec:
        run.recording = None
    if owner is None:
        return
    runs.callback(run, owner, "record", **run.record_params, **rec.timing())
    conf = owner.conference
    if conf.transcription_url and runs.node.nursery is not None:
        runs.node.nursery.start_soon(functools.partial(
            runs.node.faults.guard, "transcription", transcribe, runs.node, owner.call_uuid,
            conf.transcription_url, conf.transcription_method, rec,
            call_uuid=owner.call_uuid, room=run.state.name))


async def transcribe(node: Node, call_uuid: str, url: str, method: str,
                     rec: recording.Recording) -> None:
    """pocketsphinx in its own process; the result goes out through the webhook worker."""
    try:
        proc = await trio.run_process(
            [sys.executable, "-m", "sipconf.media.transcribe", str(rec.path)],
            capture_stdout=True, capture_stderr=True, check=False)
        out = json.loads(proc.stdout.decode() or "{}")
    except (OSError, ValueError) as exc:
        out = {"error": f"transcriber failed: {exc}"}
    node.webhooks.submit(call_uuid, url, method, {
        "transcription": out.get("text", ""),
        "duration": str(out.get("duration", rec.duration_ms / 1000)),
        "call_uuid": call_uuid,
        "recording_id": rec.recording_id,
        "error": out.get("error", ""),
        "transcription_charge": "0",
        "transcription_rate": "0",
    })
