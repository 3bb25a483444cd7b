"""Pure logic of registering on a PBX and of who may call: no sockets."""

import pytest

from sipconf.config import build
from sipconf.core.access import TrustedSources, source_ip
from sipconf.core.registration import RegisterTarget, Registrar, dialled_user


def test_register_target_parses_user_host_port():
    t = RegisterTarget.parse("sip:conf@pbx.example.com:5070")
    assert (t.user, t.host, t.port) == ("conf", "pbx.example.com", 5070)
    assert t.registrar_uri == "sip:pbx.example.com:5070"
    assert RegisterTarget.parse("sip:conf@[2001:db8::1]").registrar_uri == "sip:[2001:db8::1]"
    for bad in ("pbx.example.com", "sip:pbx", "http://a@b", "sip:a@b:99999",
                "sip:a@pbx;transport=tcp"):
        with pytest.raises(ValueError):
            RegisterTarget.parse(bad)


def test_backoff_doubles_to_a_cap_and_resets_on_success():
    r = Registrar(first=1.0, cap=8.0)
    delays = [r.outcome(403, "Forbidden", 0) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert not r.registered and r.attempts_failed == 6
    assert r.outcome(200, "OK", 300) is None and r.registered and r.expires == 300
    assert r.outcome(408, "Request Timeout", 0) == 1.0  # a fresh outage starts again at 1 s
    assert r.outcome(200, "OK", 0) == 2.0  # 200 with no expiry is not a registration


def test_dialled_user_prefers_to_when_the_pbx_targets_our_contact():
    assert dialled_user("sipconf", "sales", {"sipconf"}) == "sales"
    assert dialled_user("sales", "whatever", {"sipconf"}) == "sales"
    assert dialled_user("", "sales", {"sipconf"}) == "sales"
    assert dialled_user("sipconf", "", {"sipconf"}) == "sipconf"


def test_trusted_sources_match_networks_and_the_registrar():
    t = TrustedSources(("10.0.0.0/8", "2001:db8::/32"), hosts=("127.0.0.2",))
    assert t.allows("10.1.2.3:5060")
    assert t.allows("[2001:db8::5]:5060")
    assert t.allows("127.0.0.2:5060")  # the registrar
    assert not t.allows("127.0.0.1:5060")
    assert not t.allows("192.168.1.1:5060")
    assert not t.allows("garbage")
    assert TrustedSources(("127.0.0.0/8",)).allows("[::ffff:127.0.0.1]:5060")
    assert source_ip("[::1]:5060") == "::1" and source_ip("1.2.3.4:5") == "1.2.3.4"


def test_config_trust_and_register_options():
    c = build({"trust": "10.0.0.0/8, 192.168.0.0/16", "register": "sip:c@pbx",
               "auth_password": "pw"})
    assert c.trust == ("10.0.0.0/8", "192.168.0.0/16")
    assert build({}).trust == ("127.0.0.0/8", "::1/128")
    assert build({"trust": ["0.0.0.0/0"]}).trust == ("0.0.0.0/0",)
    with pytest.raises(ValueError, match="auth_password"):
        build({"register": "sip:c@pbx"})
    with pytest.raises(ValueError, match="not an address"):
        build({"trust": ["10.0.0.0/33"]})
    with pytest.raises(ValueError, match="expires"):
        build({"register_expires": 5})
