"""JSON or TOML config files onto nested dataclasses, for the trainer and the data builder.

Unknown keys are refused by name (a typo must not silently run with a default); a nested
dataclass field takes a table; the `merged` fields of a class are dicts merged over their default.
"""
import dataclasses
import json
import os
import tomllib


class ConfigError(ValueError):
    pass


def need(ok, message):
    """A config check: ConfigError(message) unless ok."""
    if not ok:
        raise ConfigError(message)


def resolve(base_dir, value):
    """A path from a config file: absolute as given, relative to the file's folder otherwise."""
    return value if not value or os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))


def build(cls, values, where=""):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a table/object, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where or 'the config'}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        field = fields[name]
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = build(type(default), value, f"[{name}]")
        elif name in getattr(cls, "merged", ()):
            kwargs[name] = {**default, **value}
        else:
            kwargs[name] = tuple(value) if isinstance(default, tuple) else value
    return cls(**kwargs)


def read_config_file(path):
    """The file's values as a dict (.toml, else JSON)."""
    with open(path, "rb") as f:
        try:
            return tomllib.load(f) if str(path).endswith(".toml") else json.load(f)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None


def checked_config(cls, values, base_dir="."):
    """A `cls` built from `values`, its relative paths taken from `base_dir`, checked."""
    config = build(cls, values)
    config.base_dir = base_dir
    return config.check()


def load_checked_config(cls, path):
    """checked_config from a file, relative paths taken from the file's folder; errors name the file."""
    try:
        return checked_config(cls, read_config_file(path), os.path.dirname(os.path.abspath(path)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
