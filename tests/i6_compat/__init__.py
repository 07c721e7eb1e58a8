"""Jobs and a config written the way i6_core writes them, to check that such recipes run on this engine.

The jobs use the idioms of i6_core's job library (not its code): ``from sisyphus import *``, ``self.sh(cmd,
True)`` to read a command's output, ``except_return_codes=(141,)`` for ``head`` in a pipe, a ``DelayedFormat``
of another job's output as an argument, ``gs.SIS_COMMAND[0]`` as the Python of the setup, ``tk.uncached_path``,
``tk.is_path``, ``tools.try_get`` and ``object_to_html``.
"""
