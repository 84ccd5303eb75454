"""Stateful local emulators of the CRM APIs, driven by the real client libraries over real sockets."""
