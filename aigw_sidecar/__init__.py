"""aigw-sidecar: an admission-control sidecar for AI (LLM) gateways.

A proxy asks ``Authorize`` before each LLM request and reports ``RecordUsage``
after it; the sidecar keeps API keys and their counters in Redis and answers
yes, or no with a reason. See README.md for the request flow.
"""

__version__ = "0.1.0"
