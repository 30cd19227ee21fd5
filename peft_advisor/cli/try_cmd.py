"""`peft-advisor try RUN_DIR [PROMPT]`: the tuned model and its base answer the same prompt, side
by side, so a person sees what training changed before sharing or merging anything.

Greedy decoding (the same answer every time), the prompt put in the form the run trained on: the
recipe's prompt_template, else the tokenizer's chat template, else the plain instruction form the
trainer uses. An adapter run loads the base once and turns the adapter off for the base's answer.
Without PROMPT, prompts are read from stdin, one a line. torch is imported inside the command only.
"""

from __future__ import annotations

import json
import sys

from peft_advisor.core.errors import ExitCode, UserError

MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS_LIMIT = 8192


def register(sub) -> None:
    p = sub.add_parser("try", help="generate with the tuned model and its base side by side")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder, or a checkpoint-N folder in one")
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="what to ask (default: one prompt a line from stdin)")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, metavar="N",
                   help=f"longest answer, in tokens (default {MAX_NEW_TOKENS})")
    p.add_argument("--json", action="store_true", help="print one JSON object a prompt: prompt, tuned, base")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a recipe with model.trust_remote_code = true to run the model's own Python code")
    p.set_defaults(func=run_try)


def run_try(args) -> int:
    from peft_advisor.train.tuned import open_run

    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise UserError(f"try: --max-new-tokens must be 1 to {MAX_NEW_TOKENS_LIMIT}, got {args.max_new_tokens}",
                        ExitCode.USAGE)
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("try: PROMPT is empty", ExitCode.USAGE)
    run = open_run(args.run_dir, args.trust_remote_code)
    pair = Pair(run, args.run_dir)
    for prompt in [args.prompt] if args.prompt is not None else _stdin_prompts():
        tuned, base = pair.answer(prompt, args.max_new_tokens)
        if args.json:
            print(json.dumps({"prompt": prompt, "tuned": tuned, "base": base}, ensure_ascii=False), flush=True)
        else:
            print(side_by_side(prompt, tuned, base, pair.tuned_label, pair.base_label), flush=True)
    return int(ExitCode.OK)


def _stdin_prompts():
    if sys.stdin.isatty():
        print("peft-advisor: type a prompt and press Enter; Ctrl-D ends", file=sys.stderr)
    for line in sys.stdin:
        if line.strip():
            yield line.rstrip("\n")


def side_by_side(prompt: str, tuned: str, base: str, tuned_label: str, base_label: str) -> str:
    def block(title: str, text: str) -> str:
        return f"{title}:\n" + "\n".join(f"  {line}" for line in (text.splitlines() or [""]))

    return "\n\n".join([block("prompt", prompt), block(f"tuned ({tuned_label})", tuned),
                        block(f"base ({base_label})", base)]) + "\n"


class Pair:
    """The tuned model and its base, loaded once for every prompt."""

    def __init__(self, run, name: str) -> None:
        import torch

        from peft_advisor.train.tuned import base_path, load_plain, load_tokenizer, load_tuned

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = run.recipe.model.dtype if self.device == "cuda" else "float32"
        if run.recipe.model.load_in_4bit:
            print(f"peft-advisor: note: the base is loaded unquantized in {dtype}, not in 4-bit as trained",
                  file=sys.stderr)
        self.run, self.tokenizer = run, load_tokenizer(run)
        self.tuned = load_tuned(run, dtype, self.device)
        self.base = None if run.has_adapter else load_plain(base_path(run), run, dtype, self.device)
        self.tuned_label, self.base_label = f"{run.method}, {name}", run.recipe.model.id

    def answer(self, prompt: str, max_new_tokens: int) -> tuple[str, str]:
        text, special = render_prompt(self.tokenizer, self.run.recipe, prompt)
        tuned = self._generate(self.tuned, text, special, max_new_tokens)
        if self.base is not None:
            return tuned, self._generate(self.base, text, special, max_new_tokens)
        with self.tuned.disable_adapter():
            return tuned, self._generate(self.tuned, text, special, max_new_tokens)

    def _generate(self, model, text: str, special: bool, max_new_tokens: int) -> str:
        import torch

        tok = self.tokenizer
        batch = tok(text, return_tensors="pt", add_special_tokens=special).to(self.device)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def render_prompt(tokenizer, recipe, prompt: str) -> tuple[str, bool]:
    """The prompt as the run's rows were shown to the model, and whether to add special tokens
    (a chat template writes its own, as in training)."""
    from peft_advisor.train.data import PLAIN_TEMPLATE

    template = recipe.data.prompt_template
    if template:
        return template.format_map(_Blank(instruction=prompt, prompt=prompt, question=prompt)), True
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
    if recipe.data.format == "instruction":
        return PLAIN_TEMPLATE.format(instruction=prompt), True
    return prompt, True
