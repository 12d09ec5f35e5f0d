"""What is rendered from the config for other tools: alerting rules, README's reference."""
