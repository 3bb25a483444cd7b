"""The pjsua2 adapter: the engine the node drives (sipconf.engine.Engine) on pjsua2's own thread.

- ``engine``: ``SipEngine``, the trio side: start/stop/health, async methods -> typed commands.
- ``commands``: the command dataclasses and their handlers, run on the SIP thread.
- ``thread``: ``SipThread``, the one thread owning every pjsua2 object: loop, shutdown, destroy.
- ``pjsua``: how pjsua is configured (endpoint, transports, codecs, accounts).
- ``callbacks``: pjsua2's Account/Call subclasses and what they report (incoming, ended, media).
- ``media``: placement in the C mixer (``mixer_ext.streams``): rooms, legs, sounds, taps.
- ``records``: what the SIP thread keeps per call and per mixer room.
- ``pjlog``: pjlib's log lines into Python logging.
"""
