"""The test suite: pytest, one Spark session and one Kafka broker for the whole run (tests/conftest.py)."""
