"""Normalizer and statistics processors: change events in, standard Avro records out."""
