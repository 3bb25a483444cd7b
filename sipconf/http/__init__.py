"""The node's HTTP server: the control API, recordings, metrics."""
