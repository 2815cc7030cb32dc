"""tests/admission/test_budgets.py on a Redis Cluster."""

from tests.admission.test_budgets import *  # noqa: F403
