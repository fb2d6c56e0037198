"""One ``ModelConfig`` per network: from a recipe's ``model`` section, a dict, or keywords.

The networks take the recipe schema's ``ModelConfig`` (``config/schema.py``)
whole, and each layer reads the fields it needs there. The Python API also
takes any field as a keyword (``SDMTCNN(tasks, width_multiplier=0.25)``),
and configs written by 0.1 and 0.2 listed the fields flat: both come in
through :func:`model_config`, which knows the fields only from the
dataclass itself.
"""

import dataclasses

from keras_sdmtcnn.config.schema import ModelConfig

FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def model_config(model=None, kwargs=None):
    """``(ModelConfig, other keywords)``: ``model`` (a ModelConfig or a dict), then any
    ``ModelConfig`` field among ``kwargs``, checked."""
    kwargs = dict(kwargs or {})
    if isinstance(model, ModelConfig):
        values = dataclasses.asdict(model)
    else:
        values = dict(model or {})
    values.update({k: kwargs.pop(k) for k in list(kwargs) if k in FIELDS})
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise TypeError(f"Unknown model setting(s) {', '.join(unknown)}; ModelConfig has "
                        f"{', '.join(FIELDS)}.")
    config = ModelConfig(**values)
    config.check()
    return config, kwargs


def model_config_dict(config):
    """The config as a plain dict, for ``get_config``."""
    return dataclasses.asdict(config)
