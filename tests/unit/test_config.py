"""Config: TOML file, command line over it, check-config, JSON log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from sipconf.cli import JsonFormatter
from sipconf.config import OPTIONS, build, load_file


def _check(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_a_file_sets_every_kind_of_option(tmp_path):
    f = tmp_path / "node.toml"
    f.write_text('sip-port = 5090\nrtp_ports = "41000-41099"\nanswer_timeout = 2\n'
                 'sip_tcp = true\nlog_format = "json"\napi_token = "t"\n')
    cfg = build(load_file(str(f)))
    assert (cfg.sip_port, cfg.rtp_port_min, cfg.rtp_port_max) == (5090, 41000, 41099)
    assert cfg.answer_timeout == 2 and cfg.sip_tcp and cfg.log_format == "json"
    assert cfg.api_token == "t"
    res = _check(f)
    assert res.returncode == 0 and "ok" in res.stdout
    # the command line wins over the file
    opts = load_file(str(f))
    opts.update({"sip_port": 6000})
    assert build(opts).sip_port == 6000


def test_registration_and_trust_from_a_file(tmp_path):
    f = tmp_path / "pbx.toml"
    f.write_text('register = "sip:conf@pbx.example.com:5070"\nauth_password = "pw"\n'
                 'register_expires = 60\ntrust = ["10.0.0.0/8", "192.168.1.5"]\n')
    cfg = build(load_file(str(f)))
    assert cfg.register_target.registrar_uri == "sip:pbx.example.com:5070"
    assert cfg.register_expires == 60 and cfg.trust == ("10.0.0.0/8", "192.168.1.5")
    assert _check(f).returncode == 0


def test_every_command_line_option_is_a_config_option():
    from sipconf.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    dests = {a.dest for a in sub.choices["serve"]._actions} - {"help", "config"}
    assert dests == set(OPTIONS)


@pytest.mark.parametrize("text, why", [
    ("sip_port = 70000\n", "SIP port 70000 out of range"),
    ("sip_port = \"x\"\n", "sip_port must be int"),
    ("colour = 1\n", "unknown option(s): colour"),
    ("rtp_ports = \"a-b\"\n", "rtp_ports must be LOW-HIGH"),
    ("log_format = \"xml\"\n", "log format must be text or json"),
    ("sip_port = \n", "not valid TOML"),
    ("trust = \"10.0.0.0/33\"\n", "trust: '10.0.0.0/33' is not an address"),
    ("register = \"pbx\"\nauth_password = \"x\"\n", "register must look like sip:USER@PBX"),
    ("register = \"sip:a@pbx\"\n", "register needs auth_password"),
])
def test_check_config_names_what_is_wrong(tmp_path, text, why):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    res = _check(f)
    assert res.returncode == 2 and why in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert _check(tmp_path / "missing.toml").returncode == 2


def test_json_log_lines_carry_call_and_room():
    rec = logging.LogRecord("sipconf.node", logging.INFO, __file__, 1, "call %s joined",
                            ("c1",), None)
    rec.call_uuid, rec.room, rec.event = "c1", "r", "enter"
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "call c1 joined" and out["level"] == "info"
    assert (out["call_uuid"], out["room"], out["event"]) == ("c1", "r", "enter")


def test_tls_needs_a_certificate_and_its_key(tmp_path):
    from sipconf.config import NodeConfig, tls_files_problem

    def cert(name):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-keyout", str(tmp_path / f"{name}.key"), "-out",
                        str(tmp_path / f"{name}.crt"), "-subj", f"/CN={name}"],
                       check=True, capture_output=True, timeout=30)
        return str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key")

    a_crt, a_key = cert("a")
    _, b_key = cert("b")
    assert tls_files_problem(a_crt, a_key) is None
    assert NodeConfig(sip_tls_port=5061, tls_cert=a_crt, tls_key=a_key).sip_tls_port == 5061
    assert "not a certificate and its key" in tls_files_problem(a_crt, b_key)
    assert "readable PEM file" in tls_files_problem(a_crt, str(tmp_path / "missing.key"))
    with pytest.raises(ValueError, match="sip_tls_port: tls_cert"):
        NodeConfig(sip_tls_port=5061)
    with pytest.raises(ValueError, match="same as the SIP port"):
        NodeConfig(sip_port=5061, sip_tls_port=5061, tls_cert=a_crt, tls_key=a_key)
    with pytest.raises(ValueError, match="srtp must be off, optional or required"):
        NodeConfig(srtp="sometimes")


def test_the_outbound_and_stream_options_are_bounded():
    cfg = build({"dial_allow": "sip:*@pbx.example.com, sip:+44*@*", "stream_chunk_ms": 100})
    assert cfg.dial_allow == ("sip:*@pbx.example.com", "sip:+44*@*")
    assert cfg.stream_chunk_ms == 100 and not cfg.noise_suppression and not cfg.agc
    for bad, why in (({"stream_chunk_ms": 30}, "stream_chunk_ms"),
                     ({"max_dials": 0}, "max_dials"), ({"agent_reconnects": 101}, "agent_"),
                     ({"jb_size_ms": 20}, "jb_size_ms"), ({"jb_size_ms": 5000}, "jb_size_ms"),
                     ({"jb_max_ms": 10}, "jb_max_ms"), ({"jb_max_ms": 900}, "jb_max_ms"),
                     ({"jb_catchup_ms": 100}, "jb_catchup_ms"),
                     ({"jb_wait_pct": 40}, "jb_wait_pct"),
                     ({"jb_delay_max_ms": 500}, "jb_delay_max_ms"),
                     ({"opus_bitrate": 5000}, "opus_bitrate"),
                     ({"opus_bitrate": 600000}, "opus_bitrate"),
                     ({"dial_allow": ["x" * 300]}, "dial_allow"),
                     ({"dial_allow": [1]}, "dial_allow must be a list of strings")):
        with pytest.raises(ValueError, match=why):
            build(bad)
