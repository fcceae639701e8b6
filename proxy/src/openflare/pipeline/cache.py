"""Stages 9–11 and 13 — cache eligibility, lookup, request collapsing, store decision (slot).

`cache` in the main file and `rule_files.cache` are loaded and validated with the bundle; the
shared HTTP cache lands with the cache issue (see docs/03-cache.md). Until then the stage is not
part of the chain, every request is forwarded, and no `X-Edge-Cache` header is emitted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openflare.pipeline.base import Stage

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps


def build(bundle: ConfigBundle, deps: Deps) -> Stage | None:
    return None
