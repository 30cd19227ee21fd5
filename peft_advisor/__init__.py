"""peft-advisor: choose, export, run and watch a fine-tune that fits your GPU.

Nothing is imported eagerly here: `peft-advisor recommend` must start in well under a second, so
torch, transformers, peft and textual are only imported by the modules that need them.
"""

__version__ = "0.1.0"
