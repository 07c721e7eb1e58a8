"""Stable job ids for config dataclasses that gain fields: a field added later is left out of the hash while it
has its default, so jobs hashed before it existed keep their ids (the dataclass analogue of a job's
``__sis_hash_exclude__``)."""
from __future__ import annotations

from typing import Any, ClassVar, Dict, FrozenSet


class HashDefaults:
    """Mixin for config dataclasses; ``_HASH_DEFAULTS`` maps the later-added field names to their defaults;
    ``_HASH_RESOURCES`` names fields that are resources (threads, loader workers), never hashed."""

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {}
    _HASH_RESOURCES: ClassVar[FrozenSet[str]] = frozenset()

    def __sis_state__(self) -> Dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in self._HASH_RESOURCES}
        for name, default in self._HASH_DEFAULTS.items():
            if name in state and state[name] == default:
                del state[name]
        return state
