"""Generation speed with OpenELM's KV cache (`plugins.lm.sampling.generate`), two measurements:

(a) batched: greedy generation for `--prompts` prompts of random lengths, `--batch-size` at a time
    LEFT padded, against the same prompts one at a time (both with the KV cache): prompts/s ratio.
(b) decoding at batch 1: a tiny OpenELM with uniform widths and Q/K norm off (exactly a LLaMA)
    against transformers' `LlamaForCausalLM.generate` on the same weights; greedy, the same number
    of new tokens, the continuations checked equal; tokens/s ratio (new tokens / generate time).

    python tools/bench_generate.py                       # both, about a minute on 2 CPU cores
    python tools/bench_generate.py --hf-attention eager  # transformers' eager attention

Timings are medians over `--repeats` runs (the two sides alternating) after one warmup each. The last
line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from plugins.lm.sampling import generate
from plugins.openelm.config import OpenELMConfig, OpenELMTinyConfig
from plugins.openelm.model import OpenELM


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=32, help="(a) number of prompts")
    parser.add_argument("--batch-size", type=int, default=16, help="(a) prompts per batch")
    parser.add_argument("--new-tokens", type=int, default=32, help="(a) new tokens per prompt")
    parser.add_argument("--decode-tokens", type=int, default=128, help="(b) new tokens")
    parser.add_argument("--prompt-length", type=int, default=16, help="(b) prompt tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hf-attention", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: batch-1 decoding is a chain of small GEMVs, and on a "
                             "shared machine waiting for a second thread costs more than it gives)")
    parser.add_argument("--decode-shapes", default="small,micro", help="(b) model shapes: small, micro")
    parser.add_argument("--skip", choices=["a", "b"], default=None, help="leave one measurement out")
    return parser.parse_args()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function, device: str) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def paired_medians(first, second, repeats: int, device: str):
    """Warm both up, then time them alternately `repeats` times (a noisy machine hits both alike).

    Returns (median seconds of first, median seconds of second, first's last output, second's).
    """
    first(), second()
    first_times, second_times = [], []
    for _ in range(repeats):
        seconds, first_out = timed(first, device)
        first_times.append(seconds)
        seconds, second_out = timed(second, device)
        second_times.append(seconds)
    return statistics.median(first_times), statistics.median(second_times), first_out, second_out


def left_pad(prompts: list[list[int]], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def bench_batched(arguments: argparse.Namespace) -> dict:
    """(a) prompts/s of batched left-padded generation vs one prompt at a time."""
    device = arguments.device
    torch.manual_seed(0)
    config = OpenELMTinyConfig()
    model = OpenELM(config).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 49, (arguments.prompts,), generator=generator).tolist()
    prompts = [torch.randint(0, config.vocab_size, (n,), generator=generator).tolist() for n in lengths]
    new = arguments.new_tokens

    def batched():
        outputs = []
        for start in range(0, len(prompts), arguments.batch_size):
            chunk = prompts[start:start + arguments.batch_size]
            ids, mask = left_pad(chunk, device)
            out = generate(model, ids, new, attention_mask=mask)
            outputs += out[:, ids.shape[1]:].tolist()
        return outputs

    def one_at_a_time():
        return [generate(model, torch.tensor([p], device=device), new)[0, len(p):].tolist() for p in prompts]

    batched_seconds, single_seconds, batched_out, single_out = paired_medians(
        batched, one_at_a_time, arguments.repeats, device)
    matches = sum(a == b for a, b in zip(batched_out, single_out))
    batched_rate = len(prompts) / batched_seconds
    single_rate = len(prompts) / single_seconds
    return {
        "model": "openelm-tiny (layer-wise widths, Q/K norm on)",
        "parameters_M": round(model.num_parameters() / 1e6, 2),
        "prompts": len(prompts), "prompt_lengths": [min(lengths), max(lengths)], "new_tokens": new,
        "batch_size": arguments.batch_size,
        "batched_prompts_per_s": round(batched_rate, 2), "single_prompts_per_s": round(single_rate, 2),
        "ratio": round(batched_rate / single_rate, 2),
        "rows_equal_to_single": f"{matches}/{len(prompts)}",
    }


def to_llama_state_dict(model: OpenELM) -> dict[str, torch.Tensor]:
    """OpenELM weights under LlamaForCausalLM's names (qkv_proj split q/k/v, proj_1 split gate/up)."""
    state = {"model.embed_tokens.weight": model.token_embeddings.weight, "model.norm.weight": model.norm.weight}
    head_dim = model.config.head_dim
    for i, layer in enumerate(model.layers):
        widths = layer.widths
        sizes = [widths.num_query_heads * head_dim, widths.num_kv_heads * head_dim, widths.num_kv_heads * head_dim]
        q, k, v = layer.attn.qkv_proj.weight.split(sizes)
        gate, up = layer.ffn.proj_1.weight.chunk(2, dim=0)
        names = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v,
                 "self_attn.o_proj": layer.attn.out_proj.weight, "mlp.gate_proj": gate, "mlp.up_proj": up,
                 "mlp.down_proj": layer.ffn.proj_2.weight, "input_layernorm": layer.attn_norm.weight,
                 "post_attention_layernorm": layer.ffn_norm.weight}
        state.update({f"model.layers.{i}.{name}.weight": tensor for name, tensor in names.items()})
    return {name: tensor.detach().clone() for name, tensor in state.items()}


# (b)'s model shapes: vocabulary, width, layers, heads, head width, FFN width. "small" is bench_lm.py's
# 7.34M-parameter model (29 MB of fp32 weights: batch-1 decoding streams them from DRAM each token);
# "micro" (1.0M parameters, 4 MB) stays in cache, so per-token overheads decide its speed.
DECODE_SHAPES = {"small": (4096, 256, 6, 4, 64, 1024), "micro": (1024, 128, 4, 2, 64, 512)}


def bench_decode(arguments: argparse.Namespace, shape: str) -> dict:
    """(b) batch-1 greedy decoding tokens/s: toolkit OpenELM + KV cache vs transformers' generate."""
    import transformers

    device = arguments.device
    torch.manual_seed(0)
    vocab, dim, layers, heads, head_dim, ffn = DECODE_SHAPES[shape]
    context = arguments.prompt_length + arguments.decode_tokens
    model = OpenELM(OpenELMConfig(
        vocab_size=vocab, max_context_length=max(512, context), num_layers=layers, model_dim=dim,
        head_dim=head_dim, num_query_heads=heads, num_kv_heads=heads, ffn_dim=ffn, normalize_qk=False,
    )).to(device).eval()
    with torch.no_grad():  # spread-out logits, so both greedy paths pick the same tokens
        for name, parameter in model.named_parameters():
            if not name.endswith("norm.weight"):
                parameter.normal_(0.0, 0.1)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=dim, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=head_dim,
        max_position_embeddings=max(512, context), rms_norm_eps=model.config.norm_eps, rope_theta=10000.0,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        attn_implementation=arguments.hf_attention,
    ))
    llama.load_state_dict(to_llama_state_dict(model), strict=False)
    llama.tie_weights()
    llama = llama.to(device).eval()
    prompt = torch.randint(0, vocab, (1, arguments.prompt_length), generator=torch.Generator().manual_seed(1))
    prompt = prompt.to(device)
    new = arguments.decode_tokens

    def ours():
        return generate(model, prompt, new)[0, prompt.shape[1]:].tolist()

    def theirs():
        with torch.no_grad():
            out = llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                 min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, prompt.shape[1]:].tolist()

    our_seconds, their_seconds, our_tokens, their_tokens = paired_medians(ours, theirs, arguments.repeats, device)
    assert len(our_tokens) == len(their_tokens) == new, (len(our_tokens), len(their_tokens))
    ours_rate = new / our_seconds
    theirs_rate = new / their_seconds
    return {
        "shape": shape, "model": f"OpenELM uniform {layers}x{dim}, {heads} heads of {head_dim}, ffn {ffn}, vocab {vocab}, no Q/K norm",
        "parameters_M": round(model.num_parameters() / 1e6, 2),
        "prompt_tokens": arguments.prompt_length, "new_tokens": new, "hf_attention": arguments.hf_attention,
        "toolkit_tokens_per_s": round(ours_rate, 1), "hf_tokens_per_s": round(theirs_rate, 1),
        "ratio": round(ours_rate / theirs_rate, 2),
        "same_continuation": our_tokens == their_tokens,
    }


def main() -> None:
    arguments = parse_arguments()
    torch.set_grad_enabled(False)
    if arguments.threads > 0:
        torch.set_num_threads(arguments.threads)
    result = {"device": arguments.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "python": platform.python_version()}
    if arguments.skip != "a":
        result["batched"] = bench_batched(arguments)
        print("(a) batched:", result["batched"], flush=True)
    if arguments.skip != "b":
        import transformers

        result["transformers"] = transformers.__version__
        result["decode"] = []
        for shape in arguments.decode_shapes.split(","):
            result["decode"].append(bench_decode(arguments, shape))
            print("(b) decode:", result["decode"][-1], flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
