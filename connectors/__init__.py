"""Source side: the hospital fleet, Kafka Connect and Debezium management, poll and push capture, simulated hospitals."""
