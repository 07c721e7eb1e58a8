"""Jobs: the nodes of an experiment graph, identified by a hash of their class and inputs."""
from __future__ import annotations

import copy
import gzip
import inspect
import logging
import os
import pickle
import shutil
import string
import subprocess
import tarfile
import threading
from typing import Any, Dict, Iterator, List, Optional, Set

import sisyphus.global_settings as gs
from sisyphus import block, tools
from sisyphus.job_path import AbstractPath, Path, Variable
from sisyphus.safe_names import check_relative_name
from sisyphus.task import Task

# Every job built in this process, by id: equal jobs from different configs are one object.
created_jobs: Dict[str, "Job"] = {}
_creation_lock = threading.RLock()


def get_args(init, args, kwargs) -> dict:
    """The constructor's arguments bound by name, defaults included (what the hash covers)."""
    parsed = inspect.getcallargs(init, None, *args, **kwargs)
    self_name = inspect.getfullargspec(init).args[0]
    del parsed[self_name]
    return parsed


def job_id_for(cls: type, parsed_args: dict) -> str:
    """``<module path>/<ClassName>.<hash>`` with a leading ``recipe.`` stripped from the module."""
    h = cls._sis_hash_static(parsed_args)
    module = cls.__module__
    prefix = gs.RECIPE_PREFIX + "."
    if module.startswith(prefix):
        module = module[len(prefix):]
    return "%s.%s" % (os.path.join(module.replace(".", os.path.sep), cls.__name__), h)


class JobSingleton(type):
    """Metaclass: constructing a job with equal arguments returns the existing object."""

    def __call__(cls, *args, **kwargs):
        tags = kwargs.pop("sis_tags", None)
        try:
            parsed_args = get_args(cls.__init__, args, kwargs)
        except TypeError as exc:
            raise TypeError(f"{cls.__module__}.{cls.__name__}: bad arguments {args} {kwargs}: {exc}") from exc
        sis_id = job_id_for(cls, parsed_args)
        with _creation_lock:
            job = created_jobs.get(sis_id)
            if job is None:
                job = cls.__new__(cls, sis_id)
                job._sis_id_cache = sis_id
                if tags is None:
                    tags = set()
                    for p in tools.extract_paths(parsed_args):
                        tags.update(p.tags)
                job._sis_tags = set(tags)
                try:
                    job._sis_init(*copy.deepcopy((args, kwargs, parsed_args)))
                except BaseException:
                    created_jobs.pop(sis_id, None)  # a failed constructor leaves no half-built job
                    raise
                created_jobs[sis_id] = job
        if block.active_blocks:
            block.add_job_to_active_blocks(job)
        return job


class Job(metaclass=JobSingleton):
    """Base class of all jobs: inputs are the constructor's arguments, outputs declared with ``output_path``.

    Subclasses implement ``tasks()`` (yielding :class:`Task`) and the methods the tasks name.
    """

    __sis_version__ = None
    __sis_hash_exclude__: Dict[str, Any] = {}
    __sis_hash_overwrite__: List[Any] = []

    def __new__(cls, *args, **kwargs):
        # Called by the metaclass with the id, and by pickle with __getnewargs__: keeps jobs singletons.
        assert len(args) == 1 and isinstance(args[0], str) and not kwargs
        sis_id = args[0]
        if sis_id in created_jobs:
            return created_jobs[sis_id]
        job = super().__new__(cls)
        job._sis_id_cache = sis_id  # set first: sets holding the job may be rebuilt before its state
        created_jobs[sis_id] = job
        return job

    def _sis_init(self, args, kwargs, parsed_args) -> None:
        self._sis_aliases: Optional[Set[str]] = None
        self._sis_alias_prefixes = {gs.ALIAS_AND_OUTPUT_SUBDIR}
        self._sis_vis_name = None
        self._sis_output_dirs: Set[AbstractPath] = set()
        self._sis_outputs: Dict[str, AbstractPath] = {}
        self._sis_keep_value = None
        self._sis_hold_job = False
        self._sis_kwargs = parsed_args
        self._sis_task_rqmt_overwrite: Dict[str, Any] = {}
        self._sis_is_finished = False
        self._sis_environment = {}
        self._sis_inputs: Set[AbstractPath] = set()
        self._sis_quiet = False
        self.__init__(*args, **kwargs)
        self._sis_inputs.update(
            p for p in tools.extract_paths([self.__dict__, args, kwargs]) if p.creator is not self
        )
        for p in self._sis_inputs:
            p.add_user(self)

    # pickling: a pickled job refers to the singleton with the same id -----------------------------------
    def __getnewargs__(self):
        return (self._sis_id(),)

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d.pop("_sis_task_cache", None)
        return d

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for p in self._sis_inputs:
            p.add_user(self)

    def __deepcopy__(self, memo):
        return self

    # identity --------------------------------------------------------------------------------------------
    @classmethod
    def hash(cls, parsed_args: dict) -> str:
        """Hash of the arguments, leaving out options at their ``__sis_hash_exclude__`` default."""
        d = {}
        for k, v in parsed_args.items():
            if k not in cls.__sis_hash_exclude__ or cls.__sis_hash_exclude__[k] != v:
                d[k] = v
        for k, org, replacement in cls.__sis_hash_overwrite__:
            if k in d and d[k] == org:
                d[k] = replacement
        if cls.__sis_version__ is None:
            return tools.sis_hash(d)
        return tools.sis_hash((d, cls.__sis_version__))

    @classmethod
    def _sis_hash_static(cls, parsed_args: dict) -> str:
        h = cls.hash(parsed_args)
        assert isinstance(h, str), "hash return value must be str"
        allowed = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-_/")
        assert all(c in allowed for c in h), f"hash contains characters outside {sorted(allowed)}: {h}"
        return h

    def _sis_id(self) -> str:
        return self._sis_id_cache

    def _sis_hash(self) -> bytes:
        return self._sis_id_cache.encode()

    def job_id(self) -> str:
        """``<module path>/<ClassName>.<hash>``."""
        return self._sis_id()

    def __eq__(self, other) -> bool:
        return isinstance(other, Job) and self._sis_id() == other._sis_id()

    def __hash__(self) -> int:
        return hash(self.__dict__.get("_sis_id_cache"))

    def __lt__(self, other) -> bool:
        return self._sis_id() < other._sis_id()

    def __str__(self) -> str:
        alias = self.get_one_alias()
        return f"Job<{os.path.join(gs.ALIAS_DIR, alias) + ' ' if alias else ''}{self._sis_path()}>"

    __repr__ = __str__

    # paths -------------------------------------------------------------------------------------------------
    def _sis_path(self, path_type: Optional[str] = None, task_id: Optional[int] = None, abspath: bool = False) -> str:
        base = os.path.join(gs.WORK_DIR, self._sis_id())
        path = base if path_type is None else (path_type if os.path.isabs(path_type) else os.path.join(base, path_type))
        if task_id is not None:
            path += ".%i" % task_id
        if abspath and not os.path.isabs(path):
            path = os.path.join(gs.BASE_DIR, path)
        return path

    def work_path(self) -> str:
        return self._sis_path(gs.JOB_WORK_DIR)

    def output_path(self, filename: str, directory: bool = False, cached: bool = False) -> Path:
        """Declares an output file (or directory, created before the job runs); the name must stay in output/."""
        check_relative_name(filename, "output file", f"{self._sis_id()}/{gs.JOB_OUTPUT}/")
        path = Path(filename, self, cached)
        key = path.path
        if key in self._sis_outputs:
            logging.warning("output %s added more than once to %s", filename, self)
            return self._sis_outputs[key]
        self._sis_outputs[key] = path
        if directory:
            self._sis_output_dirs.add(path)
        return path

    def output_var(self, filename: str, pickle: bool = False, backup: Any = None) -> Variable:
        """Declares an output holding a Python value (``var.set(x)`` in run, ``var.get()`` later).

        As upstream, ``get()`` returns ``backup`` (None by default) while the job has not written the value.
        """
        check_relative_name(filename, "output variable", f"{self._sis_id()}/{gs.JOB_OUTPUT}/")
        var = Variable(filename, self, pickle=pickle, backup=backup)
        assert var.path not in self._sis_outputs, f"output {filename} declared twice in {self}"
        self._sis_outputs[var.path] = var
        return var

    # graph -------------------------------------------------------------------------------------------------
    def add_input(self, path: AbstractPath) -> AbstractPath:
        """Adds an input found only at ``update()`` time."""
        assert isinstance(path, AbstractPath)
        self._sis_inputs.add(path)
        path.add_user(self)
        return path

    def add_alias(self, alias: str) -> "Job":
        """Links ``alias/<alias>`` to the job directory; the name must stay inside ``alias/``."""
        check_relative_name(alias, "alias", f"{gs.ALIAS_DIR}/")
        if self._sis_aliases is None:
            self._sis_aliases = set()
        self._sis_aliases.add(alias)
        return self

    def get_aliases(self) -> Optional[Set[str]]:
        return self._sis_aliases

    def get_one_alias(self) -> Optional[str]:
        if self._sis_aliases:
            return sorted(self._sis_aliases)[0]
        return None

    def set_vis_name(self, name: str) -> "Job":
        self._sis_vis_name = name
        return self

    def get_vis_name(self):
        return self._sis_vis_name

    @property
    def tags(self) -> Set[str]:
        return self._sis_tags

    def set_rqmt(self, task_name: str, rqmt: dict) -> "Job":
        """Replaces the resources of one task."""
        self._sis_task_rqmt_overwrite[task_name] = (dict(rqmt), True)
        return self

    def update_rqmt(self, task_name: str, rqmt: dict) -> "Job":
        """Updates some resources of one task."""
        self._sis_task_rqmt_overwrite[task_name] = (dict(rqmt), False)
        return self

    def set_env(self, key: str, value: str, *, verbatim: bool = True) -> None:
        """Sets an environment variable for the job's tasks (in the worker, before a task starts): ``value`` as it is,
        or with ``verbatim=False`` with ``$NAME`` / ``${NAME}`` replaced from the worker's environment (upstream's
        ``string.Template(value).substitute``)."""
        self._sis_environment[key] = (str(value), verbatim)

    def _sis_environment_values(self, environ: Dict[str, str]) -> Dict[str, str]:
        """The variables :meth:`set_env` asked for, substituted from ``environ`` where they are not verbatim; an
        unknown name raises, naming the variable."""
        out = {}
        for key, entry in self._sis_environment.items():
            value, verbatim = entry if isinstance(entry, tuple) else (str(entry), True)  # job.save of older versions
            try:
                out[key] = value if verbatim else string.Template(value).substitute(environ)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{self._sis_id()}: set_env({key!r}, {value!r}): cannot substitute {exc}") from exc
        return out

    def keep_value(self, value: Optional[int] = None) -> Optional[int]:
        if value is not None:
            assert 0 <= value < 100
            self._sis_keep_value = value
        return self._sis_keep_value

    def set_keep_value(self, value: int) -> "Job":
        self.keep_value(value)
        return self

    def hold(self) -> None:
        self._sis_hold_job = True

    def sh(self, command: str, *args, **kwargs):
        """Runs a shell command, ``{name}`` replaced by the job's attributes."""
        return tools.sh(command, *args, sis_quiet=self._sis_quiet, sis_replace=self.__dict__, **kwargs)

    def set_attrs(self, attrs: dict) -> None:
        for k, v in attrs.items():
            if k != "self" and not hasattr(self, k):
                setattr(self, k, v)

    # to override ---------------------------------------------------------------------------------------
    def tasks(self) -> Iterator[Task]:
        yield Task("run")

    def update(self) -> None:
        """Called once the inputs are available; may add inputs with ``add_input``."""

    def info(self) -> Optional[str]:
        """A short progress string shown by the manager while the job runs."""
        return None

    # state ---------------------------------------------------------------------------------------------
    def _sis_tasks(self) -> List[Task]:
        if "_sis_task_cache" not in self.__dict__:
            tasks = []
            for task in self.tasks():
                task.set_job(self)
                over = self._sis_task_rqmt_overwrite.get(task.name())
                if over is not None:
                    rqmt, replace = over
                    if replace:
                        task._rqmt = dict(rqmt)
                    else:
                        task._rqmt.update(rqmt)
                tasks.append(task)
            assert tasks, f"job has no tasks: {self}"
            self._sis_task_cache = tasks
        return self._sis_task_cache

    def _sis_setup(self) -> bool:
        return os.path.isdir(self._sis_path())

    def _sis_update_possible(self) -> bool:
        return type(self).update is not Job.update

    def _sis_all_path_available(self) -> bool:
        return all(p.available() for p in list(self._sis_inputs))

    def _sis_runnable(self) -> bool:
        """True if every input is available (running ``update()`` for late inputs)."""
        if not self._sis_update_possible():
            return self._sis_all_path_available()
        while self._sis_all_path_available():
            before = set(self._sis_inputs)
            self.update()
            if set(self._sis_inputs) == before:
                return True
        return False

    def _sis_finished(self) -> bool:
        if self._sis_is_finished:
            return True
        if job_finished(self._sis_path(abspath=True)):
            self._sis_is_finished = True
            return True
        return False

    def _sis_mark_finished_if_done(self) -> bool:
        """Writes the ``finished`` marker (atomically) once every task of every id finished."""
        if self._sis_finished():
            return True
        if not self._sis_setup():
            return False
        if all(t.finished() for t in self._sis_tasks()):
            tools.atomic_touch(self._sis_path(gs.JOB_FINISHED_MARKER, abspath=True))
            self._sis_is_finished = True
            gs.on_job_finished(self)
            return True
        return False

    def _sis_cleanable(self) -> bool:
        """True for a finished job whose directory is not yet packed (and not a link to another setup's)."""
        path = self._sis_path(abspath=True)
        return (self._sis_finished() and not os.path.islink(path)
                and not os.path.isfile(os.path.join(path, gs.JOB_FINISHED_ARCHIVE)))

    def _sis_cleanup(self) -> bool:
        """Packs a finished job's directory as upstream's cleaner does (``JOB_AUTO_CLEANUP``).

        ``work/`` is removed (kept with ``JOB_CLEANUP_KEEP_WORK``); everything except ``output/``, ``info``,
        ``work/`` and ``input/`` (logs, markers, job.save, usage files) goes into ``finished.tar.gz``, which marks
        the job as finished from then on. Returns True if it packed the directory.
        """
        if not self._sis_cleanable():
            return False
        base = self._sis_path(abspath=True)
        logging.info("clean up: %s", base)
        try:
            if not gs.JOB_CLEANUP_KEEP_WORK:
                shutil.rmtree(os.path.join(base, gs.JOB_WORK_DIR), ignore_errors=True)
            keep = {gs.JOB_OUTPUT, gs.JOB_INFO, gs.JOB_WORK_DIR}
            if getattr(gs, "JOB_CLEANUP_KEEP_INPUT", True):
                keep.add(gs.JOB_INPUT)
            files = sorted(f for f in os.listdir(base) if f not in keep)
            tmp = gs.JOB_FINISHED_ARCHIVE + ".tmp"
            subprocess.check_call(["tar", "-czf", tmp] + files, cwd=base)
            os.replace(os.path.join(base, tmp), os.path.join(base, gs.JOB_FINISHED_ARCHIVE))
            for f in files:
                p = os.path.join(base, f)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    os.remove(p)
        except (OSError, subprocess.CalledProcessError) as exc:
            logging.warning("could not clean up %s: %s", base, exc)
            return False
        return True

    def _sis_archived_file(self, name: str) -> Optional[bytes]:
        """A file of the job directory that the cleanup packed into finished.tar.gz (None if absent)."""
        archive = self._sis_path(gs.JOB_FINISHED_ARCHIVE, abspath=True)
        return read_from_archive(archive, name)

    def _sis_setup_directory(self) -> None:
        """Creates the job directory: output/, work/, input/ links, engine/, the pickled job and info."""
        base = self._sis_path(abspath=True)
        for d in (gs.JOB_WORK_DIR, gs.JOB_OUTPUT, gs.JOB_INPUT, gs.JOB_LOG_ENGINE):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        for p in self._sis_output_dirs:
            os.makedirs(p.get_path(), exist_ok=True)
        for p in self._sis_inputs:
            if p.creator is not None:
                link = os.path.join(base, gs.JOB_INPUT, p.creator._sis_id().replace("/", "_")[-255:])
                if not os.path.lexists(link):
                    os.symlink(p.creator._sis_path(abspath=True), link, target_is_directory=True)
        tmp = os.path.join(base, gs.JOB_SAVE + ".tmp")
        try:
            with gzip.open(tmp, "wb") as f:
                pickle.dump(self, f)
            os.replace(tmp, os.path.join(base, gs.JOB_SAVE))
        except OSError as exc:  # e.g. a full disk: no half-written job.save.tmp is left behind
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise tools.FileSystemError(exc.errno, tools.describe_os_error(exc, tmp), tmp) from exc
        lines = [f"JOB: {self._sis_id()}"]
        lines += [f"INPUT: {p.get_path()}" for p in sorted(self._sis_inputs, key=lambda p: p.get_path())]
        for k, v in self._sis_kwargs.items():
            try:
                lines.append(f"PARAMETER: {k}: {v}")
            except Exception as exc:  # a repr that fails must not stop the setup
                lines.append(f"PARAMETER: {k}: <{exc}>")
        lines += [f"ALIAS: {a}" for a in sorted(self._sis_aliases or ())]
        tools.atomic_touch(os.path.join(base, gs.JOB_INFO), "\n".join(lines) + "\n")

    def _sis_delete(self) -> None:
        path = self._sis_path(abspath=True)
        if os.path.islink(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        self._sis_is_finished = False
        self.__dict__.pop("_sis_task_cache", None)

    def _sis_move(self) -> str:
        """Moves the job directory aside (``<dir>.cleared.NNNN``) so the job runs again from scratch."""
        path = self._sis_path(abspath=True)
        i = 1
        while os.path.exists("%s.cleared.%04i" % (path, i)):
            i += 1
        target = "%s.cleared.%04i" % (path, i)
        os.rename(path, target)
        self._sis_is_finished = False
        return target

    def path_available(self, path: AbstractPath) -> bool:
        return self._sis_finished()


def job_finished(path: str) -> bool:
    """True if the job directory has the ``finished`` marker or the archive the cleanup leaves."""
    return os.path.isfile(os.path.join(path, gs.JOB_FINISHED_MARKER)) or os.path.isfile(
        os.path.join(path, gs.JOB_FINISHED_ARCHIVE))


def read_from_archive(archive: str, name: str) -> Optional[bytes]:
    """The bytes of member ``name`` of a job's finished.tar.gz, None if the archive or the member is missing."""
    if not os.path.isfile(archive):
        return None
    with tarfile.open(archive) as tar:
        try:
            member = tar.extractfile(name)
        except KeyError:
            return None
        return None if member is None else member.read()


def load_job(job_dir: str) -> Job:
    """Unpickles the job saved in a job directory (used by the worker); reads a packed one from its archive."""
    save = os.path.join(job_dir, gs.JOB_SAVE)
    if not os.path.isfile(save):
        data = read_from_archive(os.path.join(job_dir, gs.JOB_FINISHED_ARCHIVE), gs.JOB_SAVE)
        if data is None:
            raise FileNotFoundError(f"{job_dir}: neither {gs.JOB_SAVE} nor {gs.JOB_FINISHED_ARCHIVE} with it")
        return pickle.loads(gzip.decompress(data))
    with gzip.open(save, "rb") as f:
        return pickle.load(f)
