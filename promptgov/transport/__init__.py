"""Transport: records, sinks (Kafka, local directory), the publisher, dead letters."""
