"""Stage 7 — rate limiting (slot).

The rule file (`rule_files.rate_limit`) is loaded and validated with the bundle; the token
buckets land with the rate-limiting issue (see docs/09-rate-limiting.md). Until then the stage
is not part of the chain and costs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openflare.pipeline.base import Stage

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps


def build(bundle: ConfigBundle, deps: Deps) -> Stage | None:
    return None
