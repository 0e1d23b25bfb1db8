"""pssync stream processing: the Faust app, its agents, settings and the CLI."""
