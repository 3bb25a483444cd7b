"""``<Record>``: one caller's voice to a file, outside any conference (voicemail, a message).

The call's leg sits in its own solo mixer room while it is in no conference, so a tap on that
room is the caller's voice alone; it is read every 0.1 s and written in a worker thread, as a
room's recording is. It ends on a finish key (the caller's keypad, every source), after
``timeout`` seconds below the silence level, or at ``maxLength``. If the caller hangs up
meanwhile the file is closed and reported to the action and callback here (the flow is gone).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import numpy as np
import trio

from sipconf.core.answer import Record
from sipconf.core.callmessages import Recorded
from sipconf.media import recording
from sipconf.room_recording import transcribe

if TYPE_CHECKING:
    from sipconf.calls import CallSession
    from sipconf.node import Node

log = logging.getLogger("sipconf.node")

READ_S = 0.1
SILENCE_RMS = 180  # about -45 dBFS: below it, a 100 ms block counts as silence


async def record_call(node: Node, s: CallSession, verb: Record, beep) -> Recorded:
    """Record the caller (``beep``: an async callable playing the beep first, or None)."""
    if beep is not None:
        await beep()
    tap = None
    for _ in range(40):  # the solo room exists once the call's media is up
        tap = await node.engine.tap_room(f"solo:{s.uuid}")
        if tap is not None:
            break
        await trio.sleep(0.05)
    if tap is None:
        log.error("call %s: <Record>: the call has no media to record", s.uuid)
        return Recorded({}, "failed")
    rec = recording.Recording.create(node.recordings_dir, verb.file_format)
    params = {"RecordUrl": f"{node.config.base_url}/recordings/{rec.filename}",
              "RecordingID": rec.recording_id}
    reason = "max-length"
    log.info("call %s: <Record> %s (%s, up to %d s)", s.uuid, rec.recording_id,
             verb.file_format, verb.max_length)
    try:
        with trio.move_on_after(verb.max_length):
            quiet_since = trio.current_time()
            while True:
                await trio.sleep(READ_S)
                with trio.CancelScope(shield=True):  # what is read is written whole
                    pcm = tap.read()
                    if len(pcm):
                        await trio.to_thread.run_sync(rec.write, pcm)
                now = trio.current_time()
                if len(pcm) and np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) >= SILENCE_RMS:
                    quiet_since = now
                elif now - quiet_since >= verb.timeout:
                    reason = "silence"
                    break
                key = _finish_key(s, verb.finish_on_key)
                if key:
                    reason, params["Digits"] = "key", key
                    break
    finally:
        with trio.CancelScope(shield=True):
            await node.engine.untap(tap)
            pcm = tap.read()
            if len(pcm):
                await trio.to_thread.run_sync(rec.write, pcm)
            await trio.to_thread.run_sync(rec.close)
            params.update(rec.timing())
            if verb.transcription_url and node.nursery is not None:
                node.nursery.start_soon(functools.partial(
                    node.faults.guard, "transcription", transcribe, node, s.uuid,
                    verb.transcription_url, verb.transcription_method, rec,
                    call_uuid=s.uuid))
            if s.ended:  # the caller hung up: the flow cannot report it any more
                _report_after_hangup(node, s, verb, params)
    return Recorded(params, reason)


def _finish_key(s: CallSession, keys: str) -> str:
    """A key among ``keys`` the caller pressed since the last look ('' if none); other
    keys are dropped, as Plivo's Record does."""
    pad = s.keypad
    while pad is not None and pad.pressed:
        digit = pad.pressed.popleft().digit
        if digit in keys:
            return digit
    return ""


def _report_after_hangup(node: Node, s: CallSession, verb: Record,
                         params: dict[str, str]) -> None:
    out = {**s.params("completed"), **params}
    log.info("call %s: <Record> ended by the hang-up, %s ms", s.uuid,
             params.get("RecordingDurationMs"))
    for url, method in ((verb.callback_url, verb.callback_method),
                        (verb.action, verb.method)):
        if url:
            node.webhooks.submit(s.uuid, url, method, out)
