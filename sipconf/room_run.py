"""A room run's record: its sans-I/O state, what its trio task keeps, and its ordered queue of
engine commands (``do``; ``in_order`` to await one in that order). What happens in a run is
:mod:`sipconf.rooms`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from sipconf.core import room as roomstate
from sipconf.media import recording


@dataclass
class RoomRun:
    """One run of a room: its sans-I/O state, and the trio task (with its nursery) that owns
    the run's timer, sounds and wait music. Engine commands for the room go through ``do`` (or
    ``in_order``) and run in order, so a leg is always joined before it is muted, unmuted or
    left, and a room sound is played once the mixer room is there."""

    state: roomstate.Room
    key: str = ""  # the run's ConferenceUUID, also its mixer room
    ended: trio.Event = field(default_factory=trio.Event)
    nursery: trio.Nursery | None = None
    timer: trio.CancelScope | None = None
    music: dict[str, trio.CancelScope] = field(default_factory=dict)
    floor: str | None = None  # call uuid of the member holding the floor
    recording: recording.Recording | None = None
    record_params: dict[str, str] = field(default_factory=dict)  # RecordUrl, RecordingID
    record_tracks: bool = False  # also one file per member (the control API's "tracks")
    record_scope: trio.CancelScope | None = None
    sounds: int = 0  # room sounds playing or being fetched (max_room_sounds)
    clips: dict[str, set[trio.CancelScope]] = field(default_factory=dict)  # API clips, by call
    pending: list[Callable[[], Awaitable[object]]] = field(default_factory=list)  # units
    # spawned before the run's task has its nursery: they start in it
    agents: set[str] = field(default_factory=set)  # agentUrl agents attached to this run
    closed: bool = False  # the run's task is over (ended, faulted, node stopping): no new units
    leaving: list[trio.Event] = field(default_factory=list)  # members' leaves (``unmixed``):
    # all set when the run's task is over, whatever happened to their commands

    def __post_init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[Callable[[], Awaitable[object]]](
            float("inf"))

    def do(self, fn: Callable[..., Awaitable[object]], *args: object) -> bool:
        """Queue an engine command in the run's order; False if the run is over."""
        try:
            self.send.send_nowait(lambda: fn(*args))
        except trio.ClosedResourceError:
            return False  # the run is over; its mixer room is gone with it
        return True

    async def in_order(self, fn: Callable[..., Awaitable[object]], *args: object,
                       undo: Callable[[object], Awaitable[object]] | None = None) -> object:
        """Await ``fn(*args)`` in the run's command order (after the commands queued before
        it, e.g. the join that makes the mixer room): its result, None if the run is over. A
        waiter gone (cancelled) before it runs skips it; gone while it ran, ``undo(result)`` (if
        there is one)."""
        box: dict[str, object] = {}
        done = trio.Event()

        async def step() -> None:
            try:
                if "gone" not in box:
                    value = await fn(*args)
                    if "gone" not in box:
                        box["value"] = value
                    elif undo is not None and value is not None:
                        await undo(value)
            except Exception as exc:  # noqa: BLE001 - handed back to the waiter, if any
                if "gone" in box:
                    raise  # no one to hand it to: a fault of the run's command
                box["error"] = exc
            finally:
                done.set()

        if not self.do(step):
            return None
        try:
            await done.wait()
        finally:
            box["gone"] = True
        if "error" in box:
            raise box["error"]
        return box.get("value")
