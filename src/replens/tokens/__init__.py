"""Visual Token Encoder (``replens.tokens``): object and relation tokens, ranked additive attention,
CLIP-style training, retrieval and compositionality (paper chapter 6).

Pipeline::

    from replens.tokens import (ExtractConfig, PairData, TokenDataset, TokenTrainConfig,
                                extract_tokens, train_token_model)
    from replens.vl import load_vl_model

    vl = load_vl_model()                                        # the text tower (tiny CLIP by default)
    extract_tokens(ExtractConfig(data="world:runs/world?split=train"), "runs/tok-train", vl=vl)
    extract_tokens(ExtractConfig(data="world:runs/world?split=test"), "runs/tok-test", vl=vl)
    result = train_token_model(TokenTrainConfig(encoder="tokens", steps=500),
                               PairData(TokenDataset("runs/tok-train")), vl, "runs/token-run",
                               val_data=PairData(TokenDataset("runs/tok-test")))

Pieces: :class:`VisualTokens` and :func:`rank_matrix` (Eq. 6.1); the
extractors (world ground truth, Mask R-CNN with geometric predicates,
Visual Genome / PSG scene graphs); :class:`VisualTokenEncoder` with
:class:`RankBias`; the baselines and :class:`DualEncoder`; the trainer; and
retrieval / compositional evaluation.
"""

from replens.tokens.cache import TokenBatch, TokenCacheError, TokenCacheWriter, TokenDataset, collate_tokens
from replens.tokens.encoder import (
    PRESETS,
    RankBias,
    TokenEncoderConfig,
    VisualTokenEncoder,
    box_features,
    per_head_mask,
    preset_config,
)
from replens.tokens.extract import (
    GraphTokenizer,
    RelationEmbedder,
    SceneGraph,
    build_tokens,
    default_pool_layers,
    mask_pool,
    world_scene_graph,
)
from replens.tokens.geometry import GeometryConfig, geometric_relations, spatial_relation
from replens.tokens.maskrcnn import MaskRCNNTokenizer, build_maskrcnn, find_maskrcnn_weights
from replens.tokens.model import ENCODERS, DualEncoder, PatchViTEncoder, build_dual_encoder, load_token_model
from replens.tokens.pipeline import (
    EXTRACTORS,
    ExtractConfig,
    extract_tokens,
    maskrcnn_tokenizer_from_cache,
    tokenizer_from_cache,
)
from replens.tokens.sample import CONTEXT_LENGTH, VisualTokens, nearest_neighbours, rank_matrix
from replens.tokens.scene_graph import SceneGraphRecord, load_psg, load_visual_genome
from replens.tokens.scoring import (
    PairData,
    compositional_metrics,
    embed_captions,
    embed_items,
    image_embedder,
    retrieval_metrics,
    text_embedder,
)
from replens.tokens.train import TokenTrainConfig, train_token_model
from replens.tokens.world import CompositionalSet, world_compositional_sets

__all__ = [
    "CONTEXT_LENGTH",
    "ENCODERS",
    "EXTRACTORS",
    "PRESETS",
    "CompositionalSet",
    "DualEncoder",
    "ExtractConfig",
    "GeometryConfig",
    "GraphTokenizer",
    "MaskRCNNTokenizer",
    "PairData",
    "PatchViTEncoder",
    "RankBias",
    "RelationEmbedder",
    "SceneGraph",
    "SceneGraphRecord",
    "TokenBatch",
    "TokenCacheError",
    "TokenCacheWriter",
    "TokenDataset",
    "TokenEncoderConfig",
    "TokenTrainConfig",
    "VisualTokenEncoder",
    "VisualTokens",
    "box_features",
    "build_dual_encoder",
    "build_maskrcnn",
    "build_tokens",
    "collate_tokens",
    "compositional_metrics",
    "default_pool_layers",
    "embed_captions",
    "embed_items",
    "extract_tokens",
    "find_maskrcnn_weights",
    "geometric_relations",
    "image_embedder",
    "load_psg",
    "load_token_model",
    "load_visual_genome",
    "mask_pool",
    "maskrcnn_tokenizer_from_cache",
    "nearest_neighbours",
    "per_head_mask",
    "preset_config",
    "rank_matrix",
    "retrieval_metrics",
    "spatial_relation",
    "text_embedder",
    "tokenizer_from_cache",
    "train_token_model",
    "world_compositional_sets",
    "world_scene_graph",
]
