"""Values computed from paths and variables only when a job runs (upstream's delayed operations).

Class names and attribute names are part of the hash of every job that takes a delayed value as an argument,
so they follow upstream Sisyphus exactly (``DelayedFormat`` keeps ``string``, ``args``, ``kwargs``; ``x / 2``
is a ``DelayedTrueDiv``); ``tests/data/upstream_hash_vectors.json`` pins the resulting hashes.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple, Union

from sisyphus.hash import sis_hash_helper
from sisyphus.tools import try_get


def instanciate_delayed(obj: Any) -> Any:
    """Recursively replaces delayed objects (and Variables) in containers by their values."""
    if isinstance(obj, DelayedBase):
        return obj.get()
    if isinstance(obj, list):
        return [instanciate_delayed(x) for x in obj]
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(instanciate_delayed(x) for x in obj)
    if isinstance(obj, dict):
        return {k: instanciate_delayed(v) for k, v in obj.items()}
    return obj


def _is_set(value: Any) -> bool:
    return not isinstance(value, DelayedBase) or value.is_set()


class DelayedBase:
    """A value that is computed when ``get()`` is called; arithmetic, indexing and formatting stay lazy."""

    def __init__(self, a: Any, b: Any = None):
        self.a = a
        self.b = b

    def get(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement get()")

    def is_set(self) -> bool:
        """True once every delayed operand can be read."""
        return _is_set(self.a) and _is_set(self.b)

    def __add__(self, other): return DelayedAdd(self, other)
    def __radd__(self, other): return DelayedAdd(other, self)
    def __sub__(self, other): return DelayedSub(self, other)
    def __rsub__(self, other): return DelayedSub(other, self)
    def __mul__(self, other): return DelayedMul(self, other)
    def __rmul__(self, other): return DelayedMul(other, self)
    def __truediv__(self, other): return DelayedTrueDiv(self, other)
    def __rtruediv__(self, other): return DelayedTrueDiv(other, self)
    def __floordiv__(self, other): return DelayedFloorDiv(self, other)
    def __rfloordiv__(self, other): return DelayedFloorDiv(other, self)
    def __mod__(self, other): return DelayedMod(self, other)
    def __rpow__(self, other): return DelayedPow(other, self)
    def __neg__(self): return DelayedNeg(self)
    def __getitem__(self, key): return DelayedGetItem(self, key)

    def __pow__(self, other, modulo=None):
        power = DelayedPow(self, other)
        return power if modulo is None else DelayedMod(power, modulo)

    def __round__(self, ndigits: Union[None, int, "DelayedBase"] = None) -> "DelayedRound":
        return DelayedRound(self, ndigits)

    def __call__(self, *args, **kwargs) -> "DelayedFunctionV2":
        """Calls the (delayed) value with (possibly delayed) arguments once they are known."""
        return DelayedFunctionV2(self, args, kwargs)

    def format(self, *args, **kwargs) -> "DelayedFormat":
        """``self.get().format(*args, **kwargs)``, delayed."""
        return DelayedFormat(self, *args, **kwargs)

    fformat = format  # the name this engine used before; kept for existing configs

    def rformat(self, string: Any, *args, **kwargs) -> "DelayedFormat":
        """``string.format(self.get(), *args, **kwargs)``, delayed."""
        return DelayedFormat(string, self, *args, **kwargs)

    def replace(self, *args, **kwargs) -> "DelayedReplace":
        return DelayedReplace(self, *args, **kwargs)

    def function(self, func: Callable, *args, **kwargs) -> "DelayedFunction":
        """``func(self.get(), *args, **kwargs)``, delayed."""
        return DelayedFunction(self, func, *args, **kwargs)

    def fallback(self, fallback: Any) -> "DelayedFallback":
        """This value once it is set, ``fallback`` until then."""
        return DelayedFallback(self, fallback)

    def __str__(self) -> str:
        return str(self.get())

    def __repr__(self) -> str:
        # upstream prints the value; an unset value must not make repr() (logs, debuggers) raise
        try:
            return str(self.get()) if self.is_set() else f"<{type(self).__name__} not set>"
        except Exception as exc:  # noqa: BLE001 - repr is for humans only
            return f"<{type(self).__name__} {type(exc).__name__}: {exc}>"


class DelayedAdd(DelayedBase):
    def get(self): return try_get(self.a) + try_get(self.b)


class DelayedSub(DelayedBase):
    def get(self): return try_get(self.a) - try_get(self.b)


class DelayedMul(DelayedBase):
    def get(self): return try_get(self.a) * try_get(self.b)


class DelayedTrueDiv(DelayedBase):
    def get(self): return try_get(self.a) / try_get(self.b)


DelayedDiv = DelayedTrueDiv  # old name in this engine: job.save files written before still load


class DelayedFloorDiv(DelayedBase):
    def get(self): return try_get(self.a) // try_get(self.b)


class DelayedMod(DelayedBase):
    def get(self): return try_get(self.a) % try_get(self.b)


class DelayedPow(DelayedBase):
    def get(self): return try_get(self.a) ** try_get(self.b)


class DelayedRound(DelayedBase):
    def get(self): return round(try_get(self.a), try_get(self.b))


class DelayedNeg(DelayedBase):
    """``-x`` (not in upstream, which has no ``__neg__``)."""

    def __init__(self, a: Any):
        super().__init__(a)

    def get(self): return -try_get(self.a)


class DelayedGetItem(DelayedBase):
    def get(self): return try_get(self.a)[try_get(self.b)]


class Delayed(DelayedBase):
    """Wraps any value so the delayed operations apply to it; hashes exactly like the wrapped value."""

    def __init__(self, a: Any):
        super().__init__(a)

    def get(self) -> Any:
        return try_get(self.a)

    def _sis_hash(self) -> bytes:
        return sis_hash_helper(self.a)


class DelayedFunctionBase(DelayedBase):
    """A call on ``string`` (the first operand) with extra arguments, made when ``get()`` is called."""

    def __init__(self, string: Any, *args, **kwargs):
        self.string = string
        self.args = args
        self.kwargs = kwargs

    def is_set(self) -> bool:
        return all(_is_set(v) for v in (self.string, *self.args, *self.kwargs.values()))


class DelayedFunction(DelayedFunctionBase):
    """``func(string, *args, **kwargs)`` with the delayed first argument resolved."""

    def __init__(self, string: Any, func: Callable, *args, **kwargs):
        assert getattr(func, "__name__", "") != "<lambda>", "Hashing of lambda functions is not supported"
        self.func = func
        super().__init__(string, *args, **kwargs)

    def get(self) -> Any:
        return self.func(try_get(self.string), *self.args, **self.kwargs)


class DelayedFormat(DelayedFunctionBase):
    """``DelayedFormat("{}/x", path).get()`` formats once the arguments are known."""

    def get(self) -> str:
        args = [try_get(x) for x in self.args]
        kwargs = {k: try_get(v) for k, v in self.kwargs.items()}
        return try_get(self.string).format(*args, **kwargs)


class DelayedReplace(DelayedFunctionBase):
    """``string.replace(*args)`` once the string is known."""

    def get(self) -> str:
        return try_get(self.string).replace(*self.args, **self.kwargs)


class DelayedFunctionV2(DelayedBase):
    """``func(*args, **kwargs)`` where the function, the argument containers and their items may be delayed."""

    def __init__(self, func: Any, args: Union[DelayedBase, Tuple[Any, ...]],
                 kwargs: Union[DelayedBase, Dict[str, Any]]):
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def is_set(self) -> bool:
        if not (_is_set(self.func) and _is_set(self.args) and _is_set(self.kwargs)):
            return False
        args, kwargs = try_get(self.args), try_get(self.kwargs)
        return all(_is_set(v) for v in (*args, *kwargs.values()))

    def get(self) -> Any:
        func = try_get(self.func)
        args = [try_get(x) for x in try_get(self.args)]
        kwargs = {k: try_get(v) for k, v in try_get(self.kwargs).items()}
        return func(*args, **kwargs)


class DelayedFallback(DelayedBase):
    """``a`` once it is set, else ``b``."""

    def get(self) -> Any:
        if _is_set(self.a):
            return try_get(self.a)
        return try_get(self.b)


class DelayedSlice(DelayedBase):
    """``iterable[start:end:step]`` with any of them delayed."""

    def __init__(self, iterable: Any, index_start: Any = 0, index_end: Any = -1, step: Any = 1):
        self.iterable = iterable
        self.index_start = index_start
        self.index_end = index_end
        self.step = step

    def is_set(self) -> bool:
        return all(_is_set(v) for v in (self.iterable, self.index_start, self.index_end, self.step))

    def get(self) -> Any:
        return try_get(self.iterable)[try_get(self.index_start):try_get(self.index_end):try_get(self.step)]


class DelayedJoin(DelayedBase):
    """``separator.join`` of delayed values (each converted with ``str``)."""

    def __init__(self, iterable: Any, separator: str):
        self.iterable = iterable
        self.separator = separator

    def is_set(self) -> bool:
        return _is_set(self.iterable) and all(_is_set(x) for x in try_get(self.iterable))

    def get(self) -> str:
        return try_get(self.separator).join(str(try_get(x)) for x in try_get(self.iterable))

