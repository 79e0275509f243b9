"""Learned and declared decision models (intent, segments, triggers) -- arrives with issues 3 and 4."""
