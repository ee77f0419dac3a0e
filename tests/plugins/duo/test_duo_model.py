"""The Duo model against plain OpenELM: all-big, all-small, skip, gathered routing, decoding."""

from __future__ import annotations

import dataclasses

import torch

from plugins.duo.model import DuoConfig
from plugins.duo.routed_ffn import routed_ffn
from plugins.duo.routers import BIG, SKIP, SMALL, Route
from plugins.lm.sampling import generate
from plugins.openelm import OpenELM, OpenELMConfig

from duo_models import TINY, route_all, tiny_duo

PLAIN = {key: value for key, value in TINY.items() if key != "small_ffn_ratio"}


@dataclasses.dataclass
class GivenWidthsConfig(OpenELMConfig):
    """An OpenELM whose block widths are given (here: the Duo model's small widths)."""

    widths: list = dataclasses.field(default_factory=list)

    def layer_widths(self):
        return self.widths or super().layer_widths()


def test_all_big_is_the_plain_openelm_forward_bit_for_bit(token_ids):
    duo = route_all(tiny_duo(), "big")
    plain = OpenELM(OpenELMConfig(**PLAIN)).eval()
    missing = duo.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".small_ffn." in key for key in missing)
    assert torch.equal(duo(token_ids), plain(token_ids))
    cache_duo, cache_plain = duo.make_cache(2, 12), plain.make_cache(2, 12)
    assert torch.equal(duo.forward_step(token_ids, cache_duo), plain.forward_step(token_ids, cache_plain))
    assert (duo.last_choices() == BIG).all() and duo.big_share().item() == 1.0


def test_all_small_is_an_openelm_with_the_small_widths(token_ids):
    duo = route_all(tiny_duo(), "small")
    config: DuoConfig = duo.config
    small = OpenELM(GivenWidthsConfig(**PLAIN, widths=config.small_layer_widths())).eval()
    assert [layer.ffn.proj_2.in_features for layer in small.layers] == [
        max(1, w.ffn_dim // 4) for w in config.layer_widths()]
    state = {key.replace(".small_ffn.", ".ffn."): value for key, value in duo.state_dict().items()
             if ".ffn." not in key and not key.startswith("router.")}
    small.load_state_dict(state)
    assert torch.equal(duo(token_ids), small(token_ids))


def test_skip_passes_the_residual_unchanged(token_ids):
    duo = route_all(tiny_duo(), "skip")
    block = duo.layers[1]
    x = torch.randn(2, 12, 64)
    cos, sin = duo._rope(12)
    after_attention = x + block.attn(block.attn_norm(x), cos, sin)
    assert torch.equal(block(x, cos, sin), after_attention)
    # The whole model equals a plain one whose FFNs output exactly zero.
    plain = OpenELM(OpenELMConfig(**PLAIN)).eval()
    plain.load_state_dict(duo.state_dict(), strict=False)
    for layer in plain.layers:
        torch.nn.init.zeros_(layer.ffn.proj_2.weight)
    assert torch.equal(duo(token_ids), plain(token_ids))


def test_gathered_routing_equals_choosing_per_token_from_dense_outputs():
    duo = tiny_duo()
    block = duo.layers[0]
    normed = torch.randn(3, 10, 64)
    choices = torch.randint(0, 3, (3, 10), generator=torch.Generator().manual_seed(3))
    for inference in (False, True):
        update = routed_ffn(block.ffn, block.small_ffn, normed, Route(choices), inference)
        big, small = block.ffn(normed), block.small_ffn(normed)
        expected = torch.where((choices == BIG)[..., None], big,
                               torch.where((choices == SMALL)[..., None], small, torch.zeros_like(big)))
        torch.testing.assert_close(update, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(update[choices == SKIP], torch.zeros_like(update[choices == SKIP]))
    all_skip = Route(torch.full((3, 10), SKIP))
    assert routed_ffn(block.ffn, block.small_ffn, normed, all_skip) is None


def test_random_routing_trains_through_the_gathered_path(token_ids):
    duo = tiny_duo().train()
    logits = duo(token_ids)
    logits.float().logsumexp(-1).mean().backward()
    choices = duo.last_choices()
    for index, layer in enumerate(duo.layers):
        used_small = bool((choices[index] == SMALL).any())
        assert (layer.small_ffn.proj_1.weight.grad is not None) == used_small
        assert layer.ffn.proj_1.weight.grad is not None and layer.ffn.proj_1.weight.grad.abs().sum() > 0


def test_the_kv_cache_generator_works_with_every_router(token_ids, tmp_path):
    prompt = token_ids[:, :5]
    oracle_file = tmp_path / "oracle.json"
    oracle_file.write_text('{"budgets": [{"max_big": 1, "best_pattern": ["small", "big", "skip"]}]}')
    deterministic = {"fixed": {"pattern": ["big", "skip", "small"]}, "learned": {},
                     "oracle": {"patterns_file": str(oracle_file), "max_big": 1}}
    for name, options in deterministic.items():
        duo = tiny_duo(name, **options)
        cached = generate(duo, prompt, 6)
        assert torch.equal(cached, generate(duo, prompt, 6, use_cache=False)), name
    duo = tiny_duo("random")
    torch.manual_seed(5)
    first = generate(duo, prompt, 6)
    torch.manual_seed(5)
    assert torch.equal(first, generate(duo, prompt, 6)) and first.shape == (2, 11)


def test_flops_count_only_the_ffns_the_tokens_were_routed_to(token_ids):
    duo = route_all(tiny_duo(), "big")
    plain = OpenELM(OpenELMConfig(**PLAIN))
    duo(token_ids)
    assert duo.flops_per_token(12) == plain.flops_per_token(12)
    route_all(duo, "skip")(token_ids)
    ffn_parameters = sum(p.numel() for layer in plain.layers for p in layer.ffn.parameters())
    assert duo.flops_per_token(12) == plain.flops_per_token(12) - 6 * ffn_parameters
