"""Hostile and broken job inputs, with the exact error each must produce (see cases.json)."""
