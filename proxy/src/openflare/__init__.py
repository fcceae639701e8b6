"""OpenFlare: a readable L7 edge proxy on aiohttp."""

__version__ = "0.1.0"
