"""Business monitors: what a person must look at, computed from pssync's topics."""
