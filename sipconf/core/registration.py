"""Registering the node on a PBX: the target, and when to try again.

Sans-I/O: the SIP thread feeds :class:`Registrar` each REGISTER outcome and asks it when to
retry; pjsua2 does the digest auth and the refresh before expiry. pjsua retries only a few
temporary failures, at a fixed interval, and never a 401/403; a PBX that rejects us (wrong
password) or is restarting should see us back, but not hammered, so every failure is retried
here with exponential backoff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipconf.core.backoff import backoff

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 120.0

_URI = re.compile(r"^sips?:(?P<user>[^@;:?]+)@(?P<host>\[[0-9a-fA-F:.]+\]|[^:;?>]+)"
                  r"(?::(?P<port>\d{1,5}))?(?P<params>;[^?]*)?$")


@dataclass(frozen=True)
class RegisterTarget:
    """``sip:USER@PBX[:PORT]``: the address of record, and the registrar it lives on."""

    uri: str
    user: str
    host: str
    port: int | None

    @classmethod
    def parse(cls, uri: str) -> RegisterTarget:
        m = _URI.match(uri.strip())
        if not m:
            raise ValueError(f"register must look like sip:USER@PBX[:PORT], not {uri!r}")
        if m["params"]:  # e.g. ;transport=tcp: would be dropped from the REGISTER, silently
            raise ValueError(f"register: URI parameters are not supported ({m['params']!r}); "
                             "registration is over UDP")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not (0 < port < 65536):
            raise ValueError(f"register: port {port} out of range")
        return cls(uri.strip(), m["user"], m["host"].strip("[]"), port)

    @property
    def registrar_uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}" + (f":{self.port}" if self.port else "")


class Registrar:
    """Registration state: registered or not, and when to retry after a failure."""

    def __init__(self, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S):
        self.first, self.cap = first, cap
        self.registered = False
        self.failures = 0  # consecutive
        self.attempts_failed = 0  # in all, for /metrics
        self.last_code = 0
        self.last_reason = ""
        self.expires = 0

    def outcome(self, code: int, reason: str, expires: int) -> float | None:
        """A REGISTER's final answer. Returns the delay before the next try (None: nothing to
        do; pjsua refreshes a good registration itself)."""
        self.last_code, self.last_reason = code, reason
        if 200 <= code < 300 and expires > 0:
            self.registered, self.failures, self.expires = True, 0, expires
            return None
        self.registered, self.expires = False, 0
        self.failures += 1
        self.attempts_failed += 1
        return backoff(self.failures, self.first, self.cap)


def dialled_user(ruri_user: str, to_user: str, own_users: set[str]) -> str:
    """The room a call asks for. A PBX that routes a call to our registered contact puts our
    own user in the request-URI; what the caller dialled is then in To."""
    if ruri_user in own_users and to_user:
        return to_user
    return ruri_user or to_user
