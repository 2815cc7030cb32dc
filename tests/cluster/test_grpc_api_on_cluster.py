"""tests/test_grpc_api.py on a Redis Cluster (fixtures: tests/cluster/conftest.py)."""

from tests.test_grpc_api import *  # noqa: F403
