"""Your own extensions (exporters, techniques, stages, models) from a module or a `.py` file.

A plugin is ordinary Python that calls the public `register_*` functions when imported.
`tfimgopt run --plugin my_exporters.py` (or `tfimgopt.load_plugin`) imports it before the
config is validated, so its names are valid in `export.modes` and everywhere else. Child
processes that run artifacts load the same plugins first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys

from tfimgopt.errors import ConfigError, received

#: The plugins loaded in this process, as given to `load_plugin` (files made absolute).
LOADED: list[str] = []


def load_plugin(spec: str) -> object:
    """Imports a plugin once: a dotted module name, or the path of a `.py` file.

    Returns:
        The module.

    Raises:
        ConfigError: when the file or module does not exist; errors raised by the plugin's
            own code propagate as they are (they are the plugin's to explain).

    Example:
        >>> import tfimgopt
        >>> tfimgopt.load_plugin("json").__name__
        'json'
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"A plugin is a module name or a .py file path. {received('plugin', spec)}")
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise ConfigError(f"Plugin file not found (give a .py file or an importable module name). "
                              f"{received('plugin', spec)}")
        name = f"tfimgopt_plugin_{os.path.splitext(os.path.basename(path))[0]}_" \
               f"{hashlib.sha256(path.encode()).hexdigest()[:8]}"
        if name not in sys.modules:
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            try:
                loader.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        if path not in LOADED:
            LOADED.append(path)
        return sys.modules[name]
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if err.name and spec.startswith(err.name):
            raise ConfigError(f"Plugin module not found: {err.name} (give an importable module name or a .py "
                              f"file path). {received('plugin', spec)}") from None
        raise
    if spec not in LOADED:
        LOADED.append(spec)
    return module
