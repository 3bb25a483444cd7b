"""Requests the node makes to the customer's web app: signed, ordered per call, never lost.

Two kinds go through the one :class:`WebhookWorker` (``worker.py``):

- *documents* the node needs to go on (answer URL, ``Redirect``, an ``action`` with
  ``redirect=true``): one request with a bound on time and size, whose reply is parsed;
- *events* (``callbackUrl`` enter/exit/digits/floor/record, an ``action`` the node only
  reports, transcriptions): written to the SQLite spool first (``spool.py``), then delivered in
  order per call, retried with backoff on connection errors, timeouts, 408/429 and 5xx until
  delivered or expired; what no retry can deliver goes to the dead letters. A node restart
  resumes the spool.

``payloads.py`` builds the parameters (Plivo's names and formats); ``signing.py`` signs every
request (Plivo's V3/V2 headers, the node's ``X-Sipconf-*``, or both) and is the receiver's side
of it (:func:`verify`).
"""

from sipconf.webhooks.payloads import (
    call_params,
    conference_params,
    hangup_cause,
    hangup_params,
)
from sipconf.webhooks.signing import sign_headers, signature, verify
from sipconf.webhooks.spool import Event, Spool
from sipconf.webhooks.worker import (
    MAX_DOCUMENT_BYTES,
    FetchError,
    WebhookWorker,
    backoff,
    request,
)

__all__ = ["MAX_DOCUMENT_BYTES", "Event", "FetchError", "Spool", "WebhookWorker", "backoff",
           "call_params", "conference_params", "hangup_cause", "hangup_params", "request",
           "sign_headers", "signature", "verify"]
