"""The additive attention of section 6.4.2: rank biases, per-sample masks in a batch, a reference layer."""

from __future__ import annotations

import math

import numpy as np
import torch

from replens.tokens import (
    RankBias,
    VisualTokenEncoder,
    VisualTokens,
    collate_tokens,
    nearest_neighbours,
    per_head_mask,
    preset_config,
)


def _sample(rng: np.random.Generator, n: int, m: int) -> VisualTokens:
    xy = rng.uniform(0, 0.7, size=(n, 2))
    boxes = np.concatenate([xy, xy + 0.25], axis=1)
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    chosen = [pairs[k] for k in rng.choice(len(pairs), size=min(m, len(pairs)), replace=False)] if pairs else []
    return VisualTokens(
        image_features=rng.normal(size=6),
        tangible=rng.normal(size=(n, 5)),
        intangible=rng.normal(size=(len(chosen), 4)),
        triplets=[(s, o, c) for c, (s, o) in enumerate(chosen)],
        neighbours=nearest_neighbours(boxes),
        boxes=boxes,
    )


def _encoder(additive: bool = True, seed: int = 0, layers: int = 2) -> VisualTokenEncoder:
    torch.manual_seed(seed)
    config = preset_config("tiny", embed_dim=8, additive_attention=additive, layers=layers)
    enc = VisualTokenEncoder(config, 6, 5, 4).eval()
    with torch.no_grad():  # make the rank biases large and distinct so that mixing them up shows
        enc.rank_bias.weight.copy_(torch.linspace(-1.0, 1.5, 7)) if enc.rank_bias is not None else None
    return enc


def test_rank_bias_is_zero_then_cumsum_exp() -> None:
    bias = RankBias()
    with torch.no_grad():
        bias.weight.copy_(torch.tensor([0.1, -0.3, 0.5, 0.0, 1.2, -2.0, 0.7]))
    w = bias.weight.detach().numpy()
    expected = [0.0] + [sum(math.exp(v) for v in w[:r]) for r in range(1, 8)]
    np.testing.assert_allclose(bias.table().detach().numpy(), expected, rtol=1e-6)
    ranks = torch.tensor([[[0, 7], [3, 5]]])
    np.testing.assert_allclose(bias(ranks).detach().numpy()[0], [[0, expected[7]], [expected[3], expected[5]]],
                               rtol=1e-6)
    assert bias.table()[0] == 0 and (bias.table().diff() > 0).all()  # monotone in the rank


def test_per_head_mask_rows_follow_multihead_attention_layout() -> None:
    bias = torch.arange(3, dtype=torch.float32)[:, None, None].expand(3, 2, 2)  # sample b is filled with b
    mask = per_head_mask(bias, heads=4)
    # nn.MultiheadAttention views the (B*H, L, L) mask as (B, H, L, L): row b*H + h is sample b
    assert mask.view(3, 4, 2, 2)[:, :, 0, 0].tolist() == [[0] * 4, [1] * 4, [2] * 4]
    # the authors' mask.repeat(heads, 1, 1) would give sample (b*H + h) % B
    wrong = bias.repeat(4, 1, 1).view(3, 4, 2, 2)[:, :, 0, 0]
    assert wrong.tolist() != mask.view(3, 4, 2, 2)[:, :, 0, 0].tolist()


def test_batch_matches_per_sample_loop() -> None:
    rng = np.random.default_rng(0)
    samples = [_sample(rng, n, m) for n, m in [(3, 4), (1, 0), (5, 9), (2, 1), (4, 6)]]
    for additive in (True, False):
        enc = _encoder(additive)
        with torch.no_grad():
            batched = enc(collate_tokens(samples))
            single = torch.cat([enc(collate_tokens([s])) for s in samples])
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_authors_head_order_would_break_the_batch_equivalence() -> None:
    """With the authors' ``repeat(heads, 1, 1)`` samples of a batch see each other's masks."""
    rng = np.random.default_rng(1)
    samples = [_sample(rng, 4, 5), _sample(rng, 4, 0), _sample(rng, 4, 3)]
    enc = _encoder(True)
    batch = collate_tokens(samples)
    wrong_order = lambda b, h: b.repeat(h, 1, 1)  # noqa: E731
    with torch.no_grad():
        right = enc(batch)
        import replens.tokens.encoder as module

        original = module.per_head_mask
        module.per_head_mask = wrong_order
        try:
            wrong = enc(batch)
        finally:
            module.per_head_mask = original
        single = torch.cat([enc(collate_tokens([s])) for s in samples])
    torch.testing.assert_close(right, single, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(wrong, single, atol=1e-3)


def test_one_layer_matches_a_reference_attention() -> None:
    """softmax(q k^T / sqrt(d) + bias[A]) v per head, pre-norm, GELU MLP, written out by hand."""
    rng = np.random.default_rng(2)
    samples = [_sample(rng, 3, 4), _sample(rng, 2, 1)]
    enc = _encoder(True, layers=1)
    batch = collate_tokens(samples)
    with torch.no_grad():
        got = enc.forward_tokens(batch)
        x = enc.embed(batch)
        layer = enc.transformer[0]
        heads, width = enc.config.heads, enc.config.width
        d = width // heads
        h = layer.norm1(x)
        q, k, v = torch.nn.functional.linear(h, layer.attn.in_proj_weight, layer.attn.in_proj_bias).chunk(3, -1)
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)  # noqa: E731
        logits = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
        table = enc.rank_bias.table()
        logits = logits + table[batch.ranks][:, None]  # the same bias in every head
        logits = logits.masked_fill(batch.padding[:, None, None, :], float("-inf"))
        att = logits.softmax(-1) @ split(v)
        att = att.transpose(1, 2).reshape(x.shape)
        x = x + layer.attn.out_proj(att)
        mlp = layer.mlp
        x = x + mlp[3](torch.nn.functional.gelu(mlp[0](layer.norm2(x))))
        ref = enc.ln_final(x)
    valid = ~batch.padding
    torch.testing.assert_close(got[valid], ref[valid], atol=1e-5, rtol=1e-5)


def test_ranks_change_the_output_only_with_additive_attention() -> None:
    rng = np.random.default_rng(3)
    sample = _sample(rng, 4, 5)
    batch = collate_tokens([sample])
    shuffled = collate_tokens([sample])
    shuffled.ranks = torch.flip(shuffled.ranks, dims=[1, 2])  # same tokens, other relations
    for additive, differs in ((True, True), (False, False)):
        enc = _encoder(additive)
        with torch.no_grad():
            a, b = enc(batch), enc(shuffled)
        assert (not torch.allclose(a, b, atol=1e-5)) == differs


def test_gradients_reach_the_rank_weights_and_type_embeddings() -> None:
    rng = np.random.default_rng(4)
    enc = _encoder(True).train()
    out = enc(collate_tokens([_sample(rng, 3, 4), _sample(rng, 2, 2)]))
    out.square().sum().backward()
    assert enc.rank_bias.weight.grad is not None and enc.rank_bias.weight.grad.abs().sum() > 0
    assert enc.type_embedding.grad.abs().sum(dim=1).gt(0).all()


def test_inference_equals_training_mode_without_dropout() -> None:
    """Guards against inference fast paths that mishandle float masks (nn.TransformerEncoderLayer does)."""
    rng = np.random.default_rng(5)
    batch = collate_tokens([_sample(rng, 4, 6), _sample(rng, 2, 1), _sample(rng, 1, 0)])
    enc = _encoder(True)
    with torch.no_grad():
        inference = enc(batch)
        enc.train()
        training = enc(batch)
    assert torch.isfinite(inference).all()
    torch.testing.assert_close(inference, training, atol=1e-5, rtol=1e-5)
