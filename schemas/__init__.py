"""pssync's canonical Avro contracts, wire-format serde and schema-registry tooling."""
