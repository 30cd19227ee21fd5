"""The terminal UI (Textual): probe, advise, export, launch and watch a fine-tune.

A thin front end over `peft_advisor.core`, `peft_advisor.probe` and `peft_advisor.launch`: it adds
no advice logic of its own, so it and the CLI always agree. It never imports torch, transformers,
peft or datasets; the trainer runs in a child process and talks to the UI through files.
"""
