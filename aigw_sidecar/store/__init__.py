"""The store: the only code that talks to Redis (or Valkey)."""
