"""The gRPC and HTTP surface: servicers, ext_authz, access log, admin auth, metrics, bad input."""
