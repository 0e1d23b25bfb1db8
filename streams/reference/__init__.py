"""Reference data pssync owns (service lines and their project templates, roles, regions,
legal entity profiles, tax jurisdictions): one versioned file, validated against the
reference contracts and published to compacted `reference.<set>` topics."""
