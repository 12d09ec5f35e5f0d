"""The collector contract, registration, the single-flight scraper and what collectors share."""
