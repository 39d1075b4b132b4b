"""What a request cost and used: prices, request logs and rollups, budget alerts, metrics."""
