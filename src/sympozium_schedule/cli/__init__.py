"""The command line, ``sympozium-schedule``: the outermost layer.

Contract: commands parse flags, call the runtime or the store, and print; no
scheduling logic lives here. Every command that touches the store does so in
one ``asyncio.run`` and always closes it. Every expected failure is one
``error:`` line on stderr and a non-zero exit (cli/errors.py).
"""
