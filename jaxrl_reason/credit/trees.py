"""Tree-structured rollouts: node values and node advantages, broadcast to tokens.

Layout (``docs/algorithms.md`` (TA) section 0). One padded forest over ``N`` nodes:

* ``parent int32[N]``: parent node id, ``-1`` for a root. A prompt's rollouts form one tree
  under a *virtual root* (empty segment, the prompt) so "root" means the whole forest of that
  prompt; several prompts live side by side as several roots (or use :func:`flatten_forests`
  on ``[P, N]`` arrays). Parents need not precede children.
* ``is_leaf bool[N]``, ``leaf_reward float[N]`` (read on leaves only), ``node_valid bool[N]``
  (padding mask; invalid nodes and everything in them are ignored).
* ``tok_node int32[B, T]``: the node that owns token t of training row b (``-1`` for prompt,
  padding and masked observation tokens). A row is usually a root-to-leaf path; SPO-tree
  rows are single edges; both work, the advantage of a token is its node's.

Everything is vectorised over nodes: depths and roots by pointer jumping (``log2 N`` gathers),
subtree sums bottom-up one depth level at a time with ``segment_sum`` over ``parent`` (a
``while_loop`` over levels, never over nodes), or through the dense ancestor matrix
(:func:`ancestor_matrix`, ``O(N^2)``, for small forests and tests).

Registered estimators: ``treerl``, ``spo_tree``, ``sibling_grpo``, ``tree_grpo``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrl_reason.credit import registry
from jaxrl_reason.credit._beyond import dense_ids, group_normalize
from jaxrl_reason.credit.segments import masked_whiten

Array = jax.Array

# keyword argument -> Trajectories field of the forest estimators
_FOREST = {
    "tok_node": "tok_node",
    "parent": "parent",
    "is_leaf": "is_leaf",
    "leaf_reward": "leaf_reward",
    "node_valid": "node_valid",
}

__all__ = [
    "ancestor_matrix",
    "flatten_forests",
    "node_depth",
    "node_root",
    "sibling_grpo",
    "sibling_node_advantages",
    "spo_tree",
    "spo_tree_node_advantages",
    "subtree_sum",
    "tree_grpo",
    "tree_values",
    "treerl",
    "treerl_node_advantages",
]


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------


def _n_jumps(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2)))) + 1


def _clean_parent(parent: Array, node_valid: Array) -> Array:
    p = jnp.asarray(parent, jnp.int32)
    v = jnp.asarray(node_valid, bool)
    n = p.shape[-1]
    ok = v & (p >= 0) & (p < n)
    ok = ok & v[jnp.clip(p, 0, n - 1)]
    return jnp.where(ok, p, -1)


def node_depth(parent: Array, node_valid: Array) -> Array:
    """Depth of every node (roots 0) by pointer jumping; int32 ``[N]`` (invalid nodes 0)."""
    p = _clean_parent(parent, node_valid)
    n = p.shape[0]

    def body(_, state):
        jump, dist = state
        has = jump >= 0
        j = jnp.clip(jump, 0, n - 1)
        return jnp.where(has, jump[j], -1), dist + jnp.where(has, dist[j], 0)

    # A loop (not unrolled Python) so XLA materialises the result instead of fusing the whole
    # gather chain into every consumer (per-token gathers would recompute it per token).
    _, dist = jax.lax.fori_loop(0, _n_jumps(n), body, (p, (p >= 0).astype(jnp.int32)))
    return jnp.where(jnp.asarray(node_valid, bool), dist, 0)


def node_root(parent: Array, node_valid: Array) -> Array:
    """Root (top ancestor, ``parent == -1``) of every node; int32 ``[N]`` (self for invalid)."""
    p = _clean_parent(parent, node_valid)
    n = p.shape[0]
    anc = jnp.where(p >= 0, p, jnp.arange(n, dtype=jnp.int32))
    return _pointer_jump(anc)


def _pointer_jump(ptr: Array) -> Array:
    """Follows ``ptr`` to its fixed point (``ptr[ptr[...]]``) in ``log2 N`` doubling steps."""
    n = ptr.shape[0]
    return jax.lax.fori_loop(0, _n_jumps(n), lambda _, a: a[a], ptr)


def ancestor_matrix(parent: Array, node_valid: Array) -> Array:
    """Dense ancestor incidence ``Anc[l, n] = 1`` iff n is on the root-to-l path (l included).

    Reflexive-transitive closure of the parent relation by repeated squaring
    (``ceil(log2 N) + 1`` boolean matmuls). bool ``[N, N]``; rows/columns of invalid nodes are
    False. ``O(N^2)`` memory: use for small forests; :func:`subtree_sum` scales linearly.
    """
    p = _clean_parent(parent, node_valid)
    v = jnp.asarray(node_valid, bool)
    n = p.shape[0]
    adj = (p[:, None] == jnp.arange(n)[None, :]) & (p[:, None] >= 0)
    c = (adj | jnp.eye(n, dtype=bool)) & v[:, None] & v[None, :]
    cf = c.astype(jnp.float32)
    for _ in range(_n_jumps(n)):
        cf = (jnp.dot(cf, cf, preferred_element_type=jnp.float32) > 0).astype(jnp.float32)
    return cf > 0


def subtree_sum(x: Array, parent: Array, node_valid: Array, depth: Array | None = None) -> Array:
    """``out[n] = sum of x over the subtree of n`` (n included), bottom-up by depth level.

    One ``segment_sum`` over ``parent`` per level (``while_loop`` up to the maximum depth).
    Shapes: ``x [N]`` float, returns float32 ``[N]`` (0 on invalid nodes).
    """
    v = jnp.asarray(node_valid, bool)
    p = _clean_parent(parent, v)
    n = p.shape[0]
    d = node_depth(p, v) if depth is None else jnp.asarray(depth, jnp.int32)
    acc = jnp.where(v, jnp.asarray(x, jnp.float32), 0.0)
    seg = jnp.where(p >= 0, p, n)  # roots push into an overflow bucket

    top = jnp.max(d)

    def body(i, acc):
        level = top - i
        push = jnp.where(v & (d == level), acc, 0.0)
        return acc + jax.ops.segment_sum(push, seg, n + 1)[:n]

    return jax.lax.fori_loop(0, top, body, acc)


def _child_mean_values(parent, is_leaf, leaf_reward, node_valid):
    v = jnp.asarray(node_valid, bool)
    p = _clean_parent(parent, v)
    n = p.shape[0]
    leaf = jnp.asarray(is_leaf, bool) & v
    d = node_depth(p, v)
    seg = jnp.where(p >= 0, p, n)
    n_child = jax.ops.segment_sum(v.astype(jnp.float32), seg, n + 1)[:n]
    val = jnp.where(leaf, jnp.asarray(leaf_reward, jnp.float32), 0.0)

    top = jnp.max(d)

    def body(i, val):
        level = top - 1 - i  # parents at this level, children one below
        csum = jax.ops.segment_sum(jnp.where(v & (d == level + 1), val, 0.0), seg, n + 1)[:n]
        upd = v & ~leaf & (d == level) & (n_child > 0)
        return jnp.where(upd, csum / jnp.maximum(n_child, 1.0), val)

    return jax.lax.fori_loop(0, top, body, val)


def _per_forest(fn):
    """Lets an ``[N]`` function take ``[P, N]`` forests (vmapped over the leading axis)."""

    def wrapped(parent, *args, **kw):
        if jnp.ndim(parent) == 2:
            # array keywords (e.g. leaf_selected [P, N]) are mapped with the forest arrays
            arr = {k: x for k, x in kw.items() if x is not None and hasattr(x, "shape")}
            rest = {k: x for k, x in kw.items() if k not in arr}
            return jax.vmap(lambda a, akw: fn(*a, **akw, **rest))((parent, *args), arr)
        return fn(parent, *args, **kw)

    wrapped.__doc__ = fn.__doc__
    wrapped.__name__ = fn.__name__
    wrapped.__qualname__ = fn.__qualname__
    return wrapped


@_per_forest
def tree_values(
    parent: Array,
    is_leaf: Array,
    leaf_reward: Array,
    node_valid: Array,
    *,
    mode: str = "leaf_mean",
    method: str = "bottom_up",
) -> Array:
    """Node values of a forest of rollouts.

    ``mode="leaf_mean"``: ``V(n) = mean of leaf_reward over the leaves below n`` (Monte Carlo
    value over descendants: TreeRL, TreePS-RAG). Nodes without a valid leaf below hold 0.
    ``mode="child_mean"``: recursive mean over children, ``V(leaf) = r``,
    ``V(n) = mean_{children c} V(c)`` (SPO-tree, AIFrameResearch/SPO ``_construct_tree``);
    differs from leaf_mean on unbalanced trees.

    Args:
      parent: int32 ``[N]`` (or ``[P, N]``, vmapped) parent ids, -1 for roots.
      is_leaf: bool ``[N]``; leaf_reward: float ``[N]``; node_valid: bool ``[N]``.
      mode: ``"leaf_mean"`` | ``"child_mean"``.
      method: ``"bottom_up"`` (segment sums per depth level, linear memory) or
        ``"ancestor"`` (dense ancestor matrix; leaf_mean only).

    Returns: float32 ``[N]`` (``[P, N]``), 0 on invalid nodes.
    """
    v = jnp.asarray(node_valid, bool)
    leaf = jnp.asarray(is_leaf, bool) & v
    r = jnp.where(leaf, jnp.asarray(leaf_reward, jnp.float32), 0.0)
    if mode == "child_mean":
        if method != "bottom_up":
            raise ValueError("tree_values: mode='child_mean' needs method='bottom_up'")
        return jnp.where(v, _child_mean_values(parent, leaf, r, v), 0.0)
    if mode != "leaf_mean":
        raise ValueError(f"tree_values: mode must be 'leaf_mean' or 'child_mean', got {mode!r}")
    if method == "ancestor":
        anc = ancestor_matrix(parent, v).astype(jnp.float32)
        tot = jnp.dot(r, anc, preferred_element_type=jnp.float32)
        cnt = jnp.dot(leaf.astype(jnp.float32), anc, preferred_element_type=jnp.float32)
    elif method == "bottom_up":
        d = node_depth(parent, v)
        tot = subtree_sum(r, parent, v, d)
        cnt = subtree_sum(leaf.astype(jnp.float32), parent, v, d)
    else:
        raise ValueError(f"tree_values: method must be 'bottom_up' or 'ancestor', got {method!r}")
    return jnp.where(v & (cnt > 0), tot / jnp.maximum(cnt, 1.0), 0.0)


# --------------------------------------------------------------------------------------------
# node advantages
# --------------------------------------------------------------------------------------------


def _gather_parent(x: Array, p: Array, fill: float = 0.0) -> Array:
    n = p.shape[0]
    return jnp.where(p >= 0, x[jnp.clip(p, 0, n - 1)], fill)


@_per_forest
def treerl_node_advantages(
    parent: Array,
    is_leaf: Array,
    leaf_reward: Array,
    node_valid: Array,
    *,
    variant: str = "paper",
    leaf_selected: Array | None = None,
) -> tuple[Array, Array]:
    """TreeRL / EPTree node advantages (Hou et al., ACL 2025, arXiv 2506.11902).

    Paper form (``variant="paper"``; ``docs/algorithms.md`` (TA) 1.2)::

      V(s) = mean of leaf rewards below s;  G_A = V(s) - V(root);  L_A = V(s) - V(parent(s))
      R(s) = (G_A + L_A) / sqrt(|L(s)|)

    Code form (``variant="code"``; THUDM/TreeRL ``tree_node.py`` with the released flags
    ``--use_state_value_reward --use_weighted_value --weighted_value_style sqrt``, 1.3)::

      r'_l = r_l - (S - r_l)/(K - 1)        (leave-one-out over the K leaves of the forest)
      acc(s) = sum_{l below s} r'_l / sqrt(sel(s))   (sel = selected leaves below s, if > 0)
      W(s) = acc(s) / |L(s)|;  local(s) = W(s) - W(parent(s))
      fill_in_paths: |local(s)| < 1e-8 below the first level -> local of the parent (filled)
      A(s) = local(s) + W(s)

    Roots (virtual roots) get 0. Forests with one leaf give 0 (nothing to compare).

    Args:
      parent, is_leaf, leaf_reward, node_valid: the forest (``[N]`` or ``[P, N]``).
      variant: ``"paper"`` | ``"code"``.
      leaf_selected: optional bool ``[N]``: leaves kept for training (``num_traces``; code
        variant's ``sqrt(sel)``); default all leaves.

    Returns: ``(advantages [N], values [N])`` float32; values are ``V`` (paper) or ``W`` (code).
    """
    v = jnp.asarray(node_valid, bool)
    p = _clean_parent(parent, v)
    leaf = jnp.asarray(is_leaf, bool) & v
    r = jnp.where(leaf, jnp.asarray(leaf_reward, jnp.float32), 0.0)
    d = node_depth(p, v)
    root = node_root(p, v)
    n_leaf = subtree_sum(leaf.astype(jnp.float32), p, v, d)
    is_root = p < 0
    if variant == "paper":
        tot = subtree_sum(r, p, v, d)
        val = jnp.where(n_leaf > 0, tot / jnp.maximum(n_leaf, 1.0), 0.0)
        g = val - val[root]
        loc = val - _gather_parent(val, p)
        adv = (g + loc) * jax.lax.rsqrt(jnp.maximum(n_leaf, 1.0))
        ok = v & ~is_root & (n_leaf > 0)
        return jnp.where(ok, adv, 0.0), jnp.where(v, val, 0.0)
    if variant != "code":
        raise ValueError(f"treerl: variant must be 'paper' or 'code', got {variant!r}")
    k = n_leaf[root]
    s_tot = subtree_sum(r, p, v, d)[root]
    r_loo = jnp.where(leaf & (k > 1), k / jnp.maximum(k - 1.0, 1.0) * (r - s_tot / k), 0.0)
    acc = subtree_sum(r_loo, p, v, d)
    sel_leaf = leaf if leaf_selected is None else leaf & jnp.asarray(leaf_selected, bool)
    sel = subtree_sum(sel_leaf.astype(jnp.float32), p, v, d)
    acc = jnp.where(sel > 0, acc * jax.lax.rsqrt(jnp.maximum(sel, 1.0)), acc)
    w = jnp.where(v & (n_leaf > 0), acc / jnp.maximum(n_leaf, 1.0), 0.0)
    loc = jnp.where(is_root, 0.0, w - _gather_parent(w, p))
    # fill_in_paths: nearest ancestor-or-self with a non-negligible local term, stopping at
    # the first node of the path (depth 1); found by pointer jumping.
    n = p.shape[0]
    src = _pointer_jump(jnp.where((jnp.abs(loc) >= 1e-8) | (d <= 1) | (p < 0), jnp.arange(n), p))
    adv = loc[src] + w
    return jnp.where(v & ~is_root & (n_leaf > 0), adv, 0.0), w


def _bok(x: Array, k: int = 4) -> Array:
    return 1.0 - (1.0 - x) ** k


@_per_forest
def spo_tree_node_advantages(
    parent: Array,
    is_leaf: Array,
    leaf_reward: Array,
    node_valid: Array,
    *,
    adv_method: str = "rloo",
    eps: float = 1e-8,
) -> tuple[Array, Array, Array]:
    """SPO-tree edge advantages (Guo et al., arXiv 2505.23564; AIFrameResearch/SPO).

    ``V`` = recursive child mean (:func:`tree_values` ``child_mean``);
    ``adv_method="rloo"`` (default): ``A(c) = V(c) - V(parent)`` (= V(c) minus the mean of
    its siblings); ``"grpo"``: ``(V(c) - V(parent)) / (std_pop(siblings' V) + eps)``.
    An edge is kept when ``A + BoK(V_c) - BoK(V_p) != 0`` with ``BoK(v) = 1 - (1 - v)^4``
    (``only_adv_greater_than_zero``; in effect ``A != 0``).

    Returns: ``(advantages [N], values [N], keep bool[N])``; roots and invalid nodes 0/False.
    """
    v = jnp.asarray(node_valid, bool)
    p = _clean_parent(parent, v)
    n = p.shape[0]
    val = tree_values(p, is_leaf, leaf_reward, v, mode="child_mean")
    vp = _gather_parent(val, p)
    a = val - vp
    if adv_method == "grpo":
        seg = jnp.where(p >= 0, p, n)
        cnt = jax.ops.segment_sum(v.astype(jnp.float32), seg, n + 1)[:n]
        sq = jax.ops.segment_sum(jnp.where(v, val * val, 0.0), seg, n + 1)[:n]
        mean = jax.ops.segment_sum(jnp.where(v, val, 0.0), seg, n + 1)[:n] / jnp.maximum(cnt, 1)
        sd = jnp.sqrt(jnp.maximum(sq / jnp.maximum(cnt, 1.0) - mean * mean, 0.0))
        a = a / (_gather_parent(sd, p) + eps)
    elif adv_method != "rloo":
        raise ValueError(f"spo_tree: adv_method must be 'rloo' or 'grpo', got {adv_method!r}")
    edge = v & (p >= 0)
    a = jnp.where(edge, a, 0.0)
    keep = edge & ((a + _bok(val) - _bok(vp)) != 0)
    return a, jnp.where(v, val, 0.0), keep


@_per_forest
def sibling_node_advantages(
    parent: Array,
    is_leaf: Array,
    leaf_reward: Array,
    node_valid: Array,
    *,
    value_mode: str = "child_mean",
    std: str = "pop",
    eps: float = 1e-8,
) -> tuple[Array, Array]:
    """Sibling-relative GRPO: ``A(c) = (V(c) - mean_sib V) / (std_sib V + eps)``.

    Siblings are the valid children of ``parent(c)`` (c included). With
    ``value_mode="child_mean"`` and ``std="pop"`` this is SPO-tree's ``grpo`` mode without the
    edge filter; ``value_mode="leaf_mean"`` uses Monte Carlo leaf averages (TreePS-RAG style).
    ``std``: ``"pop"`` | ``"unbiased"`` | ``"none"``. Only children and roots get 0.

    Returns: ``(advantages [N], values [N])`` float32.
    """
    v = jnp.asarray(node_valid, bool)
    p = _clean_parent(parent, v)
    val = tree_values(p, is_leaf, leaf_reward, v, mode=value_mode)
    edge = v & (p >= 0)
    ids, nb = dense_ids((p,), edge)
    a = group_normalize(val, ids, edge, nb, std=std, eps=eps)
    return a, val


# --------------------------------------------------------------------------------------------
# token-level estimators
# --------------------------------------------------------------------------------------------


def _to_tokens(node_x: Array, tok_node: Array, mask: Array) -> Array:
    tn = jnp.asarray(tok_node, jnp.int32)
    n = node_x.shape[0]
    ok = jnp.asarray(mask, bool) & (tn >= 0) & (tn < n)
    return jnp.where(ok, node_x[jnp.clip(tn, 0, n - 1)], 0.0)


def _tree_args(fn, tok_node, parent, is_leaf, leaf_reward, node_valid):
    names = ("tok_node", "parent", "is_leaf", "leaf_reward", "node_valid")
    for name, val in zip(names, (tok_node, parent, is_leaf, leaf_reward, node_valid), strict=True):
        if val is None:
            raise ValueError(
                f"{fn}: keyword argument {name!r} is required (tree layout: parent/is_leaf/"
                "leaf_reward/node_valid [N], tok_node [B, T]; see credit.trees)"
            )
    if jnp.ndim(parent) != 1:
        raise ValueError(
            f"{fn}: tree arrays must be one flattened forest [N]; got parent with shape "
            f"{jnp.shape(parent)} (use credit.trees.flatten_forests for [P, N] forests)"
        )


@registry.register("treerl", inputs=_FOREST)
def treerl(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    tok_node: Array | None = None,
    parent: Array | None = None,
    is_leaf: Array | None = None,
    leaf_reward: Array | None = None,
    node_valid: Array | None = None,
    variant: str = "paper",
    leaf_selected: Array | None = None,
    truncated: Array | None = None,
) -> tuple[Array, Array]:
    """TreeRL token advantages: :func:`treerl_node_advantages` of each token's node.

    Used directly as the advantage (no whitening, as in the code). ``token_rewards`` and
    ``group_ids`` are unused: rewards live on the leaves and the forest encodes the groups.
    ``truncated`` (optional bool ``[B]``, code variant's ``--mask_repeated_samples``) sets
    every token of an unfinished row to -1.

    Returns: ``(advantages, values)`` ``[B, T]`` (values: ``V`` or ``W`` of the node).
    """
    _tree_args("treerl", tok_node, parent, is_leaf, leaf_reward, node_valid)
    a, val = treerl_node_advantages(
        parent, is_leaf, leaf_reward, node_valid, variant=variant, leaf_selected=leaf_selected
    )
    m = jnp.asarray(response_mask, bool)
    adv = _to_tokens(a, tok_node, m)
    if truncated is not None:
        adv = jnp.where(m & jnp.asarray(truncated, bool)[:, None], -1.0, adv)
    return adv, _to_tokens(val, tok_node, m)


@registry.register("spo_tree", inputs=_FOREST, optional={"logp": "old_logprobs"})
def spo_tree(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    tok_node: Array | None = None,
    parent: Array | None = None,
    is_leaf: Array | None = None,
    leaf_reward: Array | None = None,
    node_valid: Array | None = None,
    adv_method: str = "rloo",
    logp: Array | None = None,
    rho: float = 0.9,
    whiten: bool = True,
) -> tuple[Array, Array]:
    """SPO-tree token advantages: each token gets its edge's advantage.

    :func:`spo_tree_node_advantages`; tokens of dropped edges (``A == 0``) and, when ``logp``
    is given, tokens with ``exp(logp) >= rho`` (SPO's probability mask) get 0 and leave the
    whitening statistics; then (``whiten``) ``masked_whiten`` over the remaining tokens.
    Rows are typically single edges (query = parent's text, response = the child segment).

    Returns: ``(advantages, values)`` ``[B, T]`` (values: child-mean ``V`` of the node).
    """
    _tree_args("spo_tree", tok_node, parent, is_leaf, leaf_reward, node_valid)
    a, val, keep = spo_tree_node_advantages(
        parent, is_leaf, leaf_reward, node_valid, adv_method=adv_method
    )
    m = jnp.asarray(response_mask, bool)
    live = m & (_to_tokens(keep.astype(jnp.float32), tok_node, m) > 0)
    if logp is not None:
        live = live & (jnp.exp(jnp.asarray(logp, jnp.float32)) < rho)
    adv = jnp.where(live, _to_tokens(a, tok_node, m), 0.0)
    if whiten:
        adv = masked_whiten(adv, live)
    return adv, _to_tokens(val, tok_node, m)


@registry.register("sibling_grpo", inputs=_FOREST)
def sibling_grpo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    tok_node: Array | None = None,
    parent: Array | None = None,
    is_leaf: Array | None = None,
    leaf_reward: Array | None = None,
    node_valid: Array | None = None,
    value_mode: str = "child_mean",
    std: str = "pop",
    eps: float = 1e-8,
) -> tuple[Array, Array]:
    """Sibling-relative GRPO token advantages (:func:`sibling_node_advantages`), no whitening.

    Returns: ``(advantages, values)`` ``[B, T]``.
    """
    _tree_args("sibling_grpo", tok_node, parent, is_leaf, leaf_reward, node_valid)
    a, val = sibling_node_advantages(
        parent, is_leaf, leaf_reward, node_valid, value_mode=value_mode, std=std, eps=eps
    )
    m = jnp.asarray(response_mask, bool)
    return _to_tokens(a, tok_node, m), _to_tokens(val, tok_node, m)


@registry.register("tree_grpo", inputs={"tree_ids": "tree_id"})
def tree_grpo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    tree_ids: Array | None = None,
    outcome: Array | None = None,
    eps: float = 1e-6,
) -> tuple[Array, Array]:
    """Tree-GRPO (Ji et al., arXiv 2509.21240; AMAP-ML/Tree-GRPO ``adv_estimator='tree'``).

    Rows are leaves (complete trajectories)::

      A(l) = (r_l - mean_prompt r) / (std_unbiased + eps) + (r_l - mean_tree r) / (std + eps)

    with the prompt group from ``group_ids`` and the tree (one of the m trees per prompt)
    from ``tree_ids``; the scalar is broadcast to every masked token. Groups of one give 0
    (verl's GRPO uses mean 0, std 1 there and returns the raw score).

    Args:
      tree_ids: int32 ``[B]`` tree of each row (required; unique within a prompt is enough:
        groups are keyed on ``(group_ids, tree_ids)``).
      outcome: optional ``[B]``; else the masked row sum of ``token_rewards``.

    Returns: ``(advantages, returns)`` ``[B, T]``; returns hold the row outcome.
    """
    if tree_ids is None:
        raise ValueError("tree_grpo: keyword argument 'tree_ids' int32[B] is required")
    m = jnp.asarray(response_mask, bool)
    valid = jnp.any(m, -1)
    if outcome is None:
        r = jnp.sum(jnp.where(m, jnp.asarray(token_rewards, jnp.float32), 0.0), -1)
    else:
        r = jnp.asarray(outcome, jnp.float32)
    g = jnp.asarray(group_ids, jnp.int32)
    ids, nb = dense_ids((g,), valid)
    inter = group_normalize(r, ids, valid, nb, std="unbiased", eps=eps)
    ids2, nb2 = dense_ids((g, jnp.asarray(tree_ids, jnp.int32)), valid)
    intra = group_normalize(r, ids2, valid, nb2, std="unbiased", eps=eps)
    a = inter + intra
    return jnp.where(m, a[:, None], 0.0), jnp.where(m, r[:, None], 0.0)


# --------------------------------------------------------------------------------------------
# host-side helper
# --------------------------------------------------------------------------------------------


def flatten_forests(parent, is_leaf, leaf_reward, node_valid, tok_node=None, forest_of_row=None):
    """Turns ``[P, N]`` per-prompt forests into one ``[P * N]`` forest with global node ids.

    ``tok_node [B, T]`` (local ids, -1 = none) and ``forest_of_row int32[B]`` (which forest row
    b belongs to) become global ids ``forest * N + local``. Works on numpy or jax arrays.

    Returns: ``(parent, is_leaf, leaf_reward, node_valid, tok_node_or_None)``.
    """
    parent = jnp.asarray(parent, jnp.int32)
    p, n = parent.shape
    off = (jnp.arange(p, dtype=jnp.int32) * n)[:, None]
    gpar = jnp.where(parent >= 0, parent + off, -1).reshape(-1)
    flat = [jnp.asarray(x).reshape(-1) for x in (is_leaf, leaf_reward, node_valid)]
    tn = None
    if tok_node is not None:
        if forest_of_row is None:
            raise ValueError("flatten_forests: 'forest_of_row' int32[B] is needed with tok_node")
        tok_node = jnp.asarray(tok_node, jnp.int32)
        f = jnp.asarray(forest_of_row, jnp.int32)[:, None]
        tn = jnp.where(tok_node >= 0, tok_node + f * n, -1)
    return gpar, flat[0], flat[1], flat[2], tn
