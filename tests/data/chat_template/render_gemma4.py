#!/usr/bin/python3
"""Renders Google's published Gemma 4 chat template into cases_gemma4.json, the golden data for
chat_template_test.cpp's Gemma 4 cases (with enable_thinking off and on).

    /usr/bin/python3 tests/data/chat_template/render_gemma4.py TEMPLATE

TEMPLATE is the chat_template.jinja of a google/gemma-4-*-it repository (cases_gemma4.json was made from the copy
llama.cpp keeps for its tests, models/templates/google-gemma-4-31B-it.jinja, with Debian's python3-jinja2 3.1),
rendered as transformers renders chat templates: an ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, bos_token "<bos>". The template itself is not kept here: these renders are what the tests need.
"""
import json
import pathlib
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[3]


def msg(role, content):
    return {"role": role, "content": content}


CASES = [
    ("single_user", [msg("user", "Hello")], True),
    ("single_user_no_generation_prompt", [msg("user", "Hello")], False),
    ("system_and_user", [msg("system", "You are terse."), msg("user", "Why is the sky blue?")], True),
    ("developer_is_a_system_turn", [msg("developer", "You are terse."), msg("user", "Why?")], True),
    ("multi_turn", [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Tell me a joke.")],
     True),
    ("system_is_trimmed", [msg("system", "\n  Rules:\n- be brief  \n"), msg("user", "  ok  ")], True),
    ("empty_system_is_a_turn", [msg("system", ""), msg("user", "Hi")], True),
    ("contents_are_trimmed", [msg("user", "  \n\t Hello,\n\n  world  \n"), msg("assistant", "\n\nSure.\n")], False),
    ("unicode", [msg("system", "Réponds en français."), msg("user", "日本語で? 😀 naïve café")], True),
    ("roles_need_not_alternate", [msg("user", "a"), msg("user", "b")], True),
    ("model_thinking_is_left_out", [msg("user", "Hi"), msg("assistant", "<|channel>thought\nThey greet.<channel|>Hello!"),
                                    msg("user", "Bye")], True),
    ("model_turns_in_a_row_continue", [msg("user", "Hi"), msg("assistant", "One."), msg("assistant", "Two.")], False),
]
# (name, messages, add_generation_prompt) rendered with enable_thinking=True
THINKING_CASES = [
    ("thinking_without_system", [msg("user", "Hello")], True),
    ("thinking_with_system", [msg("system", " Be brief. "), msg("user", "Why?")], True),
    ("thinking_multi_turn", [msg("user", "Hi"), msg("assistant", "<|channel>thought\nHm.<channel|>Hello!"),
                             msg("user", "Bye")], True),
]


def main(template_path):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(pathlib.Path(template_path).read_text())
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
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
