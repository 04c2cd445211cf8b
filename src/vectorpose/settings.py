"""One definition per setting: a configuration dataclass field that also describes its command-line option.

:func:`setting` is :func:`dataclasses.field` with the option's help text in the field's metadata (and
its flag, when the flag is not the field's name with dashes). The command line
(:mod:`vectorpose.cli_settings`) makes one option per such field, with the field's default as the
option's default, so that the library's defaults and the command line's cannot drift; fields without
help text have no option and are set through ``--config FILE`` only.
"""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


def setting(default: Any = MISSING, help: str = "", *, flag: str | None = None, choices: tuple[str, ...] | None = None,
            excludes: str | None = None, default_factory: Any = MISSING) -> Any:
    """A dataclass field with command-line metadata.

    flag: the option's name without dashes (default: the field name with ``_`` as ``-``).
    choices: the values the option accepts.
    excludes: a sibling field that is reset to ``None`` when this one is set (two ways to say one thing).
    """
    if not help:
        raise ValueError("a setting needs its help text")
    metadata = {"help": help, "flag": flag, "choices": choices, "excludes": excludes}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def settings_group(cls: type) -> Any:
    """A nested configuration whose settings are options of the enclosing command too."""
    return field(default_factory=cls, metadata={"group": True})


def nested_configuration(cls: type) -> Any:
    """A nested configuration without options of its own (a benchmark's pretraining and fine-tuning
    recipes): a settings file changes it key by key, while a saved run's copy is read whole, as made."""
    return field(default_factory=cls, metadata={"nested": True})
