"""What the health and metrics endpoints answer."""
