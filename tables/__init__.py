"""Stream state: Faust tables (changelog-backed) and the decisions made on them."""
