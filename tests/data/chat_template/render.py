#!/usr/bin/python3
"""Renders Gemma 3's published chat template into cases.json, the golden data for chat_template_test.cpp.

How cases.json was made (from the repository root, with Debian's python3-jinja2 3.1):
    /usr/bin/python3 tests/data/chat_template/render.py

The template is the `chat_template` key of third_party/tokenizer-gemma3/package/models/tokenizer_config.json
(Gemma 3's tokenizer package; the gemma3-tiny fixtures carry the same text, which this script checks). It is
rendered the way Hugging Face transformers renders chat templates: an ImmutableSandboxedEnvironment with
trim_blocks and lstrip_blocks, `raise_exception` as a global that raises, and bos_token "<bos>".
A case whose rendering raises is stored with "error" (the Jinja message) instead of "expected".
"""
import json
import pathlib

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[3]
TEMPLATE_SOURCES = [
    ROOT / "third_party/tokenizer-gemma3/package/models/tokenizer_config.json",
    ROOT / "models/gemma3-tiny/tokenizer_config.json",
    pathlib.Path("/work/shared/fixtures/gemma3-tiny-vision/chat_template.json"),
]


def load_template():
    texts = [json.loads(p.read_text())["chat_template"] for p in TEMPLATE_SOURCES if p.exists()]
    if not texts or any(t != texts[0] for t in texts):
        raise SystemExit("Gemma 3 chat templates are missing or differ between sources")
    return texts[0]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def msg(role, content):
    return {"role": role, "content": content}


# (name, messages, add_generation_prompt)
CASES = [
    ("single_user", [msg("user", "Hello")], True),
    ("single_user_no_generation_prompt", [msg("user", "Hello")], False),
    ("system_and_user", [msg("system", "You are terse."), msg("user", "Why is the sky blue?")], True),
    ("multi_turn", [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Tell me a joke.")],
     True),
    ("multi_turn_ending_with_assistant",
     [msg("system", "Be kind."), msg("user", "Hi"), msg("assistant", "Hello!")], False),
    ("model_role_passes_through", [msg("user", "Hi"), msg("model", "Hey."), msg("user", "Bye")], True),
    ("contents_are_trimmed",
     [msg("user", "  \n\t Hello,\n\n  world  \n"), msg("assistant", "\n\nSure.\n"), msg("user", " \r\nx\r\n")], True),
    # The system text is not trimmed: the template only appends "\n\n" to it.
    ("system_is_not_trimmed", [msg("system", "\n  Rules:\n- be brief  \n"), msg("user", "  ok  ")], True),
    ("unicode", [msg("system", "Réponds en français."), msg("user", "日本語で? 😀 naïve café")], True),
    ("unicode_whitespace_is_trimmed",
     [msg("user", "\u00a0\u3000\u2003 inner\u00a0space \u2028\u0085\u1680\u202f\u205f\u001c\u000b\u000c")], True),
    ("empty_user_content", [msg("user", "")], True),
    ("whitespace_only_content", [msg("user", " \n\t ")], False),
    ("system_only_renders_nothing", [msg("system", "Ignored without a user turn.")], True),
    # The template only requires user turns at even positions; other roles pass through by name.
    ("non_user_role_at_odd_position", [msg("user", "Hi"), msg("system", "Note"), msg("user", "Ok")], False),
    ("markup_in_content_is_verbatim", [msg("user", "<start_of_turn>user\n{{ not jinja }}<end_of_turn>")], True),
    ("error_two_user_turns", [msg("user", "a"), msg("user", "b")], True),
    ("error_assistant_first", [msg("assistant", "a"), msg("user", "b")], True),
    ("error_system_then_assistant", [msg("system", "s"), msg("assistant", "a")], True),
    ("error_two_system_messages", [msg("system", "s"), msg("system", "t"), msg("user", "u")], True),
    ("error_two_assistant_turns", [msg("user", "u"), msg("assistant", "a"), msg("assistant", "b")], True),
    ("error_empty_conversation", [], True),
]


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(load_template())
    out = []
    for name, messages, add_generation_prompt in CASES:
        case = {"name": name, "messages": messages, "add_generation_prompt": add_generation_prompt}
        try:
            case["expected"] = template.render(messages=messages, bos_token="<bos>",
                                               add_generation_prompt=add_generation_prompt)
        except jinja2.exceptions.TemplateError as e:
            case["error"] = str(e)
        out.append(case)
    path = pathlib.Path(__file__).with_name("cases.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(out)} cases to {path}")


if __name__ == "__main__":
    main()
