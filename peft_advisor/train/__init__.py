"""The trainer: runs only in the child process started by `peft_advisor.launch`.

This is the only package that imports torch, transformers, peft, datasets and galore-torch; nothing
outside it imports it (the parent CLI and the TUI stay light and never load the training stack).
"""
