"""The ingestion stage: read a chunk blob and enqueue one message per line."""
