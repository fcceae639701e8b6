"""Stage 6 — WAF (slot).

The rule file (`rule_files.waf`) is loaded and validated with the rest of the bundle, so a bad
pattern is already a config error; the engine that evaluates it lands with the WAF issue
(see docs/04-waf.md). Until then the stage is not part of the chain and costs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openflare.pipeline.base import Stage

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps


def build(bundle: ConfigBundle, deps: Deps) -> Stage | None:
    return None
