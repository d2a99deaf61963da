"""Voice input: audio decoding and live recording streams (see docs/protocol.md, "Voice")."""
