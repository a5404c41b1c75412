"""xswarm: a production voice bridge for Kyutai's MOSHI, its supervisor and operations."""

__version__ = "0.1.0"
