#!/usr/bin/env python3
"""Latency and throughput of an OpenAI-compatible chat server (gemma serve, llama-server, ...).

    build/gemma serve -m g270m-q8_0.gguf --port 18300 --parallel 16 -t 2
    scripts/serve_bench.py --url http://127.0.0.1:18300 --model g270m-q8_0 --label gemma

    llama-server -m g270m-q8_0.gguf --port 18301 -np 16 -c 65536 -t 2 --jinja
    scripts/serve_bench.py --url http://127.0.0.1:18301 --model g270m-q8_0 --label llama.cpp

Standard library only. For each client count N (--clients 1,4,16), N threads start together and each streams
POST /v1/chat/completions (temperature 0, max_tokens M, stream_options.include_usage) with its own user
message of about --prompt-tokens tokens. Every message begins with a tag never sent before, so no prompt
shares more than the chat template's first tokens with any other, in this run or an earlier one.
  TTFT      time from sending the request to the first chunk with non-empty delta.content
  decode    (completion tokens - 1) / (time from the first to the last content chunk), per client
  aggregate completion tokens of all clients / wall time from the common start to the last finish
Completion tokens are usage.completion_tokens where the server sends it, else the content chunks. Nothing
forces M tokens (no ignore_eos): the table gives the mean count each client got.

Second turn: turn 1 is a ~--turn1-tokens user message answered with M tokens; turn 2 is [user1, assistant
(turn 1's text), short user2]. "warm" is turn 2's TTFT sent right after turn 1 (the server may reuse the
prefix it holds). "cold" is the same turn-2 request (same messages and token count) with only the tag at the
start of user1 replaced by an unseen one of the same length, so no cache can hold any of it: it measures the
whole prompt's prefill without restarting the server.

Each measurement runs --repeats times (3) and the table shows the medians; --json FILE keeps every run.
"""
import argparse
import http.client
import itertools
import json
import statistics
import threading
import time
import urllib.parse

_tags = itertools.count(int(time.time() * 1000) % 10**9)


def tag():
    # fixed width, so every tag tokenizes to as many tokens; reversed, so consecutive tags differ at once
    return "Ref %s." % ("%09d" % next(_tags))[::-1]


def text(n_tokens, seed):
    """About n_tokens tokens of plain English (a numbered sentence is ~22 Gemma tokens)."""
    return " ".join("Note %d-%d: the river near the old mill carries leaves past the stone bridge every autumn "
                    "morning." % (seed, i) for i in range(max(1, n_tokens // 22)))


def chat(url, model, messages, max_tokens):
    """One streamed chat completion: returns ttft, decode rate, token counts, answer text, finish time."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    body = json.dumps({"model": model, "messages": messages, "stream": True, "temperature": 0,
                       "max_tokens": max_tokens, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError("HTTP %d: %s" % (resp.status, resp.read()[:300]))
    first = last = None
    chunks, parts, usage = 0, [], None
    for line in resp:
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        event = json.loads(data)
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                last = time.perf_counter()
                first = first or last
                chunks += 1
                parts.append(piece)
    end = time.perf_counter()
    conn.close()
    tokens = usage["completion_tokens"] if usage else chunks
    span = (last - first) if first else 0
    return {"start": t0, "end": end, "ttft": (first or end) - t0, "tokens": tokens,
            "prompt_tokens": usage["prompt_tokens"] if usage else None,
            "cached": ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens"),
            "decode": (tokens - 1) / span if tokens > 1 and span > 0 else float("nan"), "text": "".join(parts)}


def concurrent(args, n):
    barrier, results = threading.Barrier(n), [None] * n

    def client(i):
        msg = [{"role": "user", "content": tag() + " " + text(args.prompt_tokens, i)}]
        barrier.wait()
        results[i] = chat(args.url, args.model, msg, args.max_tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if None in results:
        raise RuntimeError("a client failed")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"ttft_ms": 1000 * statistics.mean(r["ttft"] for r in results),
            "decode": statistics.mean(r["decode"] for r in results),
            "aggregate": sum(r["tokens"] for r in results) / wall,
            "tokens": statistics.mean(r["tokens"] for r in results),
            "prompt_tokens": statistics.mean(r["prompt_tokens"] or 0 for r in results)}


def second_turn(args):
    t = tag()
    body = text(args.turn1_tokens, 7)
    user1 = [{"role": "user", "content": t + " " + body}]
    answer = chat(args.url, args.model, user1, args.max_tokens)["text"]
    turn2 = user1 + [{"role": "assistant", "content": answer},
                     {"role": "user", "content": "Now say the same in one short sentence."}]
    warm = chat(args.url, args.model, turn2, args.turn2_max_tokens)
    turn2[0] = {"role": "user", "content": tag() + " " + body}
    cold = chat(args.url, args.model, turn2, args.turn2_max_tokens)
    return {"warm_ms": 1000 * warm["ttft"], "cold_ms": 1000 * cold["ttft"], "prompt_tokens": warm["prompt_tokens"],
            "cold_prompt_tokens": cold["prompt_tokens"], "warm_cached": warm["cached"], "cold_cached": cold["cached"]}


def median_of(runs):
    return {k: statistics.median(r[k] for r in runs) if all(isinstance(r[k], (int, float)) for r in runs) else None
            for k in runs[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--label", default="server", help="name in the first column of the tables")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--turn1-tokens", type=int, default=600)
    ap.add_argument("--turn2-max-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: concurrent, turn2")
    ap.add_argument("--json", help="write every run here")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    chat(args.url, args.model, [{"role": "user", "content": tag() + " Hello."}], 4)  # warm-up, not counted
    out = {"label": args.label, "concurrent": {}, "turn2": []}
    if "concurrent" not in skip:
        print("| server | clients | prompt tok | completion tok | mean TTFT ms | decode tok/s per client "
              "| aggregate tok/s |\n|---|---:|---:|---:|---:|---:|---:|", flush=True)
        for n in map(int, args.clients.split(",")):
            runs = [concurrent(args, n) for _ in range(args.repeats)]
            out["concurrent"][n] = runs
            m = median_of(runs)
            print("| %s | %d | %.0f | %.1f | %.0f | %.1f | %.1f |" % (args.label, n, m["prompt_tokens"], m["tokens"],
                  m["ttft_ms"], m["decode"], m["aggregate"]), flush=True)
    if "turn2" not in skip:
        runs = [second_turn(args) for _ in range(args.repeats)]
        out["turn2"] = runs
        m = median_of(runs)
        print("\n| server | turn-2 prompt tok | cached tok warm / cold | warm TTFT ms | cold TTFT ms |\n"
              "|---|---:|---:|---:|---:|")
        print("| %s | %s | %s / %s | %.0f | %.0f |" % (args.label, runs[0]["prompt_tokens"], runs[0]["warm_cached"],
              runs[0]["cold_cached"], m["warm_ms"], m["cold_ms"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
