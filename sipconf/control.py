"""The node's side of the control API (``sipconf/http/api.py``): room and member queries and
commands, metrics, dead letters. :class:`Control` implements the API's ``Controls`` protocol
over a node's calls, room runs, engine and webhook worker.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from sipconf import agents
from sipconf.core import room as roomstate
from sipconf.core.answer import LANGUAGE_RE, MAX_VOICE_NAME
from sipconf.core.urls import BadUrl, check_url
from sipconf.engine import EngineError
from sipconf.http.metrics import render
from sipconf.media import recording
from sipconf.media.sounds import SoundError, SoundLimit

if TYPE_CHECKING:
    from sipconf.node import Node
    from sipconf.rooms import RoomRun

log = logging.getLogger("sipconf.node")


def _media(st: dict | None) -> dict | None:
    """A member's RTP and jitter buffer figures, as the member list shows them."""
    if st is None:  # an agent, or a call without a stream
        return None
    return {"packets": st["rx_packets"], "lost": st["rx_lost"],
            "jitter_ms": round(st["jitter_s"] * 1000, 1), "concealed": st["concealed"],
            "jb_discarded": st["jb_discarded"], "jb_empty": st["jb_empty"],
            "jb_delay_ms": round(st["jb_delay_s"] * 1000, 1),
            "jb_playout_ms": _ms(st.get("playout_s")), "jb_target_ms": _ms(st.get("target_s")),
            "jb_steps": st.get("delay_steps"),
            "sent_lost": st.get("peer_lost"), "fec_pct": st.get("fec_pct"),
            "fec_recovered": st.get("fec_recovered")}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class Control:
    """What the control API may see and do (``http.api.Controls``)."""

    def __init__(self, node: Node):
        self.node = node

    def health(self) -> str | None:
        return self.node.health()

    async def rooms_info(self) -> list[dict]:
        legs = (await self.node.engine.stats())["legs"]
        return [self._room_dict(run, legs) for run in list(self.node.rooms.values())]

    async def room_info(self, name: str) -> dict | None:
        run = self.node.rooms.get(name)
        if run is None:
            return None
        st = await self.node.engine.stats(rtp=True)
        return self._room_dict(run, st["legs"], st.get("rtp", {}))

    def _room_dict(self, run: RoomRun, legs: dict, rtp: dict | None = None) -> dict:
        """The room and its members; with ``rtp`` (one room's listing), each member's media
        figures too: what its line loses and how its jitter buffer copes."""
        now_wall, now = time.time(), trio.current_time()
        members = []
        coached = {m.call_uuid: m.member_id for m in run.state.members.values()}
        for m in run.state.members.values():
            s = self.node.calls.get(m.call_uuid)
            members.append({
                "member_id": m.member_id, "call_uuid": m.call_uuid,
                "from": s.incoming.from_uri if s else "",
                "to": s.incoming.to_user if s else "",
                "caller_name": s.incoming.caller_name if s else "", "muted": m.muted,
                "agent": bool(s and s.agent),
                "deaf": m.deaf, "held": m.held, "coach": m.coach,
                "coaching": coached.get(m.coaching),
                "volume_in": m.volume_in,
                "denoise": self.node.room_runs.denoised(m),
                "agc": self.node.room_runs.leveled(m),
                "volume_out": m.volume_out, "waiting": m.waiting,
                "talking": legs.get(m.call_uuid, {}).get("talking", False),
                "floor": run.floor == m.call_uuid,
                "joined_at": round(now_wall - (now - m.joined_at), 3)})
            if rtp is not None:
                members[-1]["media"] = _media(rtp.get(m.call_uuid))
        started = run.state.started_at
        return {"name": run.state.name, "uuid": run.key, "members": members,
                "started_at": round(now_wall - (now - started), 3) if started is not None
                else None}

    def _member(self, room: str, member_id: str) -> tuple[Any, Any]:
        """(the room's run, the member), or (None, None)."""
        run = self.node.rooms.get(room)
        member = next((m for m in run.state.members.values() if m.member_id == member_id),
                      None) if run else None
        return (run, member) if member is not None else (None, None)

    async def member_action(self, room: str, member_id: str, action: str,
                            music: str = "") -> bool:
        run, member = self._member(room, member_id)
        if member is None:
            return False
        log.info("control API: %s member %s of room %s", action, member_id, room)
        uuid = member.call_uuid
        if action == "hangup":
            return await self.node.engine.hangup(uuid)
        if action == "kick":
            self.node.room_runs.apply(run, run.state.leave(uuid, roomstate.KICKED))
        elif action in ("hold", "unhold"):
            self.node.room_runs.apply(run, run.state.hold(uuid, action == "hold", music))
        else:
            flag = {"mute": ("muted", True), "unmute": ("muted", False),
                    "deaf": ("deaf", True), "undeaf": ("deaf", False),
                    "denoise": ("denoise", True), "undenoise": ("denoise", False),
                    "agc": ("agc", True), "unagc": ("agc", False)}[action]
            self.node.room_runs.apply(run, run.state.control(uuid, **{flag[0]: flag[1]}))
        return True

    async def member_coach(self, room: str, member_id: str, target: str | None) -> int:
        """200, 404 (no such room, member or target) or 409 (the target's coaches are
        full)."""
        run, member = self._member(room, member_id)
        if member is None:
            return 404
        target_uuid = None
        if target is not None:
            _run, coached = self._member(room, target)
            if coached is None:
                return 404
            target_uuid = coached.call_uuid
        log.info("control API: member %s of room %s coaches %s", member_id, room,
                 target or "no one")
        events = run.state.coach(member.call_uuid, target_uuid)
        if events is None:
            return 409
        self.node.room_runs.apply(run, events)
        return 200

    async def member_volume(self, room: str, member_id: str, volume_in: float | None,
                            volume_out: float | None) -> bool:
        run, member = self._member(room, member_id)
        if member is None:
            return False
        log.info("control API: volume of member %s of room %s: in %s, out %s", member_id,
                 room, volume_in, volume_out)
        self.node.room_runs.apply(run, run.state.control(
            member.call_uuid, volume_in=volume_in, volume_out=volume_out))
        return True

    async def metrics_text(self) -> str:
        w = self.node.webhooks
        try:
            engine = await self.node.engine.stats(rtp=True)
        except EngineError as exc:  # a broken engine: the node's own figures still count
            log.warning("metrics without engine figures: %s", exc)
            engine = {"rtp": {}}
        rooms = {m.call_uuid: run.state.name for run in self.node.rooms.values()
                 for m in run.state.members.values()}
        for uuid, st in engine.get("rtp", {}).items():
            st["room"] = rooms.get(uuid, "")
        return render(self.node.metrics, calls=len(self.node.calls), rooms=len(self.node.rooms),
                      legs=sum(len(r.state.members) for r in self.node.rooms.values()),
                      engine=engine,
                      webhooks={"depth": w.depth, "delivered": w.delivered,
                                "retries": w.retries, "failed": w.failed,
                                "dead_letters": w.spool.dead_count()},
                      faults=self.node.faults, dials=self.node.dials.outcomes)

    def dead_letters(self, limit: int = 100) -> list[dict]:
        return self.node.webhooks.spool.dead_letters(limit)

    def forget_dead_letter(self, dead_id: int) -> bool:
        return self.node.webhooks.spool.forget_dead(dead_id)

    async def room_command(self, room: str, command: str, body: dict) -> dict | None:
        """Control API room commands: play, speak, record/start, record/stop. None: no room.
        A reply with ``ok`` False carries ``error`` and the HTTP ``status`` (400 or 409)."""
        run = self.node.rooms.get(room)
        if run is None:
            return None
        target = None
        if body.get("member_id") is not None:
            target = next((m for m in run.state.members.values()
                           if m.member_id == str(body["member_id"])), None)
            if target is None:
                return None
        if command in ("play", "speak"):
            return await self._api_sound(run, command, body,
                                         [target] if target is not None else None)
        if command == "record/start":
            owner = next((m for m in run.state.members.values() if m.conference.callback_url),
                         None)
            fmt = body.get("format", "mp3")
            if not isinstance(fmt, str) or fmt not in recording.FORMATS:
                return {"ok": False, "error": "format must be mp3 or wav", "status": 400}
            tracks = body.get("tracks", False)
            if not isinstance(tracks, bool):
                return {"ok": False, "error": "tracks must be true or false", "status": 400}
            ok = self.node.room_runs.start_recording(run, fmt, owner, tracks)
            return {"ok": ok, **(run.record_params if ok else
                                 {"error": "already recording", "status": 409})}
        if command == "record/stop":
            if run.recording is None:
                return {"ok": False, "error": "not recording", "status": 409}
            params = dict(run.record_params)
            run.record_scope.cancel()
            return {"ok": True, **params}
        return None

    async def members_sound(self, room: str, command: str, body: dict,
                            member_ids: list[str]) -> dict | None:
        """play/speak (``body`` as for ``room_command``) to each of several members, each in
        its own overlay (the Plivo-shaped API's ``Member/1,2/Play/``); None: no such room or
        one of the members is not in it (then nothing is played)."""
        run = self.node.rooms.get(room)
        if run is None or command not in ("play", "speak"):
            return None
        by_id = {m.member_id: m for m in run.state.members.values()}
        if not member_ids or any(i not in by_id for i in member_ids):
            return None
        return await self._api_sound(run, command, body, [by_id[i] for i in member_ids])

    def stop_member_sounds(self, room: str, member_ids: list[str]) -> bool:
        """Stop the API sounds (play or speak: a member has one overlay) playing to these
        members; a waiting member's music comes back. False: no such room or member."""
        run = self.node.rooms.get(room)
        if run is None:
            return False
        by_id = {m.member_id: m for m in run.state.members.values()}
        if not member_ids or any(i not in by_id for i in member_ids):
            return False
        for i in member_ids:
            for scope in list(run.clips.get(by_id[i].call_uuid, ())):
                scope.cancel()  # clip_to_member takes the sound off and brings music back
        return True

    async def _api_sound(self, run: RoomRun, command: str, body: dict,
                         targets: list[roomstate.Member] | None) -> dict:
        """play/speak from the API: the body is checked like a document, the room's sound
        limit is kept (409 past it), the sound fetched or rendered, then played to the room
        (``targets`` None) or to each target member alone."""
        try:
            if command == "play":
                url = check_url(body.get("url"))
            else:
                text, voice = body.get("text"), body.get("voice", "WOMAN")
                language = body.get("language", "en-US")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("text must be a non-empty string")
                if len(text) > self.node.config.max_speak_chars:
                    raise ValueError(f"text longer than {self.node.config.max_speak_chars} "
                                     "characters (max_speak_chars)")
                if not isinstance(voice, str) or not voice.strip() \
                        or len(voice) > MAX_VOICE_NAME:
                    raise ValueError("voice must be WOMAN, MAN or a Plivo voice name such as "
                                     f"Polly.Joanna (at most {MAX_VOICE_NAME} characters)")
                voice = voice.strip()  # WOMAN/MAN/Polly.* mapped to espeak-ng (core.voices)
                if not isinstance(language, str) or not LANGUAGE_RE.match(language):
                    raise ValueError("language must be a tag such as en-US")
        except (BadUrl, ValueError) as exc:
            return {"ok": False, "error": f"{'url' if command == 'play' else 'body'}: {exc}",
                    "status": 400}
        runs = self.node.room_runs
        if targets is None and not self.node.room_runs.reserve_sound(run, f"API {command}"):
            return {"ok": False, "status": 409,
                    "error": f"room has {run.sounds} sounds playing, the most it may "
                             f"(max_room_sounds={self.node.config.max_room_sounds})"}
        playing = False
        try:
            clip = (await self.node.sounds.audio(url) if command == "play"
                    else await self.node.sounds.speech(text.strip(), voice, language))
            if targets is None:
                playing = runs.spawn(run, "sound", runs.play_in_room, run, clip, True)
        except SoundError as exc:
            if isinstance(exc, SoundLimit):
                self.node.faults.limit(exc.option)
            return {"ok": False, "error": str(exc), "status": 400}
        finally:
            if targets is None and not playing:
                run.sounds -= 1  # the place reserved above (the request failed or was dropped)
        for target in targets or ():
            session = self.node.calls.get(target.call_uuid)
            if session is not None:
                runs.spawn(run, "sound", runs.clip_to_member, run, session, target, clip)
        return {"ok": True, "seconds": round(clip.duration, 3)}

    async def dial(self, room: str, body: dict) -> tuple[int, dict, list]:
        return await self.node.dials.start(room, body)

    async def add_agent(self, room: str, body: dict) -> tuple[int, dict]:
        return await agents.start(self.node, room, body)

    async def cancel_dial(self, call_uuid: str) -> bool:
        return await self.node.dials.cancel(call_uuid)

    def dials_info(self) -> list[dict]:
        return self.node.dials.info()

    def end_room(self, room: str) -> bool:
        run = self.node.rooms.get(room)
        if run is None:
            return False
        log.info("control API: end room %s", room)
        self.node.room_runs.apply(run, run.state.end())
        return True
