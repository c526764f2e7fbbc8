#!/usr/bin/python3
"""Regenerates tests/data/gguf-types: a small random-weight Gemma 3 text checkpoint whose matrix dims are all
multiples of 256 (so every ggml type, K-quants included, applies to every weight matrix), its float64
reference logits, and one GGUF file per common ggml type written by llama.cpp's quantizer.

    /usr/bin/python3 tests/data/gguf-types/generate.py --gemma build/gemma \\
        --quantize /tmp/llama.cpp/build/bin/llama-quantize [--dump-logits /tmp/gt/dump_logits]
        [--gguf-py /tmp/llama.cpp/src/gguf-py] [--work /tmp/gt]

Steps:
  1. gemma3-256/ : Hugging Face layout (config.json, generation_config.json, the shared 1024-piece tokenizer
     files, bf16 model.safetensors), written with the functions of make_checkpoint.py (shared tools folder,
     see --tools): hidden 256, MLP 256, 2 layers, 4 query heads, 1 KV head, head_dim 64,
     query_pre_attn_scalar 64, sliding_window 8, sliding_window_pattern 2 (layer 0 slides, layer 1 is global),
     vocab 1024, seed 256. Then reference.json / reference_logits.f32 / reference_hidden.f32 from
     ref_gemma.py's fixture writer (float64, the same 24 token ids as the gemma3-tiny fixture: same tokenizer,
     same text; checked against tests/data/gemma3-tiny/reference.json).
  2. WORK/gemma3-256-f32.gguf with `gemma convert --outtype f32` (not kept in tests/data; the UINT32 key
     gemma3.attention.sliding_window_pattern = 2 is added when the converter did not write it, since llama.cpp
     otherwise assumes 6, i.e. both layers sliding), then
     gemma3-256-<TYPE>.gguf with `llama-quantize --pure` for every TYPE in TYPES (every weight matrix,
     token_embd included, gets that type; 1-D norm weights stay f32), plus gemma3-256-Q4_K_M.gguf without
     --pure (llama.cpp's real Q4_K_M mix). Each file's tensor types are read back and checked.
  3. (with --dump-logits) llama.cpp's logits for the reference ids on the f32 file and every quantized file,
     saved as WORK/llamacpp-<TYPE>.f32 ([24, 1024] f32), and a markdown table of max |llama.cpp - reference|
     and top-1 agreement. dump_logits is ../shared/tools/anchors/dump_logits.cpp built against llama.cpp.
     With --gguf-py (llama.cpp's gguf-py folder, for its dequantizers) also the float64 reference on each
     file's dequantized weights, saved as WORK/dequant-ref-<TYPE>.f32: what an exact implementation computes.

Only numpy and sentencepiece are needed (plus the binaries)."""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
NAME = "gemma3-256"
SEED = 256
SHAPE = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64, sliding_window=8)
SLIDING_WINDOW_PATTERN = 2

# file label -> (llama-quantize type argument, --pure, ggml type expected on every 2-D weight or None for a mix)
TYPES = [
    ("Q4_0", "Q4_0", True, "Q4_0"),
    ("Q4_1", "Q4_1", True, "Q4_1"),
    ("Q5_0", "Q5_0", True, "Q5_0"),
    ("Q5_1", "Q5_1", True, "Q5_1"),
    ("Q8_0", "Q8_0", True, "Q8_0"),
    ("Q2_K", "Q2_K", True, "Q2_K"),
    ("Q3_K", "Q3_K_M", True, "Q3_K"),
    ("Q4_K", "Q4_K_M", True, "Q4_K"),
    ("Q5_K", "Q5_K_M", True, "Q5_K"),
    ("Q6_K", "Q6_K", True, "Q6_K"),
    ("IQ4_NL", "IQ4_NL", True, "IQ4_NL"),
    ("IQ4_XS", "IQ4_XS", True, "IQ4_XS"),
    ("Q4_K_M", "Q4_K_M", False, None),
]


def default_tools():
    for d in (os.path.join(REPO, "..", "shared", "tools"), "/work/shared/tools"):
        if os.path.isfile(os.path.join(d, "make_checkpoint.py")):
            return os.path.normpath(d)
    return None


# ------------------------------------------------------------------------------------------------------------
# Step 1: checkpoint + float64 reference
# ------------------------------------------------------------------------------------------------------------


def build_checkpoint(outdir):
    import make_checkpoint as mc

    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    proto = mc.train_small_sentencepiece()
    ids = mc.small_tokenizer_files(outdir, proto, "gemma3")
    vocab = len(proto.pieces)
    assert vocab == 1024, vocab
    cfg = mc.cfg_gemma3_1b_style(ids, vocab, **SHAPE)
    cfg["sliding_window_pattern"] = SLIDING_WINDOW_PATTERN
    mc.write_json(os.path.join(outdir, "generation_config.json"), mc.generation_config(ids, "4.50.0.dev0"))
    mc.write_json(os.path.join(outdir, "config.json"), cfg)
    tensors = mc.gemma_text_tensors("model.", cfg, "gemma3")
    for t in tensors:
        if len(t.shape) == 2:
            assert all(d % 256 == 0 for d in t.shape[1:]), (t.name, t.shape)  # ggml rows: the input dim
    mc.write_weights(outdir, tensors, SEED)
    print("%s: %d tensors, %d parameters, seed %d" % (outdir, len(tensors), sum(t.numel for t in tensors), SEED))


def write_reference(outdir):
    import ref_gemma

    ref, logits = ref_gemma.write_fixture(outdir)
    tiny = os.path.join(REPO, "tests", "data", "gemma3-tiny", "reference.json")
    if os.path.isfile(tiny):
        with open(tiny) as f:
            want = json.load(f)["token_ids"]
        if ref["token_ids"] != want:
            raise SystemExit("reference ids %s differ from gemma3-tiny's %s" % (ref["token_ids"], want))
    print("reference: %d ids %s, logits %s, std %.3f, max |logit| %.3f, layer_types %s"
          % (len(ref["token_ids"]), ref["token_ids"], logits.shape, logits.std(), np.abs(logits).max(),
             ref["layer_types"]))
    return ref


# ------------------------------------------------------------------------------------------------------------
# GGUF tensor table (enough of the format to list tensor names and types)
# ------------------------------------------------------------------------------------------------------------

GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
              11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
              18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8",
              25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0",
              39: "MXFP4"}
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Gguf:
    """The header of a GGUF file: metadata (key -> (type, value, byte span)), tensor table and data offset."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = data = f.read()
        self.pos = 0
        assert data[:4] == b"GGUF", path
        self.pos = 4
        self.version = self._take("<I")
        n_tensors, n_kv = self._take("<Q"), self._take("<Q")
        self.kv = {}
        self.kv_start = self.pos
        for _ in range(n_kv):
            start = self.pos
            key = self._string()
            t = self._take("<I")
            self.kv[key] = (t, self._value(t), (start, self.pos))
        self.kv_end = self.pos
        self.tensors = []  # (name, shape in ggml order, type name)
        for _ in range(n_tensors):
            name = self._string()
            nd = self._take("<I")
            shape = [self._take("<Q") for _ in range(nd)]
            t = self._take("<I")
            self._take("<Q")
            self.tensors.append((name, shape, GGML_TYPES.get(t, str(t))))
        self.infos_end = self.pos
        self.alignment = self.kv.get("general.alignment", (0, 32))[1]
        self.data_start = -(-self.pos // self.alignment) * self.alignment

    def _take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def _string(self):
        n = self._take("<Q")
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def _value(self, t):
        if t == 8:
            return self._string()
        if t == 9:
            et, n = self._take("<I"), self._take("<Q")
            return [self._value(et) for _ in range(n)]
        return self._take(_SCALAR[t])


def gguf_tensors(path):
    return Gguf(path).tensors


def gguf_add_u32(path, key, value, after=None):
    """Rewrite a GGUF file with one more UINT32 metadata key (placed after the key `after` when present).
    Tensor offsets are relative to the aligned data section, so only the header changes."""
    g = Gguf(path)
    assert key not in g.kv, key
    kb = key.encode("utf-8")
    entry = struct.pack("<Q", len(kb)) + kb + struct.pack("<II", 4, value)
    at = g.kv[after][2][1] if after in g.kv else g.kv_end
    n_tensors = len(g.tensors)
    head = b"GGUF" + struct.pack("<IQQ", g.version, n_tensors, len(g.kv) + 1)
    body = g.data[g.kv_start:at] + entry + g.data[at:g.infos_end]
    header = head + body
    header += b"\0" * (-len(header) % g.alignment)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(g.data[g.data_start:])
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------------
# Step 2: f32 GGUF and llama-quantize
# ------------------------------------------------------------------------------------------------------------


def run(cmd, env=None):
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(r.stdout[-4000:])
        raise SystemExit("failed (%d): %s" % (r.returncode, " ".join(cmd)))
    return r.stdout


def quantize_env(quantize):
    env = dict(os.environ)
    libdir = os.path.dirname(os.path.abspath(quantize))
    env["LD_LIBRARY_PATH"] = libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def make_ggufs(args, ckpt, f32_path):
    run([args.gemma, "convert", ckpt, "-o", f32_path, "--outtype", "f32"])
    # llama.cpp's gemma3 loader takes the layer pattern from gemma3.attention.sliding_window_pattern and
    # defaults to 6 (for 2 layers: both sliding). gemma convert builds before the key was added (and llama.cpp's
    # own converter) do not write it; add it then, as the UINT32 the newer gemma convert writes.
    key = "gemma3.attention.sliding_window_pattern"
    kv = Gguf(f32_path).kv
    if key not in kv:
        print("note: %s has no %s; adding it (UINT32 %d)" % (f32_path, key, SLIDING_WINDOW_PATTERN))
        gguf_add_u32(f32_path, key, SLIDING_WINDOW_PATTERN, after="gemma3.attention.sliding_window")
    elif kv[key][:2] != (4, SLIDING_WINDOW_PATTERN):
        raise SystemExit("%s: %s is %r, want UINT32 %d" % (f32_path, key, kv[key][:2], SLIDING_WINDOW_PATTERN))
    env = quantize_env(args.quantize)
    report = []
    for label, qtype, pure, want in TYPES:
        out = os.path.join(args.out, "%s-%s.gguf" % (NAME, label))
        cmd = [args.quantize] + (["--pure"] if pure else []) + [f32_path, out, qtype, str(args.threads)]
        log = run(cmd, env=env)
        fallbacks = [ln.strip() for ln in log.splitlines() if "fallback" in ln.lower()]
        tensors = gguf_tensors(out)
        types = {}
        for name, shape, t in tensors:
            if len(shape) >= 2:
                types[name] = t
        odd = {n: t for n, t in types.items() if want is not None and t != want}
        if odd:
            print("WARNING %s: tensors not %s: %s" % (label, want, odd))
        counts = {}
        for t in types.values():
            counts[t] = counts.get(t, 0) + 1
        report.append((label, out, os.path.getsize(out), counts, odd, fallbacks))
        print("%s: %d bytes, 2-D tensor types %s%s" % (label, os.path.getsize(out), counts,
                                                       ("; quantizer said: %s" % fallbacks) if fallbacks else ""))
    return report


# ------------------------------------------------------------------------------------------------------------
# Step 3: llama.cpp logits vs the reference
# ------------------------------------------------------------------------------------------------------------


GGUF_TO_HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj"}


def dequantized_reference(ckpt, path, ids):
    """The float64 reference forward pass on the weight matrices dequantized (with gguf-py) from a GGUF file:
    what an exact implementation (f32/f64 activations) computes on that file. Returns (logits, max |dequantized
    weight - bf16 weight|)."""
    import gguf
    import ref_gemma

    m = ref_gemma.Model(ckpt)
    worst = 0.0
    for t in gguf.GGUFReader(path).tensors:
        if len(t.shape) < 2:
            continue  # norms: F32 in every file, shifted by +1 in the GGUF
        if t.name == "token_embd.weight":
            hf = "model.embed_tokens.weight"
        else:
            _, layer, kind, _ = t.name.split(".")
            hf = "model.layers.%s.%s.weight" % (layer, GGUF_TO_HF[kind])
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(m.w[hf].shape)
        worst = max(worst, float(np.abs(a - m.w[hf]).max()))
        m.w[hf] = a
    return ref_gemma.forward(m, ids), worst


def compare(args, ckpt, f32_path, ref):
    ids = ref["token_ids"]
    want = np.fromfile(os.path.join(ckpt, ref["logits_file"]), dtype="<f4").reshape(ref["logits_shape"])
    want = want.astype(np.float64)
    env = quantize_env(args.dump_logits_lib or args.quantize)
    if args.gguf_py:
        sys.path.insert(0, args.gguf_py)
    rows = []
    files = [("f32", f32_path)] + [(label, os.path.join(args.out, "%s-%s.gguf" % (NAME, label)))
                                   for label, _, _, _ in TYPES]
    for label, path in files:
        raw = os.path.join(args.work, "llamacpp-%s.f32" % label)
        run([args.dump_logits, path, ",".join(map(str, ids)), raw], env=env)
        got = np.fromfile(raw, dtype="<f4").reshape(want.shape).astype(np.float64)
        row = [label, os.path.getsize(path), np.abs(got - want).max(),
               int((got.argmax(-1) == want.argmax(-1)).sum()), len(ids)]
        if args.gguf_py:
            exact, _ = dequantized_reference(ckpt, path, ids)
            exact.astype("<f4").tofile(os.path.join(args.work, "dequant-ref-%s.f32" % label))
            row += [np.abs(exact - want).max(), int((exact.argmax(-1) == want.argmax(-1)).sum()),
                    np.abs(got - exact).max()]
        rows.append(row)
    head = "| type | file size (bytes) | llama.cpp max abs diff vs reference | top-1 agreement |"
    rule = "|---|---:|---:|---:|"
    if args.gguf_py:
        head += " float64 on dequantized weights vs reference | its top-1 | llama.cpp vs float64 on dequantized |"
        rule += "---:|---:|---:|"
    print("\n" + head + "\n" + rule)
    for r in rows:
        line = "| %s | %d | %.3g | %d/%d |" % tuple(r[:5])
        if args.gguf_py:
            line += " %.3g | %d/%d | %.3g |" % (r[5], r[6], r[4], r[7])
        print(line)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gemma", required=True, help="the project's gemma binary (for `gemma convert`)")
    ap.add_argument("--quantize", required=True, help="llama.cpp's llama-quantize (its libraries next to it)")
    ap.add_argument("--dump-logits", help="dump_logits binary built from ../shared/tools/anchors/dump_logits.cpp")
    ap.add_argument("--dump-logits-lib", help="a file in the folder of llama.cpp's shared libraries for "
                                              "dump_logits (default: next to llama-quantize)")
    ap.add_argument("--gguf-py", help="llama.cpp's gguf-py folder: with --dump-logits, also run the float64 "
                                      "reference on each file's dequantized weights (WORK/dequant-ref-<TYPE>.f32)")
    ap.add_argument("--tools", default=default_tools(), help="folder of make_checkpoint.py and ref_gemma.py")
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    ap.add_argument("--work", default="/tmp/gt", help="scratch folder for the f32 GGUF and llama.cpp logits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-checkpoint", action="store_true", help="reuse the existing checkpoint and reference")
    args = ap.parse_args(argv)
    if not args.tools:
        raise SystemExit("cannot find make_checkpoint.py; pass --tools")
    sys.path.insert(0, args.tools)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    ckpt = os.path.join(args.out, NAME)
    if not args.skip_checkpoint:
        build_checkpoint(ckpt)
        ref = write_reference(ckpt)
    else:
        with open(os.path.join(ckpt, "reference.json")) as f:
            ref = json.load(f)
    f32_path = os.path.join(args.work, "%s-f32.gguf" % NAME)
    make_ggufs(args, ckpt, f32_path)
    if args.dump_logits:
        compare(args, ckpt, f32_path, ref)


if __name__ == "__main__":
    main()
