"""tests/server/test_grpc_api.py on a Redis Cluster."""

from tests.server.test_grpc_api import *  # noqa: F403
