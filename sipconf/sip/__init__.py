"""The pjsua2 adapter: the engine the node drives (sipconf.engine.Engine) on pjsua2's own thread."""
