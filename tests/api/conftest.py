"""The API tests' fixtures (tests/api/fixtures.py)."""

from tests.api.fixtures import api_url, client, sent, settings, subscribed_skus

__all__ = ["api_url", "client", "sent", "settings", "subscribed_skus"]
