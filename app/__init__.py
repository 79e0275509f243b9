"""Nudge: a real-time personalization engine. The Faust app lives in :mod:`app.main`; the CLI in :mod:`app.cli`."""
