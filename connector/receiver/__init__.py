"""Receives Okendo's webhooks: bounding, signature verification and storage; no CRM work."""
