"""PostgreSQL: active chunks and jobs, and sql_exporter-style custom queries."""
