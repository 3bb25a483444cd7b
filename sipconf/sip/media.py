"""Where each call's audio goes: mixer rooms, legs, overlays, room sounds, taps, digit tones.

Everything here runs on the SIP thread, against ``mixer_ext.streams`` (imported there, after
pjsua is up, and handed in). A call's leg always sits in a mixer room: its conference room, or
its own silent ``solo:<uuid>`` room, so a caller outside any conference still gets RTP and can be
played sounds. What the mixer's ticks detect (in-band digits, who holds the floor) comes back
through :meth:`Media.poll_events` as engine events.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sipconf.engine import Dtmf, Emit, Floor, MediaError, Talk
from sipconf.media.tones import relay_tones
from sipconf.sip.records import CallRec, MixRoomRec

log = logging.getLogger("sipconf.sip")

FREE_DELAY_S = 2.0  # a detached leg is released this long after its stream went away
ROOM_RATE = 16000  # the mixer rooms' rate: room sounds are rendered at it
Q12 = 4096  # the mixer's unity gain (mixcore.h MIX_GAIN_UNITY)


def q12(db: float) -> int:
    """A gain in dB as the mixer's Q12 factor."""
    return max(0, min(32767, round(Q12 * 10 ** (db / 20))))


class Media:
    """The mixer side of the SIP thread: rooms by key, and which leg/room id is whose."""

    def __init__(self, streams: Any, emit: Emit, calls: dict[str, CallRec] | None = None):
        self.streams = streams  # mixer_ext.streams
        self._emit = emit
        self._calls = calls if calls is not None else {}  # the SIP thread's calls (coaches)
        self.rooms: dict[str, MixRoomRec] = {}
        self._graveyard: list[tuple[float, Any]] = []  # (detached at, leg) waiting to be freed
        self._sounds: dict[int, tuple[Any, str]] = {}  # room sound id -> (Source, room key)
        self._next_sound = 0
        self._leg_calls: dict[int, str] = {}  # mixer leg id -> call uuid
        self._room_keys: dict[int, str] = {}  # mixer room id -> room key

    def flags(self, muted: bool, deaf: bool, private: bool = False, gate: bool = False,
              agc: bool = False) -> int:
        return ((self.streams.MUTED if muted else 0) | (self.streams.DEAF if deaf else 0)
                | (self.streams.PRIVATE if private else 0) | (self.streams.GATE if gate else 0)
                | (self.streams.AGC if agc else 0))

    # --- legs ------------------------------------------------------------------------------

    def new_leg(self, rec: CallRec, stream: int) -> Any:
        """A mixer leg for the call's new pjmedia stream; None (and a MediaError event) if the
        mixer cannot drive it."""
        try:
            return self.streams.Leg(stream)
        except self.streams.StreamError as exc:
            log.error("call %s: media not mixable: %s", rec.uuid, exc)
            self._emit(MediaError(rec.uuid, str(exc)))
            return None

    def attach(self, rec: CallRec, leg: Any) -> None:
        """Make ``leg`` the call's (replacing an older one) and put it where the call belongs."""
        if rec.leg is not None:
            self.detach(rec)
        rec.leg = leg
        self._leg_calls[leg.id] = rec.uuid
        if rec.pipe is not None and not rec.agent:  # a new stream (re-INVITE): same <Stream>
            try:
                rec.pipe.attach(leg)
            except ValueError:  # another rate now: the stream's app hears no more of it
                log.warning("call %s: the stream's pipe cannot follow the new media (%d Hz)",
                            rec.uuid, leg.rate)
        self.place(rec)

    def pipe(self, rec: CallRec, want: int) -> Any:
        """A pipe on the call's leg (a <Stream>): what it says/hears up, audio to it down;
        None if the call has no media (yet) or a pipe already."""
        if rec.leg is None or rec.pipe is not None:
            return None
        pipe = self.streams.Pipe(rec.leg.rate, want)
        pipe.attach(rec.leg)
        rec.pipe = pipe
        return pipe

    def unpipe(self, rec: CallRec) -> None:
        if rec.pipe is not None:
            rec.pipe.detach()
            rec.pipe = None

    def add_agent(self, uuid: str) -> Any:
        """An AI agent member: a leg with no call whose pipe is its voice and ears (16 kHz),
        placed in its own solo room until it joins one; its CallRec has no pjsua2 Call."""
        leg = self.streams.Agent(16000)
        pipe = self.streams.Pipe(16000, self.streams.OUT)
        pipe.attach(leg)
        rec = CallRec(uuid=uuid, call=None, answered=True, agent=True, rfc2833=False)
        rec.pipe = pipe
        self._calls[uuid] = rec
        self.attach(rec, leg)
        return pipe

    def detach(self, rec: CallRec) -> None:
        """Take the call's stream out of the mixer before pjsua can destroy it."""
        if rec.leg is not None:
            self._leg_calls.pop(rec.leg.id, None)
            rec.leg.leave()
            self._graveyard.append((time.monotonic(), rec.leg))
            rec.leg = None

    def reap(self) -> None:
        """Free the legs detached at least FREE_DELAY_S ago."""
        if self._graveyard:
            now = time.monotonic()
            keep = []
            for t, leg in self._graveyard:
                if now - t >= FREE_DELAY_S:
                    leg.free()
                else:
                    keep.append((t, leg))
            self._graveyard = keep

    # --- placement -------------------------------------------------------------------------

    def _room_for(self, key: str) -> MixRoomRec:
        rr = self.rooms.get(key)
        if rr is None:
            rr = self.rooms[key] = MixRoomRec(mix=self.streams.MixRoom())
            self._room_keys[rr.mix.id] = key
        return rr

    def _release_room(self, key: str, call_uuid: str) -> None:
        rr = self.rooms.get(key)
        if rr is None:
            return
        rr.members.discard(call_uuid)
        if not rr.members:
            for sid in list(rr.sources):
                self.stop_room_sound(sid)
            self._room_keys.pop(rr.mix.id, None)
            rr.mix.destroy()
            del self.rooms[key]

    def place(self, rec: CallRec) -> None:
        """Put the call's leg where it belongs: its conference room, or its own solo room (so
        a caller who is not in a conference still gets RTP, and can be played sounds)."""
        key = rec.room_key or f"solo:{rec.uuid}"
        if rec.mix_key != key:
            if rec.mix_key is not None:
                if rec.leg is not None:
                    rec.leg.leave()
                self._release_room(rec.mix_key, rec.uuid)
            rec.mix_key = key
            self._room_for(key).members.add(rec.uuid)
        if rec.leg is None:
            return
        rec.leg.set_flags(rec.flags)
        rec.leg.set_gain(*rec.gains)
        self._relate(rec)
        if rec.overlay is not None:
            clip, loops = rec.overlay
            rec.leg.play(clip.at_rate(rec.leg.rate), loops)
        else:
            rec.leg.stop()
        self.rooms[key].mix.add(rec.leg)
        self._relate(rec)

    def unplace(self, rec: CallRec) -> None:
        if rec.mix_key is not None:
            if rec.leg is not None:
                rec.leg.leave()
            self._release_room(rec.mix_key, rec.uuid)
            rec.mix_key = None

    def join(self, rec: CallRec, room_key: str, muted: bool, deaf: bool) -> None:
        rec.room_key = room_key
        rec.flags = self.flags(muted, deaf, rec.private)
        self.place(rec)

    def leave(self, rec: CallRec) -> None:
        rec.room_key = None
        rec.flags = 0
        rec.gains = (Q12, Q12)
        rec.private, rec.coach_of = False, None
        rec.overlay = None
        self.place(rec)

    def set_member(self, rec: CallRec, muted: bool, deaf: bool, volume_in: float = 0.0,
                   volume_out: float = 0.0, denoise: bool = False, agc: bool = False) -> None:
        rec.flags = self.flags(muted, deaf, rec.private, denoise and not rec.agent, agc)
        rec.gains = (q12(volume_in), q12(volume_out))
        if rec.leg is not None:
            rec.leg.set_flags(rec.flags)
            rec.leg.set_gain(*rec.gains)

    def set_coach(self, rec: CallRec, private: bool, target: str | None) -> None:
        """The call coaches ``target`` (heard by it alone) or, ``private`` without a target,
        is heard by nobody; neither: an ordinary member again."""
        old = self._calls.get(rec.coach_of) if rec.coach_of else None
        if old is not None and old.leg is not None and rec.leg is not None:
            old.leg.relate(rec.leg, False)
        rec.private, rec.coach_of = private, target if private else None
        priv = self.streams.PRIVATE
        rec.flags = (rec.flags | priv) if private else (rec.flags & ~priv)
        if rec.leg is not None:
            rec.leg.set_flags(rec.flags)
            self._relate(rec)

    def _relate(self, rec: CallRec) -> None:
        """Coaching relations of a placed leg, both ways, with members of its mixer room
        (the mixer forgets them when a leg leaves a room)."""
        if rec.leg is None or rec.mix_key is None:
            return
        target = self._calls.get(rec.coach_of) if rec.coach_of else None
        if target is not None and target.leg is not None and target.mix_key == rec.mix_key:
            target.leg.relate(rec.leg, True)
        for other in self._calls.values():
            if other.coach_of == rec.uuid and other.leg is not None \
                    and other.mix_key == rec.mix_key:
                rec.leg.relate(other.leg, True)

    # --- sounds, tones, taps ---------------------------------------------------------------

    def play_to_call(self, rec: CallRec, clip: Any, loops: int) -> None:
        """Play ``clip`` to this caller alone (None: stop what plays)."""
        rec.overlay = (clip, loops) if clip is not None else None
        if rec.leg is not None:
            if clip is None:
                rec.leg.stop()
            else:
                rec.leg.play(clip.at_rate(rec.leg.rate), loops)

    def relay_tones(self, rec: CallRec, digits: str) -> None:
        """Play ``digits`` to the caller as in-band tone pairs (never over a clip it hears)."""
        if rec.overlay is None:
            rec.leg.play(relay_tones(digits, rec.leg.rate), 1)

    def play_to_room(self, room_key: str, clip: Any, loops: int) -> int | None:
        rr = self.rooms.get(room_key)
        if rr is None:
            return None
        src = self.streams.Source(ROOM_RATE)
        src.play(clip.at_rate(ROOM_RATE), loops)
        try:
            rr.mix.add(src)
        except ValueError as exc:  # the mixer room is full
            log.warning("room %s: sound not mixed: %s", room_key, exc)
            src.free()
            return None
        self._next_sound += 1
        self._sounds[self._next_sound] = (src, room_key)
        rr.sources.add(self._next_sound)
        return self._next_sound

    def stop_room_sound(self, sound_id: int) -> bool:
        entry = self._sounds.pop(sound_id, None)
        if entry is None:
            return False
        src, key = entry
        src.leave()
        src.free()
        rr = self.rooms.get(key)
        if rr is not None:
            rr.sources.discard(sound_id)
        return True

    def tap_room(self, room_key: str, tracks: int = 0) -> Any:
        """A tap on the room's mix; with ``tracks``, that many per-member tracks too."""
        rr = self.rooms.get(room_key)
        if rr is None:
            return None
        tap = self.streams.Tap(5 if tracks else 10, tracks)
        tap.attach(rr.mix)
        return tap

    # --- what the ticks saw, figures, teardown ---------------------------------------------

    def poll_events(self) -> None:
        """What the mixer ticks detected: in-band digits, floor and talk changes, as events."""
        streams = self.streams
        for kind, leg_id, digit, room_id in streams.poll_events():
            call_uuid = self._leg_calls.get(leg_id)
            if call_uuid is None:
                continue
            if kind == streams.DIGIT:
                self._emit(Dtmf(call_uuid, digit, "inband", time.monotonic()))
            elif kind in (streams.FLOOR, streams.TALK):
                key = self._room_keys.get(room_id)
                if key is None or key.startswith("solo:"):
                    continue
                if kind == streams.FLOOR:
                    self._emit(Floor(key, call_uuid))
                else:
                    self._emit(Talk(key, call_uuid, digit == "T", time.monotonic()))

    def stats(self, calls: dict[str, CallRec]) -> dict:
        return {"rooms": {k: rr.mix.stats() for k, rr in self.rooms.items()},
                "legs": {u: r.leg.stats() for u, r in calls.items() if r.leg is not None},
                "clock": self.streams.clock_stats()}

    def destroy(self) -> None:
        """Free every sound and room, stop the clocks, free the detached legs (the calls'
        legs must have been detached first)."""
        for src, _ in self._sounds.values():
            src.free()
        self._sounds.clear()
        for rr in self.rooms.values():
            rr.mix.destroy()
        self.rooms.clear()
        self.streams.stop()
        for _, leg in self._graveyard:
            leg.free()
        self._graveyard.clear()
