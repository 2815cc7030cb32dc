"""aigw-admin, the admin CLI."""
