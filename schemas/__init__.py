"""The single source of truth for every record that crosses a boundary (CSV, Kafka, Delta)."""
