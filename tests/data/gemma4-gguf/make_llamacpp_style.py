#!/usr/bin/python3
"""Writes a Gemma 4 fixture as llama.cpp's converter writes it, for the loader's tests of files we did not write.

    PYTHONPATH=LLAMA_CPP/gguf-py /usr/bin/python3 tests/data/gemma4-gguf/make_llamacpp_style.py FIXTURE OUT.gguf

llama.cpp's convert_hf_to_gguf.py needs torch and transformers, which these machines do not have. This script
makes the calls its Gemma4Model (conversion/gemma.py, unslothai/llama.cpp d32676d) makes, in its order, with
llama.cpp's own gguf-py (GGUFWriter, the gemma4 tensor name map, SpecialVocab for the merges and special ids):
TextModel's, Gemma3Model's and Gemma4Model's set_gguf_parameters (duplicated keys overwritten as gguf-py does),
the rope_freqs extra tensor, filter_tensors / modify_tensors (layer_scalar and the experts get ".weight",
router.scale -> ffn_gate_inp.scale, per_expert_scale -> ffn_down_exps.scale, the towers left out), f32 for
1-D tensors, norms and the router, bf16 (`--outtype bf16`) for the rest; and the vocabulary as its
LlamaHfVocab types it from transformers' tokenizer (base pieces control when special, else normal; added
pieces past the base vocabulary control when special, else user-defined; byte pieces byte; every score
-1000; the seven tokens llama.cpp keeps visible user-defined). The files made from gemma4-tiny and
gemma4-moe-tiny are llama-dense.gguf and llama-moe.gguf beside this script.
"""
import json
import os
import re
import struct
import sys

import numpy as np
import gguf


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, np.uint8, "r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.asarray(data[begin:end])
        if info["dtype"] == "BF16":
            values = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            values = raw.view({"F32": "<f4", "F16": "<f2"}[info["dtype"]]).astype(np.float32)
        out[name] = values.reshape(info["shape"])
    return out


def set_parameters(w, h):
    """TextModel, Gemma3Model and Gemma4Model set_gguf_parameters, in that order."""
    rope = h["rope_parameters"]
    full, sliding = rope["full_attention"], rope["sliding_attention"]
    w.add_block_count(h["num_hidden_layers"])
    w.add_context_length(h["max_position_embeddings"])
    w.add_embedding_length(h["hidden_size"])
    w.add_feed_forward_length(h["intermediate_size"])
    w.add_head_count(h["num_attention_heads"])
    w.add_head_count_kv(h["num_key_value_heads"])
    w.add_rope_freq_base(full["rope_theta"])
    w.add_rope_freq_base_swa(sliding["rope_theta"])
    w.add_layer_norm_rms_eps(h["rms_norm_eps"])
    if h.get("num_experts") is not None:
        w.add_expert_count(h["num_experts"])
    if h.get("top_k_experts") is not None:
        w.add_expert_used_count(h["top_k_experts"])
    w.add_key_length(h["head_dim"])
    w.add_value_length(h["head_dim"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    # Gemma3Model
    w.add_context_length(h.get("max_position_embeddings", 131072))
    w.add_head_count(h.get("num_attention_heads", 8))
    w.add_layer_norm_rms_eps(h.get("rms_norm_eps", 1e-6))
    w.add_key_length(h.get("head_dim", 256))
    w.add_value_length(h.get("head_dim", 256))
    w.add_rope_freq_base(full["rope_theta"])
    if h.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(h["final_logit_softcapping"])
    w.add_sliding_window(h["sliding_window"])
    w.add_head_count_kv(h.get("num_key_value_heads", 4))
    # Gemma4Model
    n_layers, shared = h["num_hidden_layers"], h["num_kv_shared_layers"]
    w.add_shared_kv_layers(shared)
    w.add_embedding_length_per_layer_input(h.get("hidden_size_per_layer_input") or 0)
    swa = [t == "sliding_attention" for t in h["layer_types"]]
    w.add_sliding_window_pattern(swa)
    w.add_key_length(h["global_head_dim"])
    w.add_value_length(h["global_head_dim"])
    w.add_key_length_swa(h["head_dim"])
    w.add_value_length_swa(h["head_dim"])
    if h.get("moe_intermediate_size") is not None:
        w.add_expert_feed_forward_length(h["moe_intermediate_size"])
    if h.get("use_double_wide_mlp", False):
        ff = h["intermediate_size"]
        w.add_feed_forward_length([ff if il < n_layers - shared else ff * 2 for il in range(n_layers)])
    if h.get("num_global_key_value_heads") is not None and h.get("num_key_value_heads") is not None:
        w.add_head_count_kv([h["num_key_value_heads"] if s else h["num_global_key_value_heads"] for s in swa])
    w.add_rope_dimension_count(int(h["global_head_dim"]))
    w.add_rope_dimension_count_swa(int(h["head_dim"] * sliding.get("partial_rotary_factor", 1.0)))


def set_vocab(w, fixture):
    tok = json.load(open(os.path.join(fixture, "tokenizer.json")))
    tc = json.load(open(os.path.join(fixture, "tokenizer_config.json")))
    base = tok["model"]["vocab"]
    names = [tc[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if isinstance(tc.get(k), str)]
    names += list(tc.get("extra_special_tokens", {}).values())
    by_content = {a["content"]: a["id"] for a in tok["added_tokens"]}
    by_content.update(base)
    special_ids = {by_content[n] for n in names if n in by_content}
    reverse = {i: t for t, i in base.items()}
    added = sorted((a["id"], a["content"]) for a in tok["added_tokens"] if a["id"] >= len(base))
    visible = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>",
               "<|\"|>"}
    tokens, types = [], []
    for i in range(len(base)):
        text = reverse[i]
        t = gguf.TokenType.BYTE if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text) else (
            gguf.TokenType.CONTROL if i in special_ids else gguf.TokenType.NORMAL)
        tokens.append(text)
        types.append(t)
    for i, text in added:
        tokens.append(text)
        types.append(gguf.TokenType.CONTROL if i in special_ids else gguf.TokenType.USER_DEFINED)
    types = [gguf.TokenType.USER_DEFINED if t in visible else ty for t, ty in zip(tokens, types)]
    w.add_tokenizer_model("gemma4")
    w.add_token_list(tokens)
    w.add_token_scores([-1000.0] * len(tokens))
    w.add_token_types(types)
    gguf.SpecialVocab(fixture, load_merges=True).add_to_gguf(w)
    w.add_add_space_prefix(False)
    w.add_add_bos_token(True)
    return len(tokens)


def add_tensors(w, fixture, h, n_vocab):
    # generate_extra_tensors: the proportional RoPE of the full layers.
    full = h["rope_parameters"]["full_attention"]
    n_rot = int(h["global_head_dim"] * full["partial_rotary_factor"] / 2)
    freqs = [1.0] * n_rot + [1e30] * (h["global_head_dim"] // 2 - n_rot)
    w.add_tensor("rope_freqs.weight", np.array(freqs, dtype=np.float32))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, h["num_hidden_layers"])
    for name, data in read_safetensors(os.path.join(fixture, "model.safetensors")).items():
        if not name.startswith("model.language_model."):
            continue  # the towers and their embedders go to the mmproj file
        name = "model." + name[len("model.language_model."):]
        bid = int(name.split(".")[2]) if name.startswith("model.layers.") else None
        if name.endswith("layer_scalar") or (".experts." in name and not name.endswith(".weight")):
            name += ".weight"
        if "embed_tokens.weight" in name:
            data = data[:n_vocab]
        if name.endswith("router.scale"):
            new = "blk.%d.ffn_gate_inp.scale" % bid
        elif name.endswith(".per_expert_scale"):
            new = "blk.%d.ffn_down_exps.scale" % bid
        else:
            new = names.get_name(name, try_suffixes=(".weight",))
            if new is None:
                sys.exit("no llama.cpp name for " + name)
        f32 = data.ndim <= 1 or new.endswith("_norm.weight") or ".ffn_gate_inp." in new
        if f32:
            w.add_tensor(new, data.astype(np.float32))
        else:
            w.add_tensor(new, gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16),
                         raw_dtype=gguf.GGMLQuantizationType.BF16)


def main(fixture, out):
    config = json.load(open(os.path.join(fixture, "config.json")))
    h = config["text_config"]
    w = gguf.GGUFWriter(out, "gemma4")
    w.add_name(os.path.basename(os.path.normpath(fixture)))
    set_parameters(w, h)
    n_vocab = set_vocab(w, fixture)
    add_tensors(w, fixture, h, n_vocab)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
