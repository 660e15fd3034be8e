"""Writes the HF parity fixtures (tests/fixtures/hf/): tiny random-config Llama and Qwen2
decoders made with transformers, saved with save_pretrained (the Llama one sharded, to cover
the index file), plus the outputs transformers computes for fixed token ids. The Rust tests
(tests/tests/hf_parity.rs) load the folders by HF tensor names and must match within 1e-4, so CI
needs no Python. Run once with torch + transformers installed:

    python scripts/hf-fixtures.py
"""

import json
import pathlib

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf"

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    hidden_act="silu",
)

MODELS = {
    # untied head, sharded files
    "llama": (
        LlamaForCausalLM,
        LlamaConfig(**COMMON, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
        "20KB",
    ),
    # tied head, q/k/v biases, a large RoPE base
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config(**COMMON, rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
        None,
    ),
}

IDS = [[1, 5, 17, 42, 3, 88, 9], [60, 2, 2, 31, 95, 14, 7]]


def main():
    for name, (cls, config, shard) in MODELS.items():
        torch.manual_seed(1234)
        model = cls(config).eval()
        # random biases (zero by default) so a missed bias would show
        with torch.no_grad():
            for mod_name, p in model.named_parameters():
                if mod_name.endswith("bias") or "norm" in mod_name:
                    p.add_(0.1 * torch.randn_like(p))
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        for f in d.iterdir():
            f.unlink()
        kwargs = {"safe_serialization": True}
        if shard:
            kwargs["max_shard_size"] = shard
        model.save_pretrained(d, **kwargs)
        ids = torch.tensor(IDS)
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        expected = {
            "generator": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "input_ids": IDS,
            "last_hidden_state": out.hidden_states[-1].tolist(),
            "logits": out.logits.tolist(),
        }
        (d / "expected.json").write_text(json.dumps(expected))
        print(name, sorted(p.name for p in d.iterdir()))


if __name__ == "__main__":
    main()
