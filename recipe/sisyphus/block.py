"""Blocks: named groups of the jobs a part of a config creates (upstream's ``tk.block``), for overviews.

A block changes no job id and nothing the manager does; it only records which jobs were created inside it.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, List, Optional, Set

from sisyphus.hash import short_hash


class Block:
    """A node of the block tree: sub-blocks and jobs, in creation order."""

    def __init__(self, name: str, parents: Optional[Set["Block"]] = None):
        self.name = name
        self.children: List[Any] = []
        self.parents: Set[Block] = set() if parents is None else parents

    def __repr__(self) -> str:
        return f"<Block {self.name}>"

    def sub_block(self, name: str) -> "Block":
        child = Block(name, {self})
        self.children.append(child)
        return child

    def add_job(self, job: Any) -> None:
        if not any(c is job for c in self.children):
            self.children.append(job)

    def add_block(self, block: "Block") -> None:
        self.children.append(block)

    def get_sub_blocks(self) -> List["Block"]:
        return [c for c in self.children if isinstance(c, Block)]

    def jobs(self) -> List[Any]:
        """The jobs created inside this block (not those of its sub-blocks)."""
        return [c for c in self.children if not isinstance(c, Block)]

    def empty(self) -> bool:
        return not self.children


active_blocks: Set[Block] = set()
all_root_blocks: List[Block] = []


def set_root_block(name: str) -> Block:
    """Makes the root block ``name`` (e.g. the config file's name) the active one, creating it once."""
    global active_blocks
    for b in all_root_blocks:
        if b.name == name:
            active_blocks = {b}
            return b
    b = Block(name)
    all_root_blocks.append(b)
    active_blocks = {b}
    return b


def add_to_active_blocks(new_block: Block) -> None:
    for b in active_blocks:
        if b not in new_block.parents:
            b.add_block(new_block)
            new_block.parents.add(b)


def add_job_to_active_blocks(job: Any) -> None:
    """Called when a config creates (or re-creates) a job."""
    for b in active_blocks:
        b.add_job(job)


def sub_block(name: str) -> Block:
    """A new block below the active ones (not entered)."""
    b = Block(name)
    add_to_active_blocks(b)
    return b


class block:
    """``with block("name"):`` groups the jobs created inside; ``@block()`` does so for every call of a function.

    :param name: block name (default for the decorator: the function's name)
    :param cache: decorator only: calls with equal arguments (by hash) return the first call's result
    """

    def __init__(self, name: Optional[str] = None, cache: bool = False):
        self.name = name
        self.cache = cache
        self._previous: Optional[Set[Block]] = None

    def __enter__(self) -> Block:
        global active_blocks
        assert self.name is not None, "block needs a name when used with 'with'"
        assert self._previous is None, f"block {self.name} entered twice"
        current = Block(self.name)
        add_to_active_blocks(current)
        self._previous = active_blocks
        active_blocks = {current}
        return current

    def __exit__(self, exc_type, exc, tb) -> None:
        global active_blocks
        active_blocks = self._previous
        self._previous = None

    def __call__(self, func: Callable) -> Callable:
        name = self.name or func.__name__
        cache = {} if self.cache else None

        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            key = short_hash((args, kwargs)) if cache is not None and inspect.isfunction(func) else None
            if key is not None and key in cache:
                return cache[key]
            with block(name):
                result = func(*args, **kwargs)
            if key is not None:
                cache[key] = result
            return result

        return wrapped
