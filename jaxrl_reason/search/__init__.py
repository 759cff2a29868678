"""jaxrl_reason.search: inference-time search (best-of-N, weighted voting, step-level beam
search, MCTS*) over KV-cache decoding sessions; see :mod:`.core` for the algorithms and
:mod:`.expander` for the session-backed policy side."""

from jaxrl_reason.search.core import (
    Child,
    Expander,
    MCTSNode,
    ScoreFn,
    SearchResult,
    beam_search,
    best_of_n,
    mcts,
    uct_scores,
    weighted_vote,
)
from jaxrl_reason.search.expander import SessionExpander, newline_token_ids
from jaxrl_reason.search.scorers import arith_chain_oracle_scorer, outcome_scorer, prm_scorer

__all__ = [
    "Child",
    "Expander",
    "MCTSNode",
    "ScoreFn",
    "SearchResult",
    "SessionExpander",
    "arith_chain_oracle_scorer",
    "beam_search",
    "best_of_n",
    "mcts",
    "newline_token_ids",
    "outcome_scorer",
    "prm_scorer",
    "uct_scores",
    "weighted_vote",
]
