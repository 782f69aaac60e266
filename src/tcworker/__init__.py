"""tcworker: a Taskcluster worker in Python.

Kept import-light on purpose: ``tcworker --version`` must start in well under a second, so heavy
modules (taskcluster client, aiohttp, docker SDK, jsonschema) are imported where they are used.
"""

__version__ = "0.1.0"
