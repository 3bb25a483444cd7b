"""Sans-I/O: documents, rooms, digits, SIP message reading, access, registration, URLs, the
call flow. Plain Python that takes events and returns decisions; no sockets, threads or clocks
of its own."""
