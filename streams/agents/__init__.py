"""Faust agents. Each module registers its agents on an app it is given."""
