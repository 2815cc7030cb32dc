"""Keys: key management, key policies, secrets and money."""
