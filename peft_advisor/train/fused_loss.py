"""The causal-LM loss without the whole vocabulary's logits (recipe `train.fused_loss`).

A model's own loss makes the logits of every token (tokens x vocabulary, in the model's dtype),
an fp32 copy, the log-softmax and their gradients: about 12 bytes per token per vocabulary entry,
2.9 GiB for 2,048 tokens of Llama 3's 128k vocabulary, often more than the weights being trained.
Here the model runs its decoder as usual but makes the logits of its last token only
(`logits_to_keep=1`, which every transformers causal LM takes), the decoder's output is caught by a
forward hook, and the loss is computed from those hidden states and the output head's weight:

- `liger`: Liger Kernel's fused linear cross-entropy (CUDA, liger-kernel installed), which never
  holds more than a block of logits and computes the gradients in the same pass;
- `chunked`: plain PyTorch, `core.techniques.loss_chunk_tokens` tokens at a time, each chunk's
  logits made, soft-capped, upcast and scored under `torch.utils.checkpoint`, so backward remakes
  them one chunk at a time instead of keeping them all.

Both give the model's own loss: labels shifted left (the last position predicts nothing),
ignore_index -100, Gemma 2's `final_logit_softcapping`, and the mean over the batch's labelled
tokens, or the sum over Trainer's `num_items_in_batch` (the labelled tokens of every micro-batch of
the optimizer step) when it passes one. Going through the outer model's forward (peft, DDP) keeps
everything those wrappers do; only the head's matmul moves out of it.
"""

from __future__ import annotations

import inspect

from peft_advisor.core.errors import ExitCode, UserError

IGNORE_INDEX = -100


def causal_lm(model):
    """The transformers causal LM inside peft's and DDP's wrappers (the module with the head)."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return inner


def check_head_not_adapted(model) -> None:
    """An adapter on the output head (or on a tied input embedding) changes what the head computes;
    the fused loss multiplies by the plain weight, so it refuses that model."""
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    embed = lm.get_input_embeddings()
    tied = embed is not None and getattr(embed, "weight", None) is getattr(head, "weight", None)
    for name, module in (("the output head", head), ("the input embedding tied to the head", embed if tied else None)):
        if module is not None and (hasattr(module, "base_layer") or hasattr(module, "lora_A")):
            raise UserError(f"train.fused_loss: cannot run with an adapter on {name}; drop it from method.targets "
                            "or set fused_loss = false", ExitCode.BAD_RECIPE)


def chunked_loss_sum(hidden, weight, bias, labels, softcap: float | None, chunk_tokens: int):
    """Sum of the token losses of `hidden` (tokens x hidden) against `labels` (tokens), shifted
    already, `chunk_tokens` at a time; each chunk's logits live only inside its checkpoint."""
    import torch
    from torch.utils.checkpoint import checkpoint

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        stop = start + chunk_tokens
        total = total + checkpoint(_chunk_loss_sum, hidden[start:stop], weight, bias, labels[start:stop], softcap,
                                   use_reentrant=False)
    return total


def _chunk_loss_sum(hidden, weight, bias, labels, softcap):
    """One chunk as the model scores it: head matmul, soft-cap in the model's dtype, fp32 CE sum."""
    import torch

    logits = torch.nn.functional.linear(hidden, weight, bias)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def shifted_labels(labels):
    """Each position's next token (-100 at the end of each row), flattened: what the model scores."""
    import torch

    return torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)


def fused_loss_from_hidden(hidden, head, labels, softcap, num_items_in_batch, impl: str):
    """The model's loss from the decoder's output `hidden` (batch x tokens x hidden) and its head."""
    from peft_advisor.core.techniques import loss_chunk_tokens

    flat = hidden.reshape(-1, hidden.shape[-1])
    targets = shifted_labels(labels).to(flat.device)
    bias = getattr(head, "bias", None)
    if impl == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        total = liger_fused_linear_cross_entropy(flat, head.weight, targets, bias=bias, ignore_index=IGNORE_INDEX,
                                                 reduction="sum", softcap=softcap)
    else:
        total = chunked_loss_sum(flat, head.weight, bias, targets, softcap, loss_chunk_tokens(head.weight.shape[0]))
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum()  # the mean over labelled tokens, as the model's "mean"
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def choose_impl(cuda: bool) -> str:
    """Liger's kernel where it can run (CUDA and liger-kernel importable), else the chunked loss."""
    from peft_advisor.core.techniques import installed

    return "liger" if cuda and installed("liger_kernel") else "chunked"


class FusedLoss:
    """Calls a model (its outermost wrapper) so that it returns {"loss": ...} computed by
    `fused_loss_from_hidden`: what Trainer.compute_loss reads, with nothing else to keep."""

    def __init__(self, model, impl: str):
        lm = causal_lm(model)
        if "logits_to_keep" not in inspect.signature(lm.forward).parameters:
            raise UserError(f"train.fused_loss: this model's forward ({type(lm).__name__}) has no logits_to_keep "
                            "argument, so its logits cannot be left out; set fused_loss = false", ExitCode.BAD_RECIPE)
        check_head_not_adapted(model)
        self.impl = impl
        self.decoder = lm.get_decoder()
        self.head = lm.get_output_embeddings()
        self.softcap = getattr(lm.config, "final_logit_softcapping", None)

    def __call__(self, model, inputs: dict) -> dict:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        num_items = inputs.pop("num_items_in_batch", None)
        caught = []
        hook = self.decoder.register_forward_hook(lambda module, args, output: caught.append(output))
        try:
            model(**inputs, logits_to_keep=1)
        finally:
            hook.remove()
        out = caught[-1]
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return {"loss": fused_loss_from_hidden(hidden, self.head, labels, self.softcap, num_items, self.impl)}
