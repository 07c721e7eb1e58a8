"""Stable job ids for config dataclasses that gain fields: a field added later is left out of the hash while it
has its default, so jobs hashed before it existed keep their ids (the dataclass analogue of a job's
``__sis_hash_exclude__``)."""
from __future__ import annotations

from typing import Any, ClassVar, Dict


class HashDefaults:
    """Mixin for config dataclasses; ``_HASH_DEFAULTS`` maps the later-added field names to their defaults."""

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {}

    def __sis_state__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        for name, default in self._HASH_DEFAULTS.items():
            if name in state and state[name] == default:
                del state[name]
        return state
