"""Stable hashes of Python objects, byte-compatible with upstream Sisyphus.

A job's directory name is the hash of its class and constructor arguments, so these encodings must not
change: existing ``work/`` trees (also those made by upstream Sisyphus) are found again only if every
byte here stays the same.
"""
from __future__ import annotations

import enum
import hashlib
import pathlib
import types
from inspect import isclass, isfunction, ismemberdescriptor
from typing import Any, Tuple

HASH_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def md5(obj: Any) -> str:
    """Hex MD5 of ``str(obj)``."""
    return hashlib.md5(str(obj).encode()).hexdigest()


def int_hash(obj: Any) -> int:
    """The sha256 of the object's encoding as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(sis_hash_helper(obj)).digest(), byteorder="big", signed=False)


def short_hash(obj: Any, length: int = 12, chars: str = HASH_CHARS) -> str:
    """Base-62 digits of the sha256 of the encoding, least significant first (upstream's job hash)."""
    value = int_hash(obj)
    base = len(chars)
    digits = []
    for _ in range(length):
        value, rem = divmod(value, base)
        digits.append(chars[rem])
    return "".join(digits)


_BASIC = (int, float, bool, str, complex)
_SEQ = (list, tuple)
_SETS = (set, frozenset)
_DICTS = (dict,)
_ALL_BASIC: Tuple[type, ...] = _BASIC + _SEQ + _SETS + _DICTS


def _type_name(obj: Any) -> bytes:
    # Python 3.11 renamed EnumMeta to EnumType; keep the old name so hashes stay equal.
    if type(obj) is enum.EnumMeta:
        return b"EnumMeta"
    return type(obj).__qualname__.encode()


def _members(obj: Any) -> dict:
    """Instance attributes of ``obj`` (from __dict__, __slots__ and dir()), without class attributes."""
    if isinstance(obj, (types.MethodWrapperType, types.BuiltinMethodType)):
        return {"__self__": obj.__self__, "__name__": obj.__name__}
    res = {}
    if hasattr(obj, "__dict__"):
        res.update(obj.__dict__)
    if hasattr(obj, "__slots__"):
        for key in obj.__slots__:
            try:
                res[key] = getattr(obj, key)
            except AttributeError:
                pass
    class_attrs = {}
    for cls in reversed(type(obj).__mro__):
        if getattr(cls, "__dict__", None):
            class_attrs.update(cls.__dict__)
    for key in dir(obj):
        if key.startswith("__") and key not in ("__self__", "__func__"):
            continue
        if key in res:
            continue
        if key in class_attrs:
            attr = class_attrs[key]
            if hasattr(attr, "__get__") and not ismemberdescriptor(attr):
                continue  # properties, methods: not state
        try:
            value = getattr(obj, key)
        except AttributeError:
            continue
        if key in class_attrs and class_attrs[key] is value:
            continue
        res[key] = value
    return res


def get_object_state(obj: Any) -> Any:
    """The part of an object that identifies it for hashing (``__sis_state__``, ``__getstate__`` or members)."""
    if obj is None:
        return None
    if isinstance(obj, _ALL_BASIC):
        for basic in _ALL_BASIC:
            if isinstance(obj, basic):
                if type(obj) is basic:
                    return obj
                if hasattr(obj, "__getnewargs_ex__") or hasattr(obj, "__getnewargs__"):
                    break  # e.g. namedtuple: handled below like any object
                raise TypeError(f"derived type {obj!r} {type(obj)!r} not handled yet")
    if isinstance(obj, (types.MethodDescriptorType, types.WrapperDescriptorType)):
        return obj.__qualname__
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isfunction(obj) or isclass(obj):
        return obj.__module__, obj.__qualname__
    if isinstance(obj, pathlib.PurePath):
        return str(obj)

    if hasattr(obj, "__getnewargs_ex__"):
        args = obj.__getnewargs_ex__()
    elif hasattr(obj, "__getnewargs__"):
        args = obj.__getnewargs__()
    else:
        args = None

    if hasattr(obj, "__sis_state__"):
        state = obj.__sis_state__()
    elif hasattr(obj, "__getstate__") and obj.__class__.__getstate__ is not getattr(object, "__getstate__", None):
        state = obj.__getstate__()
    else:
        state = _members(obj)
        if not state and not hasattr(obj, "__dict__") and not hasattr(obj, "__slots__"):
            assert args is not None, f"Failed to get object state of: {obj!r}"
            state = None

    if isinstance(obj, enum.Enum):
        assert isinstance(state, dict)
        state.pop("_sort_order_", None)  # added in Python 3.11; dropped to keep hashes equal

    return state if args is None else (args, state)


def sis_hash_helper(obj: Any) -> bytes:
    """Encodes an object as bytes: ``(TypeName, part, part, ...)``; long encodings become their sha256."""
    parts = [_type_name(obj)]
    if isinstance(obj, bytes):
        parts.append(obj)
    elif obj is None:
        pass
    elif type(obj) in _BASIC:
        parts.append(repr(obj).encode())
    elif type(obj) in _SEQ:
        parts.extend(sis_hash_helper(x) for x in obj)
    elif type(obj) in _SETS:
        parts.extend(sorted(sis_hash_helper(x) for x in obj))
    elif isinstance(obj, _DICTS):
        parts.extend(sorted(sis_hash_helper(item) for item in obj.items()))
    elif isfunction(obj):
        assert obj.__name__ != "<lambda>", "Hashing of lambda functions is not supported"
        assert obj.__module__ != "__main__", "Hashing of functions defined in __main__ is not supported"
        parts.append(sis_hash_helper((obj.__module__, obj.__qualname__)))
    elif isclass(obj):
        assert obj.__module__ != "__main__", "Hashing of classes defined in __main__ is not supported"
        parts.append(sis_hash_helper((obj.__module__, obj.__qualname__)))
    elif hasattr(obj, "_sis_hash"):
        return obj._sis_hash()  # jobs and paths encode themselves
    else:
        parts.append(sis_hash_helper(get_object_state(obj)))

    encoded = b"(" + b", ".join(parts) + b")"
    if len(encoded) > 4096:
        return hashlib.sha256(encoded).digest()
    return encoded


def sis_hash(obj: Any) -> str:
    """The 12-character hash used in job directory names."""
    return short_hash(obj)
