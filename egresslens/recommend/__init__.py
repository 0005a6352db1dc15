"""`egresslens recommend`: least-privilege Azure Firewall rule changes from the store.

    from egresslens.recommend import recommend, Config, load_policy
    recs = recommend(con, window, policy=load_policy("policy.json"))
    recs.to_polars()
"""

from egresslens.recommend.config import Config, ConfigError
from egresslens.recommend.engine import Recommendations, recommend
from egresslens.recommend.model import Evidence, ProposedRule, Recommendation
from egresslens.recommend.netaggr import ServiceTags
from egresslens.recommend.policy import PolicyError, load_policy, parse_policy

__all__ = ["Config", "ConfigError", "Evidence", "PolicyError", "ProposedRule", "Recommendation", "Recommendations",
           "ServiceTags", "load_policy", "parse_policy", "recommend"]
