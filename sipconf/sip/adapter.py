"""The old import path of the pjsua2 adapter: ``SipEngine`` now lives in ``sipconf.sip.engine``.

Kept so ``from sipconf.sip.adapter import SipEngine`` (sipconf/node.py) goes on working; the
package's own ``__init__`` says how the adapter is laid out.
"""

from sipconf.sip.engine import COMMAND_TIMEOUT_S, SipEngine

__all__ = ["COMMAND_TIMEOUT_S", "SipEngine"]
