"""The HTTP API (FastAPI): routes, dependency providers, upload reader, result writers."""
