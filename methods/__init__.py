"""First-party method plugins."""
