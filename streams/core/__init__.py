"""Pure core of the normalizer: change-event decoding, declarative mappings, record building.

Nothing here touches Kafka, Faust or a database; adapters call these functions.
"""
