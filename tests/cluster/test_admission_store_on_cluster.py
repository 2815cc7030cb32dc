"""tests/test_admission_store.py on a Redis Cluster (fixtures: tests/cluster/conftest.py)."""

from tests.test_admission_store import *  # noqa: F403
