"""Builder configs: which ``tff.flows`` builder call made a flow, as JSON-ready data.

Every public builder is wrapped by ``builder``: the object it returns is remembered (in a
table here, keyed by object identity and held by weak reference; nothing is stored on the
object) with the builder's name and every argument of the call (defaults included, so that
a file saved today rebuilds the same map after a default changes). ``distribution`` does
the same for the ``TransformedDistribution`` it returns. ``get_config`` reads that back as a
JSON-ready dict and ``from_config`` calls the builders again, which rebuilds the same
structure with the same variable names and shapes (fresh values: load the weights into it).
``tff.keras.FlowModel`` uses this for whole-model ``.keras`` files.

A flow assembled by hand (a ``tfb.Chain`` of our layers, a builder's flow wrapped in other
bijectors, a copy) has no config: ``get_config`` raises ``ValueError`` saying what is missing.
Arguments must be JSON values after converting dtypes to their names and tuples, shapes and
numpy scalars to lists and numbers; any other argument (a callable, an array, a network) is
named in the error.
"""

import functools
import inspect
import weakref

import numpy as np
import tensorflow as tf

__all__ = ["builder", "register", "has_config", "get_config", "from_config", "remember"]

_BUILDERS = {}
_CONFIGS = {}  # id(obj) -> (weakref to obj, config dict or the reason there is none)

# Arguments added to a builder after configs were saved without them, with the value that
# rebuilds what those configs describe (not today's default, if that differs): an older
# file must not load into a different map with weights of the same shapes.
ADDED_ARGUMENTS = {
    "nice": {"mask": "half", "mask_anchor": "latent"},
    "realnvp": {"mask": "half", "log_scale_clamp": "tanh", "affine_direction": "forward",
                "mask_anchor": "latent"},
    "maf": {"log_scale_clamp": "tanh", "affine_direction": "forward"},
    "iaf": {"log_scale_clamp": "tanh", "affine_direction": "forward"},
    "nsf": {"mask": "half", "transform_kept": False, "spline_direction": "forward",
            "mask_anchor": "latent"},
}
# Added arguments a builder refuses in one of its modes (``nsf(autoregressive=True)`` takes
# no coupling masks): a call saved in that mode gets today's default for them, which is the
# map it was saved with.
_MODE_ONLY = {"nsf": ("autoregressive", ("mask", "mask_anchor"))}


class _NotSerialisable(Exception):
  pass


def _to_json(value, where):
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value)
  if isinstance(value, tf.dtypes.DType):
    return {"dtype": value.name}
  if isinstance(value, tf.TensorShape):
    return [None if d is None else int(d) for d in value.as_list()]
  if isinstance(value, (list, tuple)):
    return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, dict) and all(isinstance(k, str) for k in value):
    return {k: _to_json(v, f"{where}[{k!r}]") for k, v in value.items()}
  raise _NotSerialisable(f"{where}={type(value).__name__} is not a JSON value")


def _from_json(value):
  if isinstance(value, list):
    return [_from_json(v) for v in value]
  if isinstance(value, dict):
    if set(value) == {"dtype"}:
      return tf.as_dtype(value["dtype"])
    return {k: _from_json(v) for k, v in value.items()}
  return value


def remember(obj, config):
  """Records ``config`` (or a reason string) for ``obj`` unless it already has one."""
  key = id(obj)
  entry = _CONFIGS.get(key)
  if entry is not None and entry[0]() is obj:
    return
  _CONFIGS[key] = (weakref.ref(obj, lambda _, k=key: _CONFIGS.pop(k, None)), config)


def register(name, fn):
  """Makes ``fn`` callable by ``from_config`` as ``name`` (``builder`` does this itself)."""
  _BUILDERS[name] = fn


def has_config(obj):
  """Whether ``obj`` was made by a builder with JSON-ready arguments."""
  return isinstance(_lookup(obj), dict)


def _lookup(obj):
  entry = _CONFIGS.get(id(obj))
  return entry[1] if entry is not None and entry[0]() is obj else None


def builder(fn):
  """Decorator: remember the builder call that made each returned flow.

  A flow that an inner builder call already made keeps that (innermost) config: e.g.
  ``rbig`` returns the flow of its ``gaussianization`` call, whose fitted values are variables.
  """
  name = fn.__name__
  signature = inspect.signature(fn)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    flow = fn(*args, **kwargs)
    try:
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()  # defaults recorded too: a later default change keeps the map
      arguments = bound.arguments
      spec = {}
      for key, value in arguments.items():
        if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
          spec.update({k: _to_json(v, f"{name}({k}=...)") for k, v in value.items()})
        else:
          spec[key] = _to_json(value, f"{name}({key}=...)")
      config = {"builder": name, "kwargs": spec}
    except _NotSerialisable as e:
      config = f"the argument {e} (tff.flows.{name})"
    remember(flow, config)
    return flow

  # from_config calls the wrapper, so a rebuilt flow has a config too (and can be saved again).
  _BUILDERS[name] = wrapper
  return wrapper


def get_config(obj):
  """The JSON-ready config of a builder-made flow or of ``tff.flows.distribution`` of one.

  Raises:
    ValueError: ``obj`` was not made by a ``tff.flows`` builder (or an argument of its
      builder call is not a JSON value); the message says which.
  """
  config = _lookup(obj)
  if isinstance(config, dict):
    return config
  what = f"{type(obj).__name__} {getattr(obj, 'name', '')!r}".strip()
  if isinstance(config, str):
    raise ValueError(f"{what} has no config: {config}.")
  bijector = getattr(obj, "bijector", None)
  if bijector is not None and isinstance(_lookup(bijector), str):
    raise ValueError(f"{what} has no config: its bijector's {_lookup(bijector)}.")
  if bijector is not None and isinstance(_lookup(bijector), dict):
    raise ValueError(f"{what} has no config: its bijector was made by a tff.flows builder, "
                     "but the distribution was not made by tff.flows.distribution.")
  raise ValueError(f"{what} has no config: it was not made by a tff.flows builder (a hand-built "
                   "flow, or a builder's flow inside other bijectors or a copy).")


def with_added_arguments(name, kwargs):
  """``kwargs`` of a saved ``name(...)`` call, with the arguments added to the builder since
  filled in with the values that rebuild what was saved (``ADDED_ARGUMENTS``)."""
  kwargs = dict(kwargs)
  mode, mode_keys = _MODE_ONLY.get(name, (None, ()))
  for key, value in ADDED_ARGUMENTS.get(name, {}).items():
    if not (kwargs.get(mode) and key in mode_keys):
      kwargs.setdefault(key, value)
  return kwargs


def current_added_arguments(name):
  """Today's defaults of the arguments ``ADDED_ARGUMENTS`` lists for builder ``name``: what a
  new saved call must record explicitly so that it rebuilds today's map."""
  parameters = inspect.signature(_BUILDERS[name]).parameters
  return {key: parameters[key].default for key in ADDED_ARGUMENTS.get(name, {})}


def from_config(config):
  """Rebuilds the flow or distribution that ``get_config`` described (fresh variables)."""
  if not isinstance(config, dict) or "builder" not in config:
    raise ValueError(f"not a tff.flows config: {config!r}")
  name = config["builder"]
  if name not in _BUILDERS:
    raise ValueError(f"unknown tff.flows builder {name!r} (known: {', '.join(sorted(_BUILDERS))})")
  kwargs = with_added_arguments(name, _from_json(config["kwargs"]))
  if name == "distribution":
    kwargs["bijector"] = from_config(config["kwargs"]["bijector"])
  return _BUILDERS[name](**kwargs)
