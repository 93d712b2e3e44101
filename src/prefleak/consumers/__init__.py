"""Event sources: files and stdin, HTTP, Kafka. Each turns messages into store batches."""
