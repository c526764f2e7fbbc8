#!/usr/bin/python3
"""Renders the Gemma 4 chat template of the gemma4-tiny fixture into cases_gemma4.json, the golden data for
chat_template_test.cpp's Gemma 4 cases (with enable_thinking off and on).

How cases_gemma4.json was made (from the repository root, with Debian's python3-jinja2 3.1):
    /usr/bin/python3 tests/data/chat_template/render_gemma4.py

The template is tests/data/gemma4-tiny/chat_template.jinja (Gemma 4's turn format: `<|turn>role\\n...<turn|>\\n`,
a system turn of its own, no alternation check), rendered as transformers renders chat templates: an
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks and bos_token "<bos>".
"""
import json
import pathlib

from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "tests/data/gemma4-tiny/chat_template.jinja"


def msg(role, content):
    return {"role": role, "content": content}


CASES = [
    ("single_user", [msg("user", "Hello")], True),
    ("single_user_no_generation_prompt", [msg("user", "Hello")], False),
    ("system_and_user", [msg("system", "You are terse."), msg("user", "Why is the sky blue?")], True),
    ("multi_turn", [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Tell me a joke.")],
     True),
    ("system_is_trimmed", [msg("system", "\n  Rules:\n- be brief  \n"), msg("user", "  ok  ")], True),
    ("empty_system_is_left_out", [msg("system", ""), msg("user", "Hi")], True),
    ("contents_are_trimmed", [msg("user", "  \n\t Hello,\n\n  world  \n"), msg("assistant", "\n\nSure.\n")], False),
    ("unicode", [msg("system", "Réponds en français."), msg("user", "日本語で? 😀 naïve café")], True),
    ("roles_need_not_alternate", [msg("user", "a"), msg("user", "b")], True),
]
# (name, messages, add_generation_prompt) rendered with enable_thinking=True
THINKING_CASES = [
    ("thinking_without_system", [msg("user", "Hello")], True),
    ("thinking_with_system", [msg("system", " Be brief. "), msg("user", "Why?")], True),
    ("thinking_multi_turn", [msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Bye")], True),
]


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(TEMPLATE.read_text())
    out = []
    for thinking, cases in ((False, CASES), (True, THINKING_CASES)):
        for name, messages, add_generation_prompt in cases:
            text = template.render(messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<bos>",
                                   enable_thinking=thinking)
            out.append({"name": name, "messages": messages, "add_generation_prompt": add_generation_prompt,
                        "thinking": thinking, "expected": text})
    path = ROOT / "tests/data/chat_template/cases_gemma4.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("wrote %d cases to %s" % (len(out), path))


if __name__ == "__main__":
    main()
