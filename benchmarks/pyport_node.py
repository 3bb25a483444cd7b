"""Baseline for benchmarks/load.py: the same rooms mixed through pjsua2's Python media ports.

    .venv/bin/python benchmarks/pyport_node.py --sip-port 5080 --rtp-ports 40000-40999

The path sipconf does not take: pjsua's conference bridge (clocked by its null sound device,
16 kHz, 20 ms) calls a Python ``AudioMediaPort`` per leg; ``onFrameReceived`` keeps the leg's
latest frame, ``onFrameRequested`` returns the room's other legs summed with numpy. Every call
joins the room named by its request-URI user. Benchmark only: no answer URL, no webhooks.

``--bridge``: no Python per frame; each call's audio is connected to every other call of its
room on pjsua's conference bridge (``startTransmit``), with pjsua's default jitter buffer: the
plain pjsua2 conference that benchmarks/quality.py scores the node against.
"""

from __future__ import annotations

import argparse
import signal
import sys

import numpy as np
import pjsua2 as pj

FRAME = 320  # samples at 16 kHz, 20 ms


class LegPort(pj.AudioMediaPort):
    def __init__(self, room: dict, key: int):
        super().__init__()
        self.room, self.key = room, key
        room[key] = np.zeros(FRAME, np.int32)

    def onFrameReceived(self, frame):  # noqa: N802
        if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size == FRAME * 2:
            self.room[self.key] = np.frombuffer(bytes(frame.buf), np.int16).astype(np.int32)

    def onFrameRequested(self, frame):  # noqa: N802
        total = np.zeros(FRAME, np.int32)
        for k, pcm in list(self.room.items()):
            if k != self.key:
                total += pcm
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(np.clip(total, -32768, 32767).astype(np.int16).tobytes())
        frame.size = FRAME * 2


class Call(pj.Call):
    def __init__(self, node: Node, acc, call_id: int, room: str):
        super().__init__(acc, call_id)
        self.node, self.room_name, self.port = node, room, None

    def onCallMediaState(self, prm):  # noqa: N802
        if self.port is not None:
            return
        med = self.getAudioMedia(-1)
        room = self.node.rooms.setdefault(self.room_name, {})
        if self.node.bridge:
            for other in room.values():
                med.startTransmit(other)
                other.startTransmit(med)
            room[id(self)] = self.port = med
            return
        self.port = LegPort(room, id(self))
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, 16000, 1, 20000, 16)
        self.port.createPort(f"leg{id(self)}", fmt)
        med.startTransmit(self.port)
        self.port.startTransmit(med)

    def onCallState(self, prm):  # noqa: N802
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            if self.port is not None:
                self.node.rooms.get(self.room_name, {}).pop(id(self), None)
            self.node.dead.append(self)


class Account(pj.Account):
    def __init__(self, node: Node):
        super().__init__()
        self.node = node

    def onIncomingCall(self, prm):  # noqa: N802
        ruri = prm.rdata.wholeMsg.split("\n", 1)[0].split()[1]
        room = ruri.split(":", 1)[1].split("@", 1)[0]
        call = Call(self.node, self, prm.callId, room)
        self.node.calls.append(call)
        op = pj.CallOpParam(True)
        op.statusCode = 200
        call.answer(op)


class Node:
    def __init__(self, args):
        self.rooms: dict[str, dict] = {}
        self.calls: list[Call] = []
        self.dead: list[Call] = []
        self.bridge = args.bridge
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.maxCalls = 512
        cfg.logConfig.level = cfg.logConfig.consoleLevel = 1
        mc = cfg.medConfig
        mc.clockRate = mc.sndClockRate = 16000
        mc.audioFramePtime = mc.ptime = 20
        mc.noVad, mc.ecTailLen = True, 0
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()  # the bridge's clock
        tc = pj.TransportConfig()
        tc.port, tc.boundAddress = args.sip_port, args.sip_host
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
        # PCMU first; G.722 and Opus for benchmarks/quality.py's wideband rows (a caller that
        # offers only one of them), Opus at the node's 16 kHz and 32 kbit/s
        prio = {"pcmu/": 250, "g722/": 200, "opus/": 150}
        for ci in ep.codecEnum2():
            ep.codecSetPriority(ci.codecId, next(
                (p for k, p in prio.items() if ci.codecId.lower().startswith(k)), 0))
        try:
            oc = ep.getCodecOpusConfig()
            oc.sample_rate, oc.channel_cnt, oc.frm_ptime, oc.bit_rate = 16000, 1, 20, 32000
            ep.setCodecOpusConfig(oc)
        except pj.Error:
            pass  # no Opus in this build
        ep.libStart()
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:pyport@{args.sip_host}:{args.sip_port}"
        lo, hi = args.rtp_ports
        mt = acfg.mediaConfig.transportConfig
        mt.port, mt.portRange, mt.boundAddress = lo, hi - lo + 1, args.sip_host
        self.acc = Account(self)
        self.acc.create(acfg, True)

    def run(self) -> None:
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        while not stop:
            self.ep.libHandleEvents(10)
            if self.dead:
                for c in self.dead:
                    self.calls.remove(c)
                self.dead.clear()
        self.ep.hangupAllCalls()
        for _ in range(50):
            self.ep.libHandleEvents(10)
        self.calls.clear()
        self.ep.libDestroy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sip-host", default="127.0.0.1")
    ap.add_argument("--sip-port", type=int, default=5080)
    ap.add_argument("--rtp-ports", type=lambda s: tuple(int(x) for x in s.split("-")),
                    default=(40000, 40999))
    ap.add_argument("--bridge", action="store_true",
                    help="calls connected on pjsua's conference bridge, no Python per frame")
    args, _ = ap.parse_known_args()
    sys.setswitchinterval(0.001)  # the bridge's clock thread needs the GIL often
    Node(args).run()


if __name__ == "__main__":
    main()
