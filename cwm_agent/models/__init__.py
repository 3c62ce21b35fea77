"""Talking to models: HTTP clients for CWM's text format and chat endpoints (client), the
embedded CPU model (local), token counters (tokens), picking one (connect), and serving with
vLLM (serve, convert)."""
