// Exercises a running `gemma serve` through the official npm client libraries
// (`ollama` and `openai`), with greedy sampling, and prints one JSON object.
//
// Usage: node clients.mjs BASE_URL MODEL PROMPT MAX_TOKENS
//   e.g. node clients.mjs http://127.0.0.1:11434 gemma3-tiny "Hello there" 8
//
// Output keys: ollama_chat, ollama_chat_stream, ollama_generate,
// ollama_generate_stream, ollama_models, openai_chat, openai_chat_usage,
// openai_chat_stream, openai_chat_stream_usage, openai_models.
// Exits non-zero (error on stderr) if any call throws or a check fails.

import { Ollama } from 'ollama';
import OpenAI from 'openai';

function usage() {
  console.error('usage: node clients.mjs BASE_URL MODEL PROMPT MAX_TOKENS');
  process.exit(2);
}

const argv = process.argv.slice(2);
if (argv.length !== 4) usage();
const [rawBaseUrl, model, prompt, maxTokensArg] = argv;
const baseUrl = rawBaseUrl.replace(/\/+$/, '');
const maxTokens = Number.parseInt(maxTokensArg, 10);
if (!Number.isInteger(maxTokens) || maxTokens <= 0 || String(maxTokens) !== maxTokensArg.trim()) {
  console.error(`clients.mjs: MAX_TOKENS must be a positive integer, got ${JSON.stringify(maxTokensArg)}`);
  process.exit(2);
}

const ollama = new Ollama({ host: baseUrl });
const openai = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'none', maxRetries: 0 });

const ollamaOptions = { temperature: 0, num_predict: maxTokens };
const messages = [{ role: 'user', content: prompt }];

async function step(name, fn) {
  try {
    return await fn();
  } catch (err) {
    const wrapped = new Error(`${name}: ${err?.stack ?? err}`);
    wrapped.cause = err;
    throw wrapped;
  }
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function main() {
  const out = {};

  out.ollama_chat = await step('ollama.chat', async () => {
    const res = await ollama.chat({ model, messages, stream: false, options: ollamaOptions });
    check(typeof res?.message?.content === 'string', `no message.content in ${JSON.stringify(res)}`);
    check(res.done === true, `done !== true in ${JSON.stringify(res)}`);
    return res.message.content;
  });

  out.ollama_chat_stream = await step('ollama.chat (stream)', async () => {
    const stream = await ollama.chat({ model, messages, stream: true, options: ollamaOptions });
    let text = '';
    let last;
    let parts = 0;
    for await (const part of stream) {
      parts++;
      text += part?.message?.content ?? '';
      last = part;
    }
    check(parts > 0, 'stream produced no parts');
    check(last.done === true, `last part has done !== true: ${JSON.stringify(last)}`);
    return text;
  });

  out.ollama_generate = await step('ollama.generate', async () => {
    const res = await ollama.generate({ model, prompt, stream: false, options: ollamaOptions });
    check(typeof res?.response === 'string', `no response in ${JSON.stringify(res)}`);
    check(res.done === true, `done !== true in ${JSON.stringify(res)}`);
    return res.response;
  });

  out.ollama_generate_stream = await step('ollama.generate (stream)', async () => {
    const stream = await ollama.generate({ model, prompt, stream: true, options: ollamaOptions });
    let text = '';
    let last;
    let parts = 0;
    for await (const part of stream) {
      parts++;
      text += part?.response ?? '';
      last = part;
    }
    check(parts > 0, 'stream produced no parts');
    check(last.done === true, `last part has done !== true: ${JSON.stringify(last)}`);
    return text;
  });

  out.ollama_models = await step('ollama.list', async () => {
    const res = await ollama.list();
    check(Array.isArray(res?.models), `no models array in ${JSON.stringify(res)}`);
    return res.models.map((m) => m.name);
  });

  await step('openai chat.completions.create', async () => {
    const res = await openai.chat.completions.create({
      model,
      messages,
      temperature: 0,
      max_tokens: maxTokens,
    });
    const content = res?.choices?.[0]?.message?.content;
    check(typeof content === 'string', `no choices[0].message.content in ${JSON.stringify(res)}`);
    out.openai_chat = content;
    out.openai_chat_usage = res.usage ?? null;
  });

  await step('openai chat.completions.create (stream)', async () => {
    const stream = await openai.chat.completions.create({
      model,
      messages,
      temperature: 0,
      max_tokens: maxTokens,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      for (const choice of chunk.choices ?? []) {
        if (typeof choice?.delta?.content === 'string') text += choice.delta.content;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    check(chunks > 0, 'stream produced no chunks');
    check(usage !== null, 'no usage chunk despite stream_options.include_usage');
    out.openai_chat_stream = text;
    out.openai_chat_stream_usage = usage;
  });

  out.openai_models = await step('openai models.list', async () => {
    const ids = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    return ids;
  });

  const ordered = {};
  for (const key of [
    'ollama_chat',
    'ollama_chat_stream',
    'ollama_generate',
    'ollama_generate_stream',
    'ollama_models',
    'openai_chat',
    'openai_chat_usage',
    'openai_chat_stream',
    'openai_chat_stream_usage',
    'openai_models',
  ]) {
    ordered[key] = out[key];
  }
  process.stdout.write(`${JSON.stringify(ordered)}\n`);
}

main().catch((err) => {
  console.error(`clients.mjs: ${err?.message ?? err}`);
  process.exitCode = 1;
});
