"""The pjlib log ring (mixer_ext/pjlog.c via sipconf.sip.pjlog): several C threads logging at once
while Python drains, and a burst with nobody draining. Run in a child process: pjlib's log
function is process-wide."""

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent('''
    import json, logging, sys, threading
    import pjsua2 as pj
    from sipconf.sip import pjlog

    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append((record.levelno, record.getMessage()))

    lg = logging.getLogger("sipconf.pjsip")
    lg.addHandler(Keep())
    lg.setLevel(logging.DEBUG)
    lg.propagate = False

    pjlog.install(3, 0)  # decor 0: a line is the message alone
    ep = pj.Endpoint()
    ep.libCreate()
    epc = pj.EpConfig()
    epc.uaConfig.threadCnt = 0
    epc.uaConfig.mainThreadOnly = False
    epc.medConfig.threadCnt = 0
    epc.logConfig.level = epc.logConfig.consoleLevel = 3
    epc.logConfig.decor = 0
    ep.libInit(epc)
    pjlog.install(3, 0)
    pjlog.drain()
    got.clear()
    dropped0 = pjlog.dropped()

    PRODUCERS, N = 4, 3000

    def produce(k):
        ep.libRegisterThread(f"p{k}")
        for i in range(N):  # the GIL is released inside: the producers really run at once
            ep.utilLogWrite(3 if i % 2 else 2, "t", f"p{k}   {i}\\n  end")

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(PRODUCERS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        pjlog.drain()
    for t in threads:
        t.join()
    while pjlog.drain():
        pass
    dropped1 = pjlog.dropped()
    lines = list(got)
    for i in range(3000):  # nobody drains: the ring fills, the rest is dropped, nothing blocks
        ep.utilLogWrite(3, "t", f"burst {i}")
    kept = pjlog.drain(10**6)
    out = {"lines": lines, "total": PRODUCERS * N, "dropped": dropped1 - dropped0,
           "burst_kept": kept, "burst_dropped": pjlog.dropped() - dropped1}
    ep.libDestroy()
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
''')


def test_ring_keeps_order_counts_drops_and_never_blocks(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(script), str(result)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result.read_text())

    lines = [tuple(x) for x in out["lines"]]
    assert lines, "nothing drained"
    # Every line either reached logging or was counted as dropped.
    assert len(lines) + out["dropped"] == out["total"]
    last: dict[str, int] = {}
    for level, text in lines:
        who, index, end = text.split(" ")  # whitespace folded, as the old writer did
        assert end == "end"
        i = int(index)
        assert i > last.get(who, -1), f"{who}: {i} after {last.get(who)}"  # FIFO per thread
        last[who] = i
        assert level == (20 if i % 2 else 30)  # pjlib 3 -> INFO, 2 -> WARNING
    assert out["burst_kept"] == 1024 and out["burst_dropped"] == 3000 - 1024
