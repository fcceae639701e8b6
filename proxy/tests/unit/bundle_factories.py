"""One way to build a loaded config for tests: `config_bundle(proxy, **rule_files)`."""

from __future__ import annotations

from openflare.cache.rules import CacheRules
from openflare.config.loader import ConfigBundle
from openflare.config.models import ProxyConfig, UpstreamConfig
from openflare.ratelimit.rules import RateLimitRules
from openflare.waf.rules import WafRules


def config_bundle(
    proxy: ProxyConfig | None = None,
    *,
    waf: WafRules | None = None,
    cache_rules: CacheRules | None = None,
    rate_limits: RateLimitRules | None = None,
    admin_token: str | None = None,
) -> ConfigBundle:
    """The bundle the loader would give for these sections; the rest empty, one upstream `o`
    (on a closed port) unless `proxy` says otherwise."""
    return ConfigBundle(
        proxy=proxy
        or ProxyConfig(upstreams=(UpstreamConfig(name="o", base_url="http://127.0.0.1:1"),)),
        waf=waf or WafRules(),
        cache_rules=cache_rules or CacheRules(),
        rate_limits=rate_limits or RateLimitRules(),
        admin_token=admin_token,
        main_path="test.yaml",
        sources=(),
    )
