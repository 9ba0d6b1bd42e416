"""Parameter-efficient fine-tuning of HBI models with PEFT (LoRA).

The default recipe adapts the attention projections of the two CLIP towers with LoRA and trains the HBI modules
(temporal transformer, token merges, per-level weight MLPs and reconstruction gates, Banzhaf prediction heads, and
any task head) fully through `modules_to_save`. The frozen Banzhaf teacher and the rest of CLIP stay frozen.

Train the result with [`~hbi_hf.training.HBITrainer`] (what the training scripts use): the adapters get their own
parameter group at `learning_rate` (or `adapter_learning_rate`), not CLIP's `learning_rate * coef_lr`, and
`evaluate()` evaluates the wrapped model (retrieval: R@K and the loss). A plain `transformers.Trainer` trains every
parameter at one learning rate and evaluates only the loss.

```python
>>> from hbi_hf import HBIForRetrieval
>>> from hbi_hf.peft_utils import apply_lora

>>> model = apply_lora(HBIForRetrieval.from_pretrained("path/to/hbi"), r=8, alpha=16, dropout=0.05)
>>> model.print_trainable_parameters()
```
"""

from collections.abc import Iterator

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers.utils import logging

from .modeling_hbi import HBIBanzhafEstimator

logger = logging.get_logger(__name__)

DEFAULT_LORA_TARGET_MODULES = (
    r".*clip\.(text_model|vision_model)\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
)
"""The CLIP towers' attention projections. The regex is anchored to the CLIP towers on purpose: the temporal
transformer's layers also have `q_proj` / `k_proj` / `v_proj` / `out_proj`, and they are trained fully instead."""

FROZEN_MODULE_TYPES: tuple[type[nn.Module], ...] = (CLIPModel, HBIBanzhafEstimator)
"""Sub-models that are never put in `modules_to_save`: the CLIP backbone (adapted through LoRA only) and the frozen
Banzhaf teacher of Eq. 8."""


def _contains_frozen(module: nn.Module) -> bool:
    return any(isinstance(m, FROZEN_MODULE_TYPES) for m in module.modules())


def hbi_modules_to_save(model: nn.Module) -> list[str]:
    """
    Names of the modules that a LoRA run trains fully: every largest sub-module outside the CLIP backbone and the
    Banzhaf teacher that has trainable parameters. Containers (`nn.ModuleList` / `nn.ModuleDict`) are replaced by
    their elements, since PEFT wraps modules that are called. For [`HBIForRetrieval`] this gives `hbi.temporal`,
    `hbi.text_merges.{0,1}`, `hbi.video_merges.{0,1}`, `hbi.levels.{0,1,2}` and `alignment.banzhaf_heads.{0,1,2}`;
    a task head added by a subclass (e.g. an answer classifier) is found the same way.
    """
    return list(_modules_to_save(model, ""))


def _modules_to_save(module: nn.Module, prefix: str) -> Iterator[str]:
    for name, child in module.named_children():
        full_name = f"{prefix}{name}"
        if isinstance(child, FROZEN_MODULE_TYPES):
            continue
        if _contains_frozen(child) or isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _modules_to_save(child, f"{full_name}.")
        elif any(p.requires_grad for p in child.parameters()):
            yield full_name
    stray = [name for name, p in module.named_parameters(recurse=False) if p.requires_grad]
    if stray and not isinstance(module, FROZEN_MODULE_TYPES):
        logger.warning(
            "Parameters %s of %s sit directly on a container module and cannot be saved with LoRA's modules_to_save; "
            "they stay frozen.",
            stray,
            prefix.rstrip(".") or type(module).__name__,
        )


def hbi_lora_config(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: str | list[str] | None = None,
    train_hbi_modules: bool = True,
) -> LoraConfig:
    """
    The default [`peft.LoraConfig`] for an HBI model.

    Args:
        model: the HBI model to adapt (its HBI modules are listed in `modules_to_save`).
        r (`int`): LoRA rank. alpha (`int`): LoRA scaling numerator (`lora_alpha`). dropout (`float`): LoRA dropout.
        target_modules: modules receiving LoRA adapters; defaults to [`DEFAULT_LORA_TARGET_MODULES`].
        train_hbi_modules (`bool`): train the HBI modules fully (`modules_to_save`); `False` trains LoRA only.
    """
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules if target_modules is not None else DEFAULT_LORA_TARGET_MODULES,
        modules_to_save=hbi_modules_to_save(model) if train_hbi_modules else None,
        bias="none",
    )


def apply_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: str | list[str] | None = None,
    train_hbi_modules: bool = True,
) -> PeftModel:
    """Wrap `model` with LoRA adapters per [`hbi_lora_config`]; the result trains with `transformers.Trainer` and
    saves only the adapters and the fully trained HBI modules (`save_pretrained`)."""
    config = hbi_lora_config(model, r, alpha, dropout, target_modules, train_hbi_modules)
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d: %d of %d parameters trainable (%.2f%%)", r, trainable, total, 100 * trainable / total)
    return peft_model


def merge_lora(peft_model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the base weights and put the trained HBI modules back in place: a plain model that
    `save_pretrained` / `push_to_hub` store as a full checkpoint (no PEFT needed to load it)."""
    return peft_model.merge_and_unload()


__all__ = [
    "DEFAULT_LORA_TARGET_MODULES",
    "apply_lora",
    "hbi_lora_config",
    "hbi_modules_to_save",
    "merge_lora",
]
