"""The typed Python client (clients/python)."""
