"""Tokenization of a model zoo: layout (per-layer normalisation), tokenizer, token store.

Public API: :class:`Layout`, :func:`build_layout`, :func:`tokenize`, :func:`detokenize`,
:func:`write_token_store`, :func:`shard_names`, :class:`TokenStore`.
"""

from rpg.tokens.layout import LayerSpec, Layout, LayoutBuilder, build_layout
from rpg.tokens.store import TokenStore, shard_names, write_token_store
from rpg.tokens.tokenizer import detokenize, tokenize

__all__ = [
    "LayerSpec",
    "Layout",
    "LayoutBuilder",
    "TokenStore",
    "build_layout",
    "detokenize",
    "shard_names",
    "tokenize",
    "write_token_store",
]
