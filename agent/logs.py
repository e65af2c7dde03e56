"""Structured logging: structlog, JSON in production, quiet by default on a terminal.

Events are snake_case with fields; ``bound_contextvars(job_id=..., serial=..., step=...)`` around
each upgrade step adds the context to every line.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, json_logs: bool = False, verbose: bool = False) -> None:
    """Send logs to stderr: JSON lines, readable lines when ``verbose``, else warnings only."""
    level = logging.INFO if (json_logs or verbose) else logging.WARNING
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
