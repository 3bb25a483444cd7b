"""URLs from documents and API bodies: what the HTTP client would refuse is refused when read."""

import httpx
import pytest

from sipconf.core.urls import BadUrl, check_url, printable


@pytest.mark.parametrize("value, why", [
    ("http://a/b\tc", "control character"),
    ("http://a/b\x7f", "control character"),
    ("http://[::1/x", "not a valid URL"),
    ("http://h:99999/", "not a valid URL"),
    ("http://999.1.1.1/", "not a valid URL"),
    ("http://ex ample.com/", "bad host"),
    ("http://h:0/", "bad host or port"),
    ("ftp://x/", "absolute http(s) URL"),
    ("http://", "absolute http(s) URL"),
    ("", "empty URL"),
    ("http://x/" + "a" * 5000, "longer than"),
    (5, "expected a URL string"),
    (None, "expected a URL string"),
])
def test_urls_the_client_cannot_send_are_refused(value, why):
    with pytest.raises(BadUrl) as err:
        check_url(value)
    assert why in str(err.value)


@pytest.mark.parametrize("value, base, want", [
    ("http://127.0.0.1:8080/answer", None, "http://127.0.0.1:8080/answer"),
    ("  https://example.com/a?b=c  ", None, "https://example.com/a?b=c"),
    ("next.xml", "http://app.example/dir/a.xml", "http://app.example/dir/next.xml"),
    ("http://[::1]:80/x", None, "http://[::1]:80/x"),
    ("http://user:pw@h/x#f", None, "http://user:pw@h/x#f"),
])
def test_good_urls_pass_and_resolve(value, base, want):
    got = check_url(value, base)
    assert got == want
    httpx.Request("POST", got, data={"a": "b"})


def test_log_lines_show_control_characters_escaped():
    assert printable("http://x/\ty") == repr("http://x/\ty")
    assert printable("http://x/y") == "http://x/y"
