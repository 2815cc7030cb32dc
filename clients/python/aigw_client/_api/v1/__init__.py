"""Byte-for-byte copies of aigw_sidecar/api/v1/*_pb2.py(i); refreshed by `make proto`."""
