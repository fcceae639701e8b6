"""OpenFlare test origin: a deterministic FastAPI site for the edge proxy's tests."""

from __future__ import annotations

from .app import create_app

__all__ = ["__version__", "create_app"]
__version__ = "0.1.0"
