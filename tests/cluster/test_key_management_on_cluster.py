"""tests/test_key_management.py on a Redis Cluster (fixtures: tests/cluster/conftest.py)."""

from tests.test_key_management import *  # noqa: F403
