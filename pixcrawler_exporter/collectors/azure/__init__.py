"""Azure Monitor: platform metrics and log queries, from a background cache."""
