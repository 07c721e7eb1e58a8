"""Paths between jobs: a ``Path`` is a file, either an input of the setup or an output of a job."""
from __future__ import annotations

import gzip
import logging
import os
import pickle
from typing import Any, Optional

import sisyphus.global_settings as gs
from sisyphus.delayed_ops import DelayedBase
from sisyphus.hash import sis_hash_helper


class VariableNotSet(FileNotFoundError):
    """Reading a Variable whose job has not written it yet (upstream's name; also a FileNotFoundError)."""


class NoBackup:
    """Marks a Variable without a backup value (``backup=None`` is a valid backup: ``get()`` returns None)."""


class AbstractPath(DelayedBase):
    """A file made by ``creator`` (a Job), or an input file when ``creator`` is None."""

    _sis_path = True  # upstream marks path objects with this class attribute
    cacheing_enabled = False  # set in the worker: cached paths then go through gs.file_caching

    def __new__(cls, path=None, *args, **kwargs):
        obj = super().__new__(cls)
        # set before anything else: when a pickled graph with cycles is loaded, a path can be put into a
        # set (which hashes it) before its state is restored
        obj.path = path.get_path() if isinstance(path, AbstractPath) else path
        return obj

    def __getnewargs__(self):
        return (self.path,)

    def __init__(
        self,
        path: str,
        creator: Any = None,
        cached: bool = False,
        hash_overwrite: Any = None,
        tags: Optional[set] = None,
        available: Any = None,
    ):
        if isinstance(path, AbstractPath):
            path = path.get_path()
        assert isinstance(path, str), f"path must be a str, got {type(path)}: {path!r}"
        self.path = path
        self.creator = creator
        self.cached = cached
        self._hash_overwrite = None
        self.hash_overwrite = hash_overwrite
        self._tags = tags
        self._available = available
        self.users = set()

    # hashing ---------------------------------------------------------------------------------------------
    @property
    def hash_overwrite(self):
        return self._hash_overwrite

    @hash_overwrite.setter
    def hash_overwrite(self, value):
        if isinstance(value, str):
            value = (None, value)
        if value is not None:
            assert isinstance(value, tuple) and len(value) == 2, f"hash_overwrite must be str or (creator, path): {value!r}"
        self._hash_overwrite = value

    def _sis_hash(self) -> bytes:
        if self.hash_overwrite is None:
            creator, path = self.creator, self.path
        else:
            creator, path = self.hash_overwrite
        if hasattr(creator, "_sis_id"):
            creator = f"{creator._sis_id()}/{gs.JOB_OUTPUT}"
        return b"(Path, " + sis_hash_helper((creator, path)) + b")"

    # location --------------------------------------------------------------------------------------------
    def rel_path(self) -> str:
        """Path relative to the setup directory (absolute for absolute inputs)."""
        if self.creator is None:
            return self.path
        return os.path.join(self.creator._sis_path(gs.JOB_OUTPUT), self.path)

    def get_path(self) -> str:
        """Absolute path of the file."""
        p = self.rel_path()
        return p if os.path.isabs(p) else os.path.join(gs.BASE_DIR, p)

    def get_cached_path(self) -> str:
        """The path for reading inside a task: passed through the ``file_caching`` setting for ``cached`` paths."""
        if AbstractPath.cacheing_enabled and self.cached:
            return gs.file_caching(self.get_path())
        return self.get_path()

    def get(self) -> str:
        return self.get_path()

    def is_set(self) -> bool:
        return self.available()

    def __fspath__(self) -> str:
        return self.get_cached_path()

    def __str__(self) -> str:
        return self.get_cached_path()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_path()}>"

    def _key(self):
        return (self.creator._sis_id() if self.creator is not None else None, self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, AbstractPath) and type(self) is type(other) and self._key() == other._key()

    def __lt__(self, other) -> bool:
        return str(self._key()) < str(other._key())

    def __hash__(self) -> int:
        # by name only: while a pickled graph is loaded, the creator may not have its state yet
        return hash((type(self).__name__, self.path))

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["users"] = set()  # users are rebuilt when jobs are loaded
        return d

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "users" not in self.__dict__:
            self.users = set()

    def __deepcopy__(self, memo):
        return self  # paths are shared references like jobs

    # graph -----------------------------------------------------------------------------------------------
    @property
    def tags(self) -> set:
        if self._tags is None:
            return set() if self.creator is None else set(self.creator.tags or ())
        return self._tags

    def add_user(self, user: Any) -> None:
        self.users.add(user)

    def available(self, debug_info: Any = None) -> bool:
        """True once the creating job finished (or, for inputs, once the file exists)."""
        if self._available is not None:
            return self._available(self)
        if self.creator is None:
            return os.path.exists(self.get_path())
        return self.creator._sis_finished()

    def keep_value(self, value: int) -> None:
        if self.creator is not None:
            self.creator.keep_value(value)

    def size(self) -> int:
        return os.path.getsize(self.get_path())

    def estimate_text_size(self) -> int:
        return self.size()


class Path(AbstractPath):
    """A file path (upstream's ``tk.Path``)."""

    def copy(self) -> "Path":
        """A new Path with the same state (creator, path, hash_overwrite, tags)."""
        new = Path("")
        new.__setstate__(self.__getstate__())
        return new

    def copy_append(self, suffix: str) -> "Path":
        """A copy with ``suffix`` appended to the path, and to a ``hash_overwrite`` as upstream does."""
        new = self.copy()
        if self.hash_overwrite is not None:
            creator, overwrite = self.hash_overwrite
            new.hash_overwrite = (creator, overwrite + suffix)
        new.path = self.path + suffix
        return new

    def join_right(self, other: str) -> "Path":
        """A path below this one (e.g. a file inside an output directory), joined with ``/`` as upstream; a name
        that would lead out of its job's output folder is refused."""
        if self.creator is not None:
            from sisyphus.safe_names import check_relative_name

            check_relative_name(os.path.join(self.path, other), "output file",
                                f"{self.creator._sis_id()}/{gs.JOB_OUTPUT}/")
        return self.copy_append("/" + other)


class Variable(AbstractPath):
    """A job output that holds a Python value (repr'd text or pickle); not a ``Path``, as upstream."""

    def __init__(self, path: str, creator: Any = None, pickle: bool = False, backup: Any = NoBackup, **kwargs):
        super().__init__(path, creator, **kwargs)
        self.pickle = pickle
        self.backup = backup

    def get(self) -> Any:
        fname = self.get_path()
        if not os.path.isfile(fname):
            if self.backup is not NoBackup:
                return self.backup
            if getattr(gs, "RAISE_VARIABLE_NOT_SET_EXCEPTION", True):
                raise VariableNotSet(f"variable {fname} is not set yet (its job has not written it)")
            return f"<UNFINISHED VARIABLE: {fname}>"
        if self.pickle:
            with gzip.open(fname, "rb") as f:
                return pickle.load(f)
        with open(fname, encoding="utf-8") as f:
            text = f.read()
        try:
            return eval(text, {"__builtins__": {}, "inf": float("inf"), "nan": float("nan")})
        except Exception:
            return text.strip()

    def set(self, value: Any) -> None:
        """Writes the value atomically (temp file + rename)."""
        fname = self.get_path()
        tmp = fname + ".tmp"
        if self.pickle:
            with gzip.open(tmp, "wb") as f:
                pickle.dump(value, f)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(f"{value!r}\n")
        os.replace(tmp, fname)

    def is_set(self) -> bool:
        return os.path.isfile(self.get_path())

    def __str__(self) -> str:
        if self.is_set():
            return str(self.get())
        logging.debug("variable %s not set", self.get_path())
        return self.get_path()
