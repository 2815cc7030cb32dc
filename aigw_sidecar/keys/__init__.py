"""API keys: secret format, hashing, validated specs and the key-management service."""
