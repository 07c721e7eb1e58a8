"""Values computed from paths and variables only when a job runs (upstream's delayed operations)."""
from __future__ import annotations

from typing import Any, Callable


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


def _get(x: Any) -> Any:
    return x.get() if isinstance(x, DelayedBase) else x


class DelayedBase:
    """A value that is computed when ``get()`` is called; supports arithmetic and formatting lazily."""

    def __init__(self, a: Any, b: Any = None):
        self.a = a
        self.b = b

    def get(self) -> Any:
        raise NotImplementedError

    def is_set(self) -> bool:
        for x in (self.a, self.b):
            if isinstance(x, DelayedBase) and not x.is_set():
                return False
        return True

    def __add__(self, other): return DelayedAdd(self, other)
    def __radd__(self, other): return DelayedAdd(other, self)
    def __sub__(self, other): return DelayedSub(self, other)
    def __rsub__(self, other): return DelayedSub(other, self)
    def __mul__(self, other): return DelayedMul(self, other)
    def __rmul__(self, other): return DelayedMul(other, self)
    def __truediv__(self, other): return DelayedDiv(self, other)
    def __rtruediv__(self, other): return DelayedDiv(other, self)
    def __floordiv__(self, other): return DelayedFloorDiv(self, other)
    def __mod__(self, other): return DelayedMod(self, other)
    def __pow__(self, other): return DelayedPow(self, other)
    def __neg__(self): return DelayedNeg(self)
    def __getitem__(self, key): return DelayedGetItem(self, key)

    def rformat(self, string: str, *args, **kwargs) -> "DelayedFormat":
        return DelayedFormat(string, self, *args, **kwargs)

    def fformat(self, *args, **kwargs) -> "DelayedFormat":
        return DelayedFormat(self, *args, **kwargs)

    def function(self, func: Callable, *args, **kwargs) -> "DelayedFunction":
        return DelayedFunction(self, func, *args, **kwargs)


class DelayedAdd(DelayedBase):
    def get(self): return _get(self.a) + _get(self.b)


class DelayedSub(DelayedBase):
    def get(self): return _get(self.a) - _get(self.b)


class DelayedMul(DelayedBase):
    def get(self): return _get(self.a) * _get(self.b)


class DelayedDiv(DelayedBase):
    def get(self): return _get(self.a) / _get(self.b)


class DelayedFloorDiv(DelayedBase):
    def get(self): return _get(self.a) // _get(self.b)


class DelayedMod(DelayedBase):
    def get(self): return _get(self.a) % _get(self.b)


class DelayedPow(DelayedBase):
    def get(self): return _get(self.a) ** _get(self.b)


class DelayedNeg(DelayedBase):
    def __init__(self, a):
        super().__init__(a)

    def get(self): return -_get(self.a)


class DelayedGetItem(DelayedBase):
    def get(self): return _get(self.a)[_get(self.b)]


class DelayedFormat(DelayedBase):
    """``DelayedFormat("{}/x", path).get()`` formats once the arguments are known."""

    def __init__(self, string: Any, *args, **kwargs):
        super().__init__(string)
        self.args = args
        self.kwargs = kwargs

    def get(self) -> str:
        args = [instanciate_delayed(_str_or_get(x)) for x in self.args]
        kwargs = {k: instanciate_delayed(_str_or_get(v)) for k, v in self.kwargs.items()}
        return _get(self.a).format(*args, **kwargs)


class DelayedJoin(DelayedBase):
    """``sep.join`` of delayed values."""

    def __init__(self, iterable: Any, separator: str):
        super().__init__(iterable, separator)

    def get(self) -> str:
        return _get(self.b).join(str(_str_or_get(x)) for x in _get(self.a))


class DelayedFunction(DelayedBase):
    """``func(value, *args, **kwargs)`` once ``value`` is known."""

    def __init__(self, a: Any, func: Callable, *args, **kwargs):
        super().__init__(a)
        assert getattr(func, "__name__", "") != "<lambda>", "lambdas cannot be hashed"
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def get(self):
        return self.func(_get(self.a), *self.args, **self.kwargs)


class DelayedFallback(DelayedBase):
    """``a`` if it is set, else ``b``."""

    def get(self):
        if isinstance(self.a, DelayedBase) and not self.a.is_set():
            return _get(self.b)
        return _get(self.a)


def _str_or_get(x: Any) -> Any:
    from sisyphus.job_path import Path, Variable

    if isinstance(x, Variable):
        return x.get()
    if isinstance(x, Path):
        return x.get_path()
    return _get(x)
