"""Transport: gRPC servicers, status mapping, health, and the server's lifecycle."""
