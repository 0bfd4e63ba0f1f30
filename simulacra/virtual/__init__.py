"""Mirage-compatible service virtualization: scenarios, sessions, stubs, playback."""
