"""The pure core: estimates, matrix, recommendation, recipes, events.

Imports neither textual nor torch (nor transformers, peft, pynvml): a test checks it in a
subprocess. Everything here is plain data in, plain data out.
"""
