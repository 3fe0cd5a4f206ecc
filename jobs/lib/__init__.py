"""Code shared by every job: config, Spark session, JVM jars, the local Kafka broker, preprocessing."""
