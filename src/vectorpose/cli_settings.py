"""Command-line options made from configuration dataclasses, and ``--config FILE``.

Every field declared with :func:`vectorpose.settings.setting` becomes one ``click`` option whose
default is the field's default. A command decorated with :func:`config_options` receives a
``settings`` argument (:class:`Settings`) whose ``build()`` makes the dataclass from, in order of precedence,

1. the flags given on the command line,
2. the ``--config`` file: a JSON object whose ``section`` key (e.g. ``"pretrain"`` in a pretraining
   run's ``config.json``) holds settings, or which holds them at its top level (a settings file: its
   nested configurations, such as a benchmark's ``finetuning``, change today's defaults key by key),
3. the dataclass defaults.

The file's other top-level keys fill the command's parameters of the same name that the command line
leaves out (``data``, ``init``, ``modality``, ...), so a run's own ``config.json`` reruns it. Keys of
the settings that the dataclass does not have are refused, naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .errors import VectorPoseError
from .utils.files import read_json_object

# parameters a file never fills: where results go and whether earlier ones may be replaced
NEVER_FROM_FILE = frozenset({"out", "overwrite", "resume", "config_file"})
GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


@dataclasses.dataclass(frozen=True)
class SettingOption:
    """One option made from a field: ``path`` names the field through nested settings groups."""

    path: tuple[str, ...]
    param: str
    flags: tuple[str, ...]
    kind: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None


def setting_options(cls: type) -> list[SettingOption]:
    """The options of ``cls``, nested settings groups (``metadata["group"]``) included."""
    return list(_walk(cls, ()))


def _walk(cls: type, prefix: tuple[str, ...]):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("group"):
            yield from _walk(hints[f.name], prefix + (f.name,))
            continue
        if not f.metadata.get("help"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = f.metadata.get("flag") or f.name.replace("_", "-")
        flags = (flag,) if isinstance(flag, str) else tuple(flag)
        path = prefix + (f.name,)
        yield SettingOption(path, "__".join(path), tuple(f"--{n}" for n in flags), _kind(hints[f.name]), default, f.metadata["help"],
                            f.metadata.get("choices"))


def _kind(hint: Any) -> Any:
    """``int``, ``float``, ``str``, ``bool`` or ``("tuple", element, length or None)``, from a field's type (``None`` allowed)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _kind(args[0])
    if typing.get_origin(hint) is tuple:
        return ("tuple", args[0], None if Ellipsis in args else len(args))
    if hint in (int, float, str, bool):
        return hint
    raise TypeError(f"no command-line form for a setting of type {hint!r}")


def _comma_list(kind: Any, default: Any):
    _, element, length = kind

    def parse(ctx, param, value):
        if value is None or isinstance(value, tuple):
            return value
        try:
            values = tuple(element(v.strip()) for v in str(value).split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {element.__name__} values, got {value!r}") from None
        if length is not None and len(values) != length:
            raise click.BadParameter(f"expected {length} comma-separated values, got {value!r}")
        return values

    shown = ",".join(str(v) for v in default) if default is not None else None
    return parse, shown


def _click_option(option: SettingOption):
    if option.kind is bool:
        names = tuple(f"{f}/--no-{f[2:]}" for f in option.flags[:1]) + option.flags[1:]
        return click.option(*names, option.param, default=option.default, show_default=True, help=option.help)
    if isinstance(option.kind, tuple):
        callback, shown = _comma_list(option.kind, option.default)
        return click.option(*option.flags, option.param, type=str, default=shown, callback=callback, show_default=True, help=option.help)
    kind = click.Choice(option.choices) if option.choices else option.kind
    return click.option(*option.flags, option.param, type=kind, default=option.default, show_default=option.default is not None,
                        help=option.help)


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """A ``--config`` file as read."""

    path: Path
    content: dict


def _config_callback(settings_names: frozenset[str] = frozenset()):
    """Eager callback of ``--config``: read the file and let its top-level keys fill the command's parameters
    (keys named ``settings_names`` are the command's settings, read by :class:`Settings` instead)."""
    return functools.partial(_read_config_file, settings_names=settings_names)


def _read_config_file(ctx: click.Context, param: click.Parameter, value: Path | None, settings_names: frozenset[str]) -> ConfigFile | None:
    if value is None:
        return None
    content = read_json_object(value, "configuration file", VectorPoseError)
    params = {p.name: p for p in ctx.command.params if p.name not in NEVER_FROM_FILE | settings_names}
    filled = {}
    for key, entry in content.items():
        if key in params and entry is not None:
            # a list for a comma-separated option (--methods, --fractions) is written as on the command line
            many = getattr(params[key], "multiple", False) or params[key].nargs != 1
            filled[key] = ",".join(map(str, entry)) if isinstance(entry, list) and not many else entry
    ctx.default_map = {**(ctx.default_map or {}), **filled}
    return ConfigFile(Path(value), content)


CONFIG_HELP = "JSON file of settings (a run's config.json reruns the run); flags given beside it override it."


def config_file_option(command):
    """``--config FILE`` alone, for commands without a configuration dataclass: it fills their parameters."""
    return click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None, is_eager=True,
                        expose_value=False, callback=_config_callback(), help=CONFIG_HELP)(command)


def given(name: str) -> bool:
    """Whether the parameter ``name`` of the running command was given on the command line (or by environment)."""
    return click.get_current_context().get_parameter_source(name) in GIVEN


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a command decorated with :func:`config_options` receives; :meth:`build` makes the dataclass."""

    cls: type
    file: ConfigFile | None
    section: str
    given: dict[tuple[str, ...], Any]

    def build(self, **overrides: Any) -> Any:
        """The configuration: defaults, then the file, then ``overrides`` (the command's own options for
        fields without a generated option; pass only what was given), then the generated flags given."""
        config = self.cls()
        if self.file is not None:
            saved = self.section in self.file.content
            section = self.file.content.get(self.section, self.file.content)
            if not isinstance(section, dict):
                raise VectorPoseError(f"{self.file.path}: {self.section!r} must be a JSON object")
            defaults = config.to_json()
            for name in _group_names(self.cls):
                # a group the JSON leaves out (masking, for a method that masks nothing) may still be set
                defaults.setdefault(name, getattr(config, name).to_json())
            # A saved run's nested configurations are whole, and settings added since read as it ran them;
            # a settings file's change today's defaults key by key.
            deep = _group_names(self.cls) | (set() if saved else _nested_names(self.cls))
            merged = _merge(defaults, section, self.file.path, (), deep)
            for f in dataclasses.fields(self.cls):
                excluded = f.metadata.get("excludes")
                if excluded and section.get(f.name) is not None and excluded not in section:
                    merged[excluded] = None
            try:
                config = self.cls.from_json(merged)
            except (TypeError, ValueError, KeyError) as exc:
                raise VectorPoseError(f"{self.file.path}: invalid settings ({exc})") from None
        try:
            config = _replace_all(config, {**{(name,): value for name, value in overrides.items()}, **self.given})
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return config


def _group_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("group")}


def _nested_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("nested")}


def _merge(defaults: dict, values: dict, path: Path, where: tuple[str, ...], deep: set[str] | None = None) -> dict:
    """``defaults`` with ``values`` over them; a key that ``defaults`` lacks is an error.

    Settings groups (``deep``; everything below the top level) merge key by key; any other object
    (a backbone, loss weights) is taken whole.
    """
    out = dict(defaults)
    for key, value in values.items():
        if key not in defaults:
            name = ".".join(where + (key,))
            raise VectorPoseError(f"{path}: unknown setting {name!r}")
        if isinstance(value, dict) and isinstance(defaults[key], dict) and (deep is None or key in deep):
            out[key] = _merge(defaults[key], value, path, where + (key,))
        else:
            out[key] = value
    return out


def _replace_all(config: Any, changes: dict[tuple[str, ...], Any]) -> Any:
    """``config`` with the field at every path of ``changes`` set, in one ``replace`` per dataclass: checks
    that tie fields together (``--method mae``, ``--patch``, ``--mask-block``) see only the final values,
    whatever the order of the options. A field set resets a field it ``excludes``; setting both is an error."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in changes.items():
        if len(path) > 1:
            nested.setdefault(path[0], {})[path[1:]] = value
            continue
        top[path[0]] = value
        excluded = next(f.metadata.get("excludes") for f in dataclasses.fields(config) if f.name == path[0])
        if excluded and (excluded,) in changes:
            raise ValueError(f"give {path[0]} or {excluded}, not both")
        if excluded and value is not None:
            top[excluded] = None
    for name, group in nested.items():
        top[name] = _replace_all(getattr(config, name), group)
    return dataclasses.replace(config, **top) if top else config


def config_options(cls: type, section: str):
    """Add ``--config`` and an option per setting of ``cls``; the command receives ``settings`` (:class:`Settings`)."""
    options = setting_options(cls)

    def decorate(command):
        @functools.wraps(command)
        def with_settings(*args, config_file: ConfigFile | None, **kwargs):
            ctx = click.get_current_context()
            chosen = {}
            for option in options:
                value = kwargs.pop(option.param)
                if ctx.get_parameter_source(option.param) in GIVEN:
                    chosen[option.path] = value
            return command(*args, settings=Settings(cls, config_file, section, chosen), **kwargs)

        for option in reversed(options):
            with_settings = _click_option(option)(with_settings)
        return click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None, is_eager=True,
                            callback=_config_callback(frozenset(f.name for f in dataclasses.fields(cls))), help=CONFIG_HELP)(with_settings)

    return decorate
