"""Pipelines join the pieces: the only modules that know both MongoDB and storage."""
