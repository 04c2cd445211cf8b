"""State dicts that hold each tensor once, for networks that reach some tensors under several names.

nnU-Net's networks (the decoder keeps a reference to the encoder) and MONAI's ``DynUNet`` (its
``skip_layers`` nest the input block, the down- and up-sampling blocks and the bottleneck a second
time) register some modules twice, so ``state_dict()`` lists their tensors under two or more names.
safetensors refuses to store one tensor twice, so :func:`store_each_tensor_once` makes a module leave
the later names (its aliases) out of its state dict and fill them in again, from the first name,
when a state dict is loaded.
"""

from __future__ import annotations

from torch import nn


def store_each_tensor_once(module: nn.Module) -> dict[str, str]:
    """Register the hooks on ``module``; returns (and keeps as ``module.aliases``) alias -> first name,
    both relative to ``module``. Call it once the module holds all its submodules."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    module.aliases = aliases
    module.register_state_dict_post_hook(_drop_aliases)
    module.register_load_state_dict_pre_hook(_fill_aliases)
    return aliases


def _drop_aliases(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for alias in module.aliases:
        state_dict.pop(prefix + alias, None)


def _fill_aliases(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for alias, name in module.aliases.items():
        if prefix + alias not in state_dict and prefix + name in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + name]
