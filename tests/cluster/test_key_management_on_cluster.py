"""tests/keys/test_key_management.py on a Redis Cluster."""

from tests.keys.test_key_management import *  # noqa: F403
