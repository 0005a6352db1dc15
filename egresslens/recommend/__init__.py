"""`egresslens recommend`: least-privilege Azure Firewall rule changes from the store.

    from egresslens.recommend import recommend, Config, load_policy
    recs = recommend(con, window, policy=load_policy("policy.json"))
    recs.to_polars()
"""

from egresslens.recommend.config import Config, ConfigError
from egresslens.recommend.engine import Recommendations, recommend
from egresslens.recommend.fleet import recommend_fleet
from egresslens.recommend.model import Evidence, ProposedRule, Recommendation
from egresslens.recommend.netaggr import ServiceTags

__all__ = ["Config", "ConfigError", "Evidence", "PolicyError", "ProposedRule", "Recommendation", "Recommendations",
           "ServiceTags", "load_policy", "parse_policy", "recommend", "recommend_fleet"]


def __getattr__(name: str):
    """`load_policy`, `parse_policy` and `PolicyError` live in :mod:`egresslens.estate` (which builds on
    this package's rules); they are offered here too, imported on first use."""
    if name in ("PolicyError", "load_policy", "parse_policy"):
        from egresslens.estate import parse

        return getattr(parse, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
